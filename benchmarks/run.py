"""
echokit's benchmarks: honest latency numbers, echokit serve against asyncio, and extras.

    .venv/bin/python benchmarks/run.py [--quick]
        [--only SECTION]...
        [--rounds N] [--seconds S] [--no-pin] [--json FILE]

Run it through C{make bench}, which first compiles the native programs into
C{benchmarks/native/build/} (this script builds nothing). Each section is a module in
C{benchmarks/sections/}, listed in order in C{sections.SECTIONS} (C{--help} lists them
with the first line of each one's docstring); what they share (servers, clients, CPU
accounting, tables) is in C{benchmarks/harness.py}.

Measurements are interleaved: every round visits every server (in a rotated order) before
the next round starts, and each table shows the median over rounds. Every loop is
bounded in count and time; every server started here is stopped in a C{finally} block.
Everything talks to 127.0.0.1 or unix sockets in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from harness import (
    ECHO_SERVER,
    HERE,
    LOADGEN,
    PINGPONG,
    BenchError,
    Report,
    Settings,
    environment,
    say,
)
from sections import SECTIONS, section, summary

#: The width of the section names' column in --help.
WIDTH = max(len(name) for name in SECTIONS)


def check_built() -> None:
    missing = [p for p in (ECHO_SERVER, PINGPONG, LOADGEN) if not p.exists()]
    if missing:
        names = ", ".join(str(p.relative_to(HERE.parent)) for p in missing)
        raise SystemExit(f"run.py: not built: {names} (run `make bench`, which compiles them)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sections, in the order a full run measures them:\n"
        + "\n".join(f"  {name:<{WIDTH}} {summary(name)}" for name in SECTIONS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs, 1 round: a smoke test (~1 minute)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; the sections are listed below)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    parser.add_argument(
        "--seconds", type=float, help="seconds per throughput run (default 1.5, quick 0.5)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin: latency runs put client and server on one CPU, throughput runs "
        "the server on one CPU and the client on the others",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="save the raw numbers here")
    args = parser.parse_args(argv)
    check_built()
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds is not None:
        settings.rounds = max(1, min(args.rounds, 20))
    if args.seconds is not None:
        settings.load_seconds = max(0.1, min(args.seconds, 60.0))
    settings.pin = not args.no_pin
    chosen = [name for name in SECTIONS if not args.only or name in args.only]

    # SIGTERM ends the run like Ctrl-C: the finally blocks stop every server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    env = environment()
    report = Report(env, asdict(settings))
    say("echokit benchmarks")
    say(f"command: {env['command']}")
    say(f"date:    {env['date']}")
    say(
        f"machine: {env['nproc']} CPUs ({env['cpu']}), Linux {env['kernel']}; "
        f"Python {env['python']}, Twisted {env['twisted']}, echokit {env['echokit']}, "
        f"uvloop {env['uvloop'] or 'not installed'}"
    )
    say(
        f"caveat:  client and server share these {env['nproc']} CPUs: "
        "the client competes with the server for cores."
    )
    say()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="echokit-bench-") as tmp:
        for name in chosen:
            t0 = time.monotonic()
            try:
                section(name)(settings, report, Path(tmp))
            except BenchError as e:
                report.problems.append(f"{name}: {e}")
                say(f"{name}: failed: {e}")
            say(f"\n[{name}: {time.monotonic() - t0:.0f} s]\n")
    say(f"total: {time.monotonic() - started:.0f} s")
    if report.problems:
        say("\nproblems:")
        for problem in report.problems:
            say(f"  - {problem}")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=1, default=str) + "\n")
        say(f"\nraw numbers written to {args.json}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
