"""
WebSocket: echokit serve ws:/wss: against the websockets library's echo server (>= 1.00x).

Both servers in child processes on loopback; one client for both, `echokit bench
ws:host=...:port=P --json --server-pid PID` (64-byte binary messages, closed loop, 4
connections; latency with one message in flight, on the reactor: no blocking WebSocket
client here), rounds alternating between the servers; the table shows medians and
echokit's ratio to websockets measured in the same run (msg/s: higher is better; p50 and
server CPU per message: lower). Target: echokit's msg/s at least 1.00x websockets' on ws.

Then large messages at once: a fresh server of each kind, 8 clients of the websockets
library (asyncio, in this process) each sending one 16 MiB binary message (one frame) and
checking its echo, all at the same time; the server's peak RSS (VmHWM) before and after.
Both libraries hold a frame until it is whole; echokit counts frames still arriving against
--max-buffered (64 MiB), so its peak stays bounded however many clients send at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
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
#: Large messages at once: this many clients, each sending one message of this size.
LARGE_CLIENTS, LARGE_SIZE = 8, 16 << 20


def _large_messages(port: int) -> None:
    """L{LARGE_CLIENTS} websockets clients at once, each echoing one L{LARGE_SIZE} message."""
    from websockets.asyncio.client import connect

    payload = os.urandom(LARGE_SIZE)

    async def one() -> None:
        url = f"ws://127.0.0.1:{port}/"
        async with connect(url, max_size=None, compression=None) as client:
            sending = asyncio.ensure_future(client.send(payload))
            echo = await asyncio.wait_for(client.recv(), 120)
            await sending
        if echo != payload:
            raise BenchError(f"large messages: the echo from port {port} differs")

    async def together() -> None:
        await asyncio.gather(*(one() for _ in range(LARGE_CLIENTS)))

    asyncio.run(together())


def _large_section(workdir: Path, certs: Path) -> dict[str, Any]:
    """Peak RSS of a fresh echokit ws server and websockets' under large messages at once."""
    servers = [
        echokit_server(workdir, certs, "echokit ws", [], ["ws:0:interface=127.0.0.1"]),
        Server("websockets ws", [PYTHON, str(REFERENCE)], 1, workdir),
    ]
    peaks: dict[str, Any] = {}
    with running(servers) as (ours, theirs):
        for name, server, port in (
            ("echokit", ours, ours.addresses["ws"].split(":")[1]),
            ("websockets", theirs, theirs.addresses["tcp"].split(":")[1]),
        ):
            before = server.rss_kib("VmHWM") / 1024
            _large_messages(int(port))
            peaks[name] = {"start_mib": before, "peak_mib": server.rss_kib("VmHWM") / 1024}
    say(
        f"large messages at once ({LARGE_CLIENTS} websockets clients x "
        f"{LARGE_SIZE >> 20} MiB, one frame each), server peak RSS (VmHWM):"
    )
    rows = [
        [name, number(p["start_mib"], 1), number(p["peak_mib"], 1)] for name, p in peaks.items()
    ]
    say(render(["server", "at start MiB", "peak MiB"], rows))
    return peaks


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
        *settings.load_flags(),
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
    large = _large_section(workdir, certs)
    report.sections["websocket"] = {"rounds": rounds, "medians": raw, "large_messages": large}
