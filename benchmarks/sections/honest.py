"""
honest numbers: is echokit bench's own client overhead small (p50 within 1.5x of native)?

The native echo server, measured in turn by the native pingpong client and by
C{echokit bench} (64-byte messages, one in flight), over tcp, unix and udp: is echokit
bench's p50 within 1.5x (L{harness.HONEST_TARGET}) of the native client's?
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import (
    ECHO_SERVER,
    ECHOKIT,
    HONEST_TARGET,
    BenchError,
    CPUWatch,
    Report,
    Server,
    Settings,
    client_string,
    command_text,
    median,
    number,
    percent,
    pin_note,
    pingpong_argv,
    pinned,
    ratio,
    render,
    rotated,
    run_json,
    running,
    say,
)


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """The native server, measured by pingpong and by echokit bench."""
    seconds = settings.honest_seconds
    say("== a) honest numbers: is echokit bench's client overhead small? ==")
    say(
        f"The native echo_server, measured in turn by the native pingpong client and by "
        f"`echokit bench`\n(64-byte messages, one in flight, {seconds:g} s each, "
        f"{settings.rounds} interleaved round(s), medians). Target: echokit p50 <= "
        f"{HONEST_TARGET}x native p50."
    )
    say(pin_note(settings))
    server = Server(
        "native echo_server",
        [
            str(ECHO_SERVER),
            "--tcp",
            "127.0.0.1:0",
            "--unix",
            str(workdir / "honest.sock"),
            "--udp",
            "127.0.0.1:0",
        ],
        3,
        workdir,
    )
    transports = ("tcp", "unix", "udp")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {"native": [], "echokit": []} for t in transports
    }
    shown: list[str] = []
    with running([server]), pinned([server], settings.pin) as cpus:
        for round_ in range(settings.rounds):
            for transport in transports:
                address = server.addresses[transport]
                native_argv = pingpong_argv(transport, address, seconds)
                bench_argv = [
                    ECHOKIT,
                    "bench",
                    client_string(transport, address),
                    "--json",
                    "--size",
                    "64",
                    "--duration",
                    f"{seconds:g}",
                    "--warmup",
                    "0",
                ]
                if round_ == 0:
                    shown += [command_text(native_argv), command_text(bench_argv)]
                runs = [("native", native_argv), ("echokit", bench_argv)]
                for client, argv in rotated(runs, round_):
                    try:
                        server.check()
                        watch = CPUWatch(server)
                        data, client_cpu = run_json(argv, 4 * seconds + 60, cpus)
                        cpu = watch.stop(client_cpu)
                    except BenchError as e:
                        report.problems.append(f"honest {transport} {client}: {e}")
                        continue
                    if client == "native":
                        sample = {
                            "p50_us": data["p50_us"],
                            "p99_us": data["p99_us"],
                            "count": data["count"],
                            "lost": data["lost"],
                            **cpu,
                        }
                    else:
                        latency = data.get("latency_us") or {}
                        if data.get("error") or "p50" not in latency:
                            report.problems.append(
                                f"honest {transport} echokit bench: {data.get('error')}"
                            )
                            continue
                        sample = {
                            "p50_us": latency["p50"],
                            "p99_us": latency["p99"],
                            "count": data["latency_samples"],
                            "lost": data["lost"],
                            **cpu,
                        }
                    raw[transport][client].append(sample)
    rows = []
    summary = []
    for transport in transports:
        native, echokit = raw[transport]["native"], raw[transport]["echokit"]
        n50 = median([s["p50_us"] for s in native])
        e50 = median([s["p50_us"] for s in echokit])
        n99 = median([s["p99_us"] for s in native])
        e99 = median([s["p99_us"] for s in echokit])
        value = e50 / n50 if (e50 is not None and n50) else None
        verdict = "-" if value is None else ("ok" if value <= HONEST_TARGET else "OVER")
        rows.append(
            [
                transport,
                number(n50, 1),
                number(e50, 1),
                ratio(e50, n50),
                verdict,
                number(n99, 1),
                number(e99, 1),
                number(median([s["count"] for s in native])),
                number(median([s["count"] for s in echokit])),
                percent(median([s["other_cpu"] for s in native + echokit])),
            ]
        )
        summary.append(
            {
                "transport": transport,
                "native_p50_us": n50,
                "echokit_p50_us": e50,
                "ratio": value,
                "native_p99_us": n99,
                "echokit_p99_us": e99,
            }
        )
    say()
    say(
        render(
            [
                "transport",
                "native p50 us",
                "echokit bench p50 us",
                "ratio",
                f"<= {HONEST_TARGET}x",
                "native p99 us",
                "echokit p99 us",
                "native msgs",
                "echokit msgs",
                "other CPU",
            ],
            rows,
        )
    )
    say("\ncommands (first round):")
    for line in shown:
        say(f"  {line}")
    report.sections["honest"] = {"raw": raw, "summary": summary}
