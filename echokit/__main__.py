"""Run echokit as C{python -m echokit}."""

from echokit.cli import entry

entry()
