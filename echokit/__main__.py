"""Run echokit as C{python -m echokit}."""

from echokit.cli import main

main()
