"""
Fixed-rate (open-loop) client: 100k msg/s held, the highest rate held per transport, CPU per message.

Three measurements with `echokit bench --rate R --json` (64-byte messages, 10 connections):

1. against the native `echo_server` over tcp at 100,000 msg/s: the target is the offered
   rate held (echoes within 3% of the rate) with a send lag p99 under 1 ms;
2. the highest rate held per transport (tcp, unix, udp against the native server; ssl
   against `echokit serve`): rates tried in increasing order until one is not held,
   "held" meaning echoes within 3% of the rate and not client-bound (send lag p99 at
   most 2 ms); what limits it is then the client's CPU (client CPU per message times
   the rate near one CPU) or the server's;
3. CPU per message of `echokit serve`, the asyncio reference server and the native
   server side by side, each at the same fixed rate (`--server-pid`: the server's user
   and system time over the measured phase, divided by the messages echoed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import (
    ASYNCIO_SERVER,
    ECHO_SERVER,
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
    render,
    run_json,
    running,
    say,
)

TARGET_RATE = 100_000
TARGET_LAG_P99_US = 1000.0
#: "Held": echoes within this fraction of the offered rate, and not client-bound.
HELD = 0.97
RATES = (10_000, 20_000, 50_000, 100_000, 200_000)
QUICK_RATES = (10_000, 50_000, 100_000)
CPU_RATE = 20_000


def _client(server: Server, kind: str, rate: float, settings: Settings) -> list[str]:
    address = server.addresses["tls" if kind == "ssl" else kind]
    if kind == "unix":
        target = f"unix:path={address}"
    else:
        host, port = address.rsplit(":", 1)
        target = f"{kind}:host={host}:port={port}"
    assert server.process is not None
    return [
        *(ECHOKIT, "bench", target, "--json", "--size", "64", "--connections", "10"),
        *("--rate", f"{rate:g}", *settings.load_flags()),
        *("--server-pid", str(server.process.pid)),
    ]


def _measure(argv: list[str], settings: Settings) -> dict[str, Any]:
    record, _ = run_json(argv, 60 + 10 * settings.load_seconds)
    if record.get("error"):
        raise BenchError(f"{command_text(argv)}: {record['error']}")
    return record


def _held(record: dict[str, Any]) -> bool:
    return bool(record["messages_per_s"] >= HELD * record["rate"] and not record["client_bound"])


def _row(label: str, record: dict[str, Any]) -> list[str]:
    lag = record["send_lag_us"] or {}
    return [
        label,
        number(record["rate"]),
        number(record["messages_per_s"]),
        number(lag.get("p50"), 1),
        number(lag.get("p99"), 1),
        number(record["latency_us"].get("p50"), 1),
        number(record["latency_us"].get("p99"), 1),
        number(record["client_cpu_us_per_msg"], 1),
        number(record["server_cpu_us_per_msg"], 1),
        "held" if _held(record) else ("client-bound" if record["client_bound"] else "behind"),
    ]


HEADERS = [
    "transport",
    "rate",
    "echoed/s",
    "lag p50 us",
    "lag p99 us",
    "p50 us",
    "p99 us",
    "client cpu us/msg",
    "server cpu us/msg",
    "",
]


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """100k msg/s against the native server, highest rate held, CPU per message."""
    say("== i) open loop: echokit bench --rate (fixed rate, 64 B, 10 connections) ==")
    certs = make_certs(workdir)
    native = Server(
        "native echo_server",
        [
            str(ECHO_SERVER),
            *("--tcp", "127.0.0.1:0", "--unix", str(workdir / "openloop-native.sock")),
            *("--udp", "127.0.0.1:0"),
        ],
        3,
        workdir,
    )
    echokit = echokit_server(
        workdir,
        certs,
        "echokit serve",
        [],
        ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"],
    )
    asyncio = Server("asyncio", [PYTHON, str(ASYNCIO_SERVER), "--tcp", "127.0.0.1:0"], 1, workdir)
    results: dict[str, Any] = {}
    with running([native, echokit, asyncio]):
        # 1. the 100k target
        argv = _client(native, "tcp", TARGET_RATE, settings)
        say(f"$ {command_text(argv)}")
        target = _measure(argv, settings)
        lag_p99 = (target["send_lag_us"] or {}).get("p99")
        met = _held(target) and lag_p99 is not None and lag_p99 < TARGET_LAG_P99_US
        say(render(HEADERS, [_row("tcp", target)]))
        say(
            f"target: {TARGET_RATE:,} msg/s held with send lag p99 under "
            f"{TARGET_LAG_P99_US / 1000:g} ms: {'met' if met else 'NOT met'}\n"
        )
        results["target"] = {"command": argv, "record": target, "met": met}

        # 2. the highest rate held per transport
        rates = QUICK_RATES if settings.rounds == 1 else RATES
        say(f"highest rate held (tried in turn: {', '.join(f'{r:,}' for r in rates)}):")
        rows, highest = [], {}
        for kind, server in (
            ("tcp", native),
            ("unix", native),
            ("udp", native),
            ("ssl", echokit),
        ):
            best = None
            for rate in rates:
                argv = _client(server, kind, rate, settings)
                if kind == "ssl":
                    argv += ["--cert-dir", str(certs)]
                record = _measure(argv, settings)
                rows.append(_row(f"{kind} ({server.name})", record))
                if not _held(record):
                    break
                best = rate
            highest[kind] = best
        say(render(HEADERS, rows))
        say(
            "highest held: "
            + ", ".join(f"{k} {number(v) if v else 'none'}" for k, v in highest.items())
            + "\n"
        )
        results["highest_held"] = highest

        # 3. CPU per message, servers side by side
        rate = CPU_RATE // 2 if settings.rounds == 1 else CPU_RATE
        say(f"CPU per message at {rate:,} msg/s over tcp (--server-pid), medians of rounds:")
        cpu: dict[str, dict[str, list[float]]] = {}
        for _ in range(max(1, min(settings.rounds, 3))):
            for server in (echokit, asyncio, native):
                record = _measure(_client(server, "tcp", rate, settings), settings)
                seen = cpu.setdefault(server.name, {"server": [], "client": [], "p50": []})
                seen["server"].append(record["server_cpu_us_per_msg"])
                seen["client"].append(record["client_cpu_us_per_msg"])
                seen["p50"].append(record["latency_us"].get("p50"))
        say(f"$ {command_text(_client(native, 'tcp', rate, settings))}")
        say(
            render(
                ["server", "server cpu us/msg", "client cpu us/msg", "p50 us"],
                [
                    [
                        name,
                        number(median(v["server"]), 1),
                        number(median(v["client"]), 1),
                        number(median(v["p50"]), 1),
                    ]
                    for name, v in cpu.items()
                ],
            )
        )
        results["cpu_per_message"] = {"rate": rate, "runs": cpu}
    say(
        "\nSend lag is how late the sender was against its schedule; the corrected latency "
        "(p50/p99) counts from the intended send time. CPU times come from /proc in 10 ms "
        "ticks. Client and server share this machine's cores with anything else running: "
        "rerun on a quiet machine for figures to quote."
    )
    report.sections["openloop"] = results
