"""
QUIC (aioquic in Python) beside tcp, TLS and udp: msg/s and latency, one client for all.

`echokit compare tcp ssl udp quic quic-dgram --server-process --json`: echokit's servers in a
child `echokit serve`, echokit bench's client for every transport (64 B, closed loop, 4
connections; latency with one message in flight), repeated for a few rounds; the table
shows medians and each QUIC row's ratio to its plain counterpart measured in the same run
(quic to tcp, quic-dgram to udp). The native clients speak no QUIC, so this section uses
echokit's own client throughout: the ratios, not the absolute numbers, are the point.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from harness import (
    ECHOKIT,
    BenchError,
    Report,
    Settings,
    command_text,
    json_rows,
    median,
    number,
    ratio,
    render,
    say,
)

TRANSPORTS = ["tcp", "ssl", "udp", "quic", "quic-dgram"]
#: Each QUIC row's plain counterpart, for the ratio column.
COUNTERPART = {"quic": "tcp", "quic-dgram": "udp", "ssl": "tcp"}


def _one_round(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    rows = json_rows(argv, timeout, env)
    if len(rows) != len(TRANSPORTS):
        raise BenchError(f"{command_text(argv)}: {len(rows)} rows, not {len(TRANSPORTS)}")
    return {row["transport"]: row for row in rows}


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """Every transport under echokit's client, QUIC rows as ratios to tcp and udp."""
    say("== f) quic: aioquic's QUIC on echokit's reactor, beside tcp, TLS and udp ==")
    if importlib.util.find_spec("aioquic") is None:
        say("aioquic is not installed (pip install 'echokit[quic]'): section skipped")
        report.problems.append("quic: aioquic is not installed")
        return
    argv = [
        ECHOKIT,
        "compare",
        *TRANSPORTS,
        "--server-process",
        "--json",
        "--size",
        "64",
        "--connections",
        "4",
        *settings.load_flags(),
    ]
    env = dict(os.environ, ECHOKIT_CERT_DIR=str(workdir / "quic-certs"))
    rounds = max(1, min(settings.rounds, 3))
    say(f"$ {command_text(argv)}    # x{rounds} rounds, medians")
    runs = [_one_round(argv, env, 60 + 20 * settings.load_seconds) for _ in range(rounds)]

    def med(transport: str, *path: str) -> float | None:
        values = []
        for each in runs:
            value: Any = each[transport]
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return median([v for v in values if v is not None])

    rows, raw = [], {}
    for transport in TRANSPORTS:
        rate = med(transport, "messages_per_s")
        base = med(COUNTERPART[transport], "messages_per_s") if transport in COUNTERPART else None
        p50, p99 = med(transport, "latency_us", "p50"), med(transport, "latency_us", "p99")
        client_cpu = med(transport, "client_cpu_us_per_msg")
        server_cpu = med(transport, "server_cpu_us_per_msg")
        raw[transport] = {
            "messages_per_s": rate,
            "p50_us": p50,
            "p99_us": p99,
            "client_cpu_us_per_msg": client_cpu,
            "server_cpu_us_per_msg": server_cpu,
            "latency_client": runs[0][transport].get("latency_client"),
        }
        rows.append(
            [
                transport,
                number(rate),
                f"{ratio(rate, base)} of {COUNTERPART[transport]}" if base else "-",
                number(p50, 1),
                number(p99, 1),
                number(client_cpu, 1),
                number(server_cpu, 1),
            ]
        )
    headers = ["transport", "msg/s", "msg/s ratio", "p50 us", "p99 us", "cli cpu us/msg"]
    say(render([*headers, "srv cpu us/msg"], rows))
    say(
        "tcp, ssl and udp latency: echokit bench's blocking client in a worker thread; quic "
        "and quic-dgram: its Twisted client on the reactor (no blocking QUIC client exists). "
        "Client and server share this machine's cores with each other and anything else "
        "running: rerun on a quiet machine for figures to quote."
    )
    report.sections["quic"] = {"command": argv, "rounds": rounds, "medians": raw}
