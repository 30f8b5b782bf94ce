"""
server memory per idle TCP connection, and echokit --help start-up time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
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
    number,
    render,
    running,
    say,
)


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def settled_fds(server: Server, timeout: float = 5.0) -> int:
    """The server's open descriptors once the count has stopped changing for 0.5 s."""
    deadline = time.monotonic() + timeout
    last, since = server.open_fds(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = server.open_fds()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
    return last


def idle_rss(server: Server, connections: int) -> dict[str, Any]:
    """Server VmRSS before and after C{connections} idle TCP connections."""
    host, port = server.addresses["tcp"].rsplit(":", 1)
    address = (host, int(port))
    # Warm up: let the server take its first connections (lazy imports, first buffers).
    for _ in range(20):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"warm-up")
            sock.recv(64)
    base_fds = settled_fds(server)
    before = server.rss_kib()
    sockets: list[socket.socket] = []
    try:
        batch = 250
        while len(sockets) < connections:
            for _ in range(min(batch, connections - len(sockets))):
                sockets.append(socket.create_connection(address, timeout=10))
            expected = base_fds + len(sockets)
            if not wait_for(lambda: server.open_fds() >= expected, 20):  # noqa: B023 (called at once)
                raise BenchError(
                    f"{server.name} accepted {server.open_fds() - base_fds} of "
                    f"{len(sockets)} connections within 20 s"
                )
        time.sleep(1.0)
        server.check()
        # The last connections may still be settling: take the larger of two readings.
        first = server.rss_kib()
        time.sleep(0.5)
        after = max(first, server.rss_kib())
        # Are they still open (not closed over a limit)? One echo on the last one.
        sockets[-1].sendall(b"still there?")
        if sockets[-1].recv(64) != b"still there?":
            raise BenchError(f"{server.name}: the last idle connection did not echo")
    finally:
        for sock in sockets:
            sock.close()
    return {
        "server": server.name,
        "connections": connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / connections,
    }


def startup_times(runs: int) -> dict[str, Any]:
    """Wall-clock time of `echokit --help` and of a bare interpreter, median of runs."""

    def timed(argv: Sequence[str]) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(
                list(argv),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
            times.append(time.perf_counter() - t0)
        return times

    echokit = timed([ECHOKIT, "--help"])
    bare = timed([PYTHON, "-c", "pass"])
    # What `echokit --help` spends its imports on: echokit.cli's direct imports.
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import echokit.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    children: list[tuple[str, int]] = []
    pending: list[tuple[str, int]] = []
    total = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        cumulative, name = int(parts[1]), parts[2]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth == 1:
            pending.append((name.strip(), cumulative))
        elif depth == 0:
            if name.strip() in ("echokit.cli", "echokit"):
                children += pending
                total += cumulative
            pending = []
    children.sort(key=lambda item: -item[1])
    return {
        "echokit_help_s": echokit,
        "python_pass_s": bare,
        "echokit_help_median_ms": statistics.median(echokit) * 1000,
        "python_pass_median_ms": statistics.median(bare) * 1000,
        "import_echokit_cli_ms": total / 1000,
        "top_imports_ms": [(name, us / 1000) for name, us in children[:6]],
    }


def run(settings: Settings, report: Report, workdir: Path) -> None:
    say("== e) extras: memory per idle connection, start-up time ==")
    limit = raise_open_files_limit()
    wanted = settings.idle_connections
    connections = min(wanted, limit - 200)
    if connections < wanted:
        say(f"(open-files limit {limit}: {connections} connections instead of {wanted})")
    rows = []
    results = []
    for name, argv in (
        ("echokit serve", [ECHOKIT, "-q", "serve", "tcp:0:interface=127.0.0.1"]),
        ("asyncio", [PYTHON, str(ASYNCIO_SERVER), "--tcp", "127.0.0.1:0"]),
        ("native echo_server", [str(ECHO_SERVER), "--tcp", "127.0.0.1:0"]),
    ):
        server = Server(name, argv, 1, workdir)
        try:
            with running([server]):
                result = idle_rss(server, connections)
        except (BenchError, OSError) as e:
            report.problems.append(f"extras idle connections {name}: {e}")
            continue
        results.append(result)
        rows.append(
            [
                name,
                number(result["connections"]),
                f"{result['rss_before_kib'] / 1024:.1f}",
                f"{result['rss_after_kib'] / 1024:.1f}",
                f"{result['kib_per_connection']:.2f}",
            ]
        )
    say(
        "\nServer memory per idle TCP connection: VmRSS (from /proc) before and after opening "
        "the connections,\ndivided by their number (each server raises its own open-files "
        "limit; echokit serve with default flags)."
    )
    say(
        "\n"
        + render(
            ["server", "idle connections", "RSS before MiB", "RSS after MiB", "KiB/connection"],
            rows,
        )
    )
    by_name = {result["server"]: result for result in results}
    if "echokit serve" in by_name and "asyncio" in by_name:
        echokit, asyncio = by_name["echokit serve"], by_name["asyncio"]
        extra_mib = (echokit["rss_before_kib"] - asyncio["rss_before_kib"]) / 1024
        ratio = echokit["kib_per_connection"] / asyncio["kib_per_connection"]
        say(
            f"echokit serve against asyncio, same run: baseline RSS {extra_mib:+.1f} MiB "
            f"(issue 16's target: at most +10 MiB), per idle connection {ratio:.2f}x "
            "(target: at most 1.10x)."
        )

    times = startup_times(settings.startup_runs)
    say(f"\nStart-up: wall clock, median of {settings.startup_runs} runs (min-max in brackets).\n")
    rows = [
        [
            "echokit --help",
            f"{times['echokit_help_median_ms']:.0f}",
            f"[{min(times['echokit_help_s']) * 1000:.0f}-{max(times['echokit_help_s']) * 1000:.0f}]",
        ],
        [
            "python -c pass",
            f"{times['python_pass_median_ms']:.0f}",
            f"[{min(times['python_pass_s']) * 1000:.0f}-{max(times['python_pass_s']) * 1000:.0f}]",
        ],
    ]
    say(render(["command", "median ms", "min-max ms"], rows))
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        say(
            "(PYTHONDONTWRITEBYTECODE is set here: a module whose .pyc is missing or stale is "
            "compiled again at every start)"
        )
    say(
        f"\nimport echokit.cli: {times['import_echokit_cli_ms']:.0f} ms "
        "(python -X importtime); its heaviest direct imports:"
    )
    for name, ms in times["top_imports_ms"]:
        say(f"  {ms:6.1f} ms  {name}")
    report.sections["extras"] = {"idle_connections": results, "startup": times}
