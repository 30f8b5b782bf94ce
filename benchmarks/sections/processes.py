"""
bench --processes 2 against --processes 1 on the native echo server, and echokit merge of 100 runs.

`echokit bench tcp:... --processes N --json` against the native `echo_server` (C, epoll,
so the server is not what limits): msg/s of the merged result with 1 and with 2 client
processes, rounds alternating the order, medians; the target is 2 processes moving at
least 1.3x the messages of 1 on a 2-core machine. Then `echokit merge` of 100 saved runs
(copies of one of them, each with its histogram): the command's wall-clock time, start-up
included, against a target of one second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness import (
    ECHO_SERVER,
    ECHOKIT,
    BenchError,
    Report,
    Server,
    Settings,
    command_text,
    json_rows,
    median,
    number,
    render,
    running,
    say,
)

#: What the issue asks of --processes 2 over --processes 1, and of merging 100 runs.
TARGET_RATIO = 1.3
TARGET_MERGE_SECONDS = 1.0
MERGED_RUNS = 100


def _bench(argv: list[str], timeout: float) -> dict[str, Any]:
    rows = json_rows(argv, timeout)
    if len(rows) != 1:
        raise BenchError(f"{command_text(argv)}: {len(rows)} rows, not 1")
    return rows[0]


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """--processes 1 and 2 against the native server; echokit merge of 100 saved runs."""
    say("== g) processes: bench --processes 1 and 2 (native echo_server), merge of 100 runs ==")
    server = Server("native echo_server", [str(ECHO_SERVER), "--tcp", "127.0.0.1:0"], 1, workdir)
    with running([server]):
        host, port = server.addresses["tcp"].rsplit(":", 1)
        target = f"tcp:host={host}:port={port}"
        base = [ECHOKIT, "bench", target, "--json", "--connections", "4", *settings.load_flags()]
        rounds = max(1, min(settings.rounds, 3))
        say(f"$ {command_text([*base, '--processes', 'N'])}    # N = 1, 2; x{rounds} rounds")
        rates: dict[int, list[float]] = {1: [], 2: []}
        records: dict[int, dict[str, Any]] = {}
        timeout = 60 + 10 * settings.load_seconds
        for index in range(rounds):
            for processes in (1, 2) if index % 2 == 0 else (2, 1):
                record = _bench([*base, "--processes", str(processes)], timeout)
                rates[processes].append(record["messages_per_s"])
                records[processes] = record
    one, two = median(rates[1]), median(rates[2])
    gain = two / one if one and two else None
    verdict = "-" if gain is None else ("met" if gain >= TARGET_RATIO else "NOT met")
    rows = [
        ["1", number(one), number(records[1]["latency_us"].get("p50"), 1), "-"],
        [
            "2",
            number(two),
            number(records[2]["latency_us"].get("p50"), 1),
            f"{gain:.2f}x (target {TARGET_RATIO}x: {verdict})" if gain else "-",
        ],
    ]
    say(render(["processes", "msg/s", "p50 us", "vs 1 process"], rows))

    # echokit merge of 100 saved runs of the same endpoint (the last --processes 1 run)
    saved = {"environment": {}, "results": [records[1]]}
    paths = []
    for n in range(MERGED_RUNS):
        path = workdir / f"merge-{n:03}.json"
        path.write_text(json.dumps(saved))
        paths.append(str(path))
    argv = [ECHOKIT, "merge", *paths, "--json"]
    say(f"$ echokit merge merge-000.json ... merge-{MERGED_RUNS - 1:03}.json --json")
    started = time.perf_counter()
    merged = _bench(argv, 60)
    seconds = time.perf_counter() - started
    if merged["latency_samples"] != MERGED_RUNS * records[1]["latency_samples"]:
        raise BenchError("echokit merge: the merged latency samples are not the sum")
    verdict = "met" if seconds < TARGET_MERGE_SECONDS else "NOT met"
    say(
        f"merged {MERGED_RUNS} runs in {seconds:.2f} s wall clock, interpreter start-up "
        f"included (target under {TARGET_MERGE_SECONDS:g} s: {verdict})"
    )
    say(
        "Client processes and the server share this machine's cores with each other and "
        "anything else running: rerun on a quiet machine for figures to quote."
    )
    report.sections["processes"] = {
        "command": [*base, "--processes", "N"],
        "rounds": rounds,
        "messages_per_s": {"1": rates[1], "2": rates[2]},
        "ratio": gain,
        "merge_seconds": seconds,
        "merged_runs": MERGED_RUNS,
    }
