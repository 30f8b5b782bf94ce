"""
server reliability: the largest echo a naive blocking client gets back, and RSS after rounds of slow clients.

Against one default `echokit serve tcp:0 unix:PATH ssl:0`:

- naive client: a blocking client sends N bytes, shuts down writing (TLS: sends N, then
  reads N) and only then reads; the largest N (searched between 1 and 64 MiB, to 1/8
  of the step) whose echo comes back whole within 3 s, per transport. The server holds
  up to --echo-buffer (4 MiB) of it; the kernel's socket buffers hold the rest.
- slow clients: three rounds of 100 TLS and 100 unix clients that push without reading
  for 1 s, then reset; the server's RSS before, at each round's end, and once the
  round's connections are closed.

Robustness figures, not speed: they change with the kernel's buffer sizes, not with load.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from harness import Report, Server, Settings, echokit_server, make_certs, render, running, say

MIB = 1 << 20
ROUNDS = 3
SLOW_CLIENTS = 100


def _connect(server: Server, kind: str, context: ssl.SSLContext, timeout: float) -> Any:
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(server.addresses["unix"])
        return sock
    host, port = server.addresses["tls" if kind == "ssl" else "tcp"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    if kind == "ssl":
        return context.wrap_socket(sock, server_hostname="localhost")
    return sock


def naive_echo(server: Server, kind: str, size: int, context: ssl.SSLContext) -> bool:
    """One naive client of C{size} bytes: whether its whole echo came back within 3 s."""
    payload = os.urandom(size)
    got = bytearray()
    try:
        with _connect(server, kind, context, 3.0) as sock:
            sock.sendall(payload)
            if kind != "ssl":
                sock.shutdown(socket.SHUT_WR)
            while len(got) < size:
                chunk = sock.recv(1 << 18)
                if not chunk:
                    break
                got += chunk
    except OSError:
        return False
    return bytes(got) == payload


def largest_naive_echo(server: Server, kind: str, context: ssl.SSLContext) -> int:
    """The largest size (bytes) a naive client gets back whole, searched in 1-64 MiB."""
    good, bad = 0, 64 * MIB
    if naive_echo(server, kind, bad, context):
        return bad
    for _ in range(10):
        size = (good + bad) // 2 if good else max(MIB, bad // 64)
        if naive_echo(server, kind, size, context):
            good = size
        else:
            bad = size
        if bad - good <= max(512 << 10, good // 8):
            break
    return good


def slow_rounds(server: Server, context: ssl.SSLContext) -> dict[str, Any]:
    """RSS (KiB) before, at each round's end, and after each round's connections closed."""
    before = server.rss_kib()
    peaks, after = [], []
    fds = server.open_fds()
    chunk = os.urandom(1 << 16)
    for _ in range(ROUNDS):
        clients = [_connect(server, k, context, 10) for k in ("ssl", "unix") * SLOW_CLIENTS]
        for sock in clients:
            sock.setblocking(False)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for sock in clients:
                with contextlib.suppress(BlockingIOError, ssl.SSLWantWriteError):
                    sock.send(chunk)
            time.sleep(0.01)
        peaks.append(server.rss_kib())
        for sock in clients:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            sock.close()
        for _ in range(200):
            if server.open_fds() <= fds:
                break
            time.sleep(0.05)
        time.sleep(1.2)  # the memory is handed back at most once a second
        after.append(server.rss_kib())
    return {"before": before, "peaks": peaks, "after": after}


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """Naive clients' largest whole echo per transport; RSS over rounds of slow clients."""
    say("== h) reliability: naive blocking clients and memory after slow clients ==")
    certs = make_certs(workdir)
    path = workdir / "reliability.sock"
    server = echokit_server(
        workdir, certs, "echokit serve", [], ["tcp:0:interface=127.0.0.1", f"unix:{path}", "ssl:0"]
    )
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with running([server]):
        largest = {
            kind: largest_naive_echo(server, kind, context) for kind in ("tcp", "unix", "ssl")
        }
        rounds = slow_rounds(server, context)
    say("A blocking client that sends N bytes, shuts down writing and only then reads:")
    say(
        render(
            ["transport", "largest whole echo"],
            [[k, f"{v / MIB:.1f} MiB" if v else "< 1 MiB"] for k, v in largest.items()],
        )
    )
    mb = [round(x / 1024) for x in rounds["after"]]
    peaks = [round(x / 1024) for x in rounds["peaks"]]
    say(
        f"{ROUNDS} rounds of {SLOW_CLIENTS} TLS + {SLOW_CLIENTS} unix clients pushing 1 s "
        f"without reading, then reset: server RSS {round(rounds['before'] / 1024)} MB before, "
        f"peaks {peaks} MB, after each round {mb} MB"
    )
    say()
    report.sections["reliability"] = {"largest_naive_echo": largest, "rss_kib": rounds}
