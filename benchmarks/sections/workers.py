"""
echokit serve with one process and with --workers 2.

tcp and TLS, driven by loadgen with 20 connections: what a second process adds on this
machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness import (
    KIB,
    Report,
    Settings,
    compare_variants,
    echokit_server,
    make_certs,
    say,
)


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """echokit serve with one process and with --workers 2: tcp and TLS, the same loadgen."""
    say("== c) workers: echokit serve --workers 2 against one process ==")
    certs = make_certs(workdir)
    listeners = ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"]
    servers = [
        echokit_server(workdir, certs, "1 process", [], listeners),
        echokit_server(workdir, certs, "2 processes", ["--workers", "2"], listeners),
    ]
    note = (
        f"Not pinned. On this machine's {os.cpu_count()} CPUs the client needs a core too, so "
        "a second worker\ncan only take what the client leaves: compare the CPU columns before "
        "reading the ratio as scaling."
    )
    cases = [("tcp", 1 * KIB), ("tcp", 64 * KIB), ("tls", 1 * KIB)]
    compare_variants(
        settings,
        report,
        "workers",
        servers,
        certs,
        cases,
        settings.connections * 2,
        False,
        note,
        "ratio_to_one_process",
    )
