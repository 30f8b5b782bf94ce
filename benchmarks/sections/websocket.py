"""
WebSocket: echokit serve ws:/wss: against the websockets library's echo server (>= 1.00x).

Both servers in child processes on loopback; one client for both, `echokit bench
ws:host=...:port=P --json --server-pid PID` (64-byte binary messages, closed loop, 4
connections; latency with one message in flight, on the reactor: no blocking WebSocket
client here), rounds alternating between the servers; the table shows medians and
echokit's ratio to websockets measured in the same run (msg/s: higher is better; p50 and
server CPU per message: lower). Target: echokit's msg/s at least 1.00x websockets' on ws.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from harness import (
    ECHOKIT,
    PYTHON,
    BenchError,
    Report,
    Server,
    Settings,
    command_text,
    echokit_server,
    make_certs,
    median,
    number,
    ratio,
    render,
    run_json,
    running,
    say,
)

REFERENCE = Path(__file__).resolve().parent.parent / "servers" / "websockets_echo.py"


def _bench(string: str, server: Server, settings: Settings, certs: Path) -> dict[str, Any]:
    argv = [
        ECHOKIT,
        "bench",
        string,
        "--json",
        "--size",
        "64",
        "--connections",
        "4",
        "--duration",
        f"{settings.load_seconds:g}",
        "--warmup",
        f"{settings.load_warmup:g}",
        "--server-pid",
        str(server.pid),
    ]
    if string.startswith("wss"):
        argv += ["--cert-dir", str(certs)]
    record, _ = run_json(argv, 60 + 20 * settings.load_seconds)
    if record.get("error"):
        raise BenchError(f"{command_text(argv)}: {record['error']}")
    return record


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """echokit's ws and wss beside the websockets library's server, as ratios."""
    say("== websocket: echokit serve ws:/wss: against the websockets library's server ==")
    missing = [m for m in ("websockets",) if importlib.util.find_spec(m) is None]
    if missing:
        say(f"{', '.join(missing)} not installed (pip install 'echokit[ws]'): skipped")
        report.problems.append(f"websocket: {', '.join(missing)} not installed")
        return
    certs = make_certs(workdir / "ws")
    servers = [
        echokit_server(
            workdir,
            certs,
            "echokit ws",
            [],
            ["ws:0:interface=127.0.0.1", "wss:0:interface=127.0.0.1"],
        ),
        Server("websockets ws", [PYTHON, str(REFERENCE)], 1, workdir),
        Server(
            "websockets wss",
            [PYTHON, str(REFERENCE), "--tls", str(certs / "server.pem"), str(certs / "server.key")],
            1,
            workdir,
        ),
    ]
    rounds = max(1, min(settings.rounds, 3))
    with running(servers) as (ours, theirs, theirs_tls):
        targets = {
            ("ws", "echokit"): (
                f"ws:host=127.0.0.1:port={ours.addresses['ws'].split(':')[1]}",
                ours,
            ),
            ("ws", "websockets"): (
                f"ws:host=127.0.0.1:port={theirs.addresses['tcp'].split(':')[1]}",
                theirs,
            ),
            ("wss", "echokit"): (
                f"wss:host=localhost:port={ours.addresses['wss'].split(':')[1]}",
                ours,
            ),
            ("wss", "websockets"): (
                f"wss:host=localhost:port={theirs_tls.addresses['tls'].split(':')[1]}",
                theirs_tls,
            ),
        }
        say(
            f"$ {ECHOKIT} bench STRING --json --size 64 --connections 4 --server-pid PID    # x{rounds} rounds, medians"
        )
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in targets}
        for _ in range(rounds):
            for key, (string, server) in targets.items():
                runs[key].append(_bench(string, server, settings, certs))

    def med(key: tuple[str, str], *path: str) -> float | None:
        values = []
        for record in runs[key]:
            value: Any = record
            for name in path:
                value = value.get(name) if isinstance(value, dict) else None
            values.append(value)
        return median([v for v in values if v is not None])

    rows, raw = [], {}
    for transport in ("ws", "wss"):
        for server in ("echokit", "websockets"):
            key = (transport, server)
            reference = (transport, "websockets")
            rate, p50 = med(key, "messages_per_s"), med(key, "latency_us", "p50")
            cpu = med(key, "server_cpu_us_per_msg")
            raw[f"{transport} {server}"] = {
                "messages_per_s": rate,
                "p50_us": p50,
                "p99_us": med(key, "latency_us", "p99"),
                "server_cpu_us_per_msg": cpu,
            }
            ours = server == "echokit"
            rows.append(
                [
                    transport,
                    server,
                    number(rate),
                    ratio(rate, med(reference, "messages_per_s")) if ours else "1.00x",
                    number(p50, 1),
                    ratio(p50, med(reference, "latency_us", "p50")) if ours else "1.00x",
                    number(cpu, 1),
                    ratio(cpu, med(reference, "server_cpu_us_per_msg")) if ours else "1.00x",
                ]
            )
    say(
        render(
            ["transport", "server", "msg/s", "vs ws lib", "p50 us", "vs", "srv cpu us/msg", "vs"],
            rows,
            left=2,
        )
    )
    say(
        "One client (echokit bench's Twisted client) for both servers, on the same machine: "
        "a client-bound run shows in the client's CPU column of --json. Rerun on a quiet "
        "machine for figures to quote."
    )
    report.sections["websocket"] = {"rounds": rounds, "medians": raw}
