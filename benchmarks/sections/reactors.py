"""
echokit serve on each --reactor: lean, epoll, asyncio (and uvloop, if importable).

tcp, unix and TLS at 1 KiB under the same loadgen: the measurement behind the default
(lean).
"""

from __future__ import annotations

from pathlib import Path

from harness import (
    KIB,
    Report,
    Settings,
    compare_variants,
    echokit_server,
    make_certs,
    say,
    split_note,
    uvloop_available,
)


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """echokit serve on each --reactor it offers (uvloop if installed): the same loadgen."""
    say("== d) reactors: echokit serve --reactor lean|epoll|asyncio|uvloop ==")
    names = ["lean", "epoll", "asyncio"] + (["uvloop"] if uvloop_available() else [])
    certs = make_certs(workdir)
    servers = [
        echokit_server(
            workdir,
            certs,
            f"--reactor {name}",
            ["--reactor", name],
            [
                "tcp:0:interface=127.0.0.1",
                f"unix:{workdir / f'reactor-{name}.sock'}",
                "ssl:0:interface=127.0.0.1",
            ],
        )
        for name in names
    ]
    missing = "" if "uvloop" in names else " uvloop is not installed: no uvloop row."
    note = f"{split_note(settings)} The default is the first row (lean).{missing}"
    cases = [("tcp", 1 * KIB), ("unix", 1 * KIB), ("tls", 1 * KIB)]
    compare_variants(
        settings,
        report,
        "reactors",
        servers,
        certs,
        cases,
        settings.connections,
        settings.pin,
        note,
        "ratio_to_lean",
    )
