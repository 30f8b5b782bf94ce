"""
The sections of C{benchmarks/run.py}, one module each, run in the order of L{SECTIONS}.

A section is a module here with a docstring (its first line is what C{--help} shows) and

    def run(settings: Settings, report: Report, workdir: Path) -> None

which measures, prints its tables with L{harness.say} (the command lines first), keeps its
raw numbers in C{report.sections[NAME]}, and either records a failed measurement in
C{report.problems} and goes on, or raises L{harness.BenchError} to give up on the section.
Every server it starts is stopped however it ends (L{harness.running}); C{workdir} is a
temporary directory shared by the sections of one run. To add one: write
C{sections/NAME.py} and add C{NAME} to L{SECTIONS} (see benchmarks/README.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness import Report, Settings

#: Every section, in the order a full run measures them; C{--only NAME} picks some.
SECTIONS = (
    "honest",
    "servers",
    "costs",
    "workers",
    "reactors",
    "extras",
    "quic",
    "websocket",
    "processes",
    "reliability",
    "openloop",
    "stability",
)

Section = Callable[["Settings", "Report", Path], None]


def section(name: str) -> Section:
    """The C{run} function of section C{name}."""
    run: Section = importlib.import_module(f"sections.{name}").run
    return run


def summary(name: str) -> str:
    """The first line of section C{name}'s docstring."""
    doc = importlib.import_module(f"sections.{name}").__doc__ or ""
    return doc.strip().split("\n", 1)[0]
