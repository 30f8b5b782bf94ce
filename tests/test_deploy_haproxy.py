"""
echokit behind a real HAProxy: the PROXY protocol from the program that sends it.

HAProxy (Debian's C{haproxy}; under CI C{.ci/run} installs it, and a missing one fails)
runs in tcp mode on loopback, in the foreground (C{haproxy -f CFG -db}), in front of two
C{echokit serve haproxy:tcp:0:interface=127.0.0.1} processes, round robin, with
C{send-proxy} (PROXY v1) or C{send-proxy-v2}: the configuration the README shows for
spreading clients over several echokit processes or hosts.

The test clients connect from 127.0.0.2 and 127.0.0.3 (every 127/8 address is loopback
on Linux) while HAProxy reaches echokit from 127.0.0.1, so a log line or a per-peer count
that used the proxy's address instead of the client's shows. HAProxy's configuration
needs concrete ports: its frontend port is reserved by binding port 0 and releasing it
just before HAProxy starts (and HAProxy is started again on another port if that one
was taken in between).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import port_of, require_tool
from tests.test_deploy import Child, read_all, read_exactly, serve

LISTENER = "haproxy:tcp:0:interface=127.0.0.1"

#: The HAProxy configuration of the tests (and of the README's Deployment section, with
#: fixed ports there): {send_proxy} is C{send-proxy} or C{send-proxy-v2}.
CONFIG = """\
global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend echo
    bind 127.0.0.1:{front}
    default_backend echokit

backend echokit
    balance roundrobin
    server echo1 127.0.0.1:{port1} {send_proxy}
    server echo2 127.0.0.1:{port2} {send_proxy}
"""

#: Larger than what the kernel's socket buffers and HAProxy's own hold on the way there
#: and back, so that much of the echo is still to come when the client half-closes.
HALF_CLOSE_PAYLOAD = 16 << 20


def reserved_port() -> int:
    """A loopback TCP port free right now (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    """
    C{True} if a socket listens on 127.0.0.1:C{port} (from C{/proc/net/tcp}, so that
    asking does not make a connection, which HAProxy would pass on to a backend).
    """
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: TCP_LISTEN
            return True
    return False


@contextlib.contextmanager
def haproxy(tmp_path: Path, send_proxy: str, backends: tuple[int, int]) -> Iterator[int]:
    """
    Run HAProxy in the foreground in front of C{backends}; yield its frontend port.

    HAProxy is stopped (SIGTERM, then killed) however the block ends.
    """
    binary = require_tool("haproxy")
    for _ in range(3):
        front = reserved_port()
        config = tmp_path / f"haproxy-{front}.cfg"
        config.write_text(
            CONFIG.format(front=front, port1=backends[0], port2=backends[1], send_proxy=send_proxy)
        )
        child = Child([binary, "-f", str(config), "-db"], tmp_path, dict(os.environ))
        try:
            deadline = time.monotonic() + 10
            while child.process.poll() is None and time.monotonic() < deadline:
                if listening(front):
                    break
                time.sleep(0.05)
            if child.process.poll() is not None:
                child.stop()
                if "cannot bind" in child.text() or "Address already in use" in child.text():
                    continue  # the reserved port was taken in between: another one
                raise AssertionError(f"haproxy exited:\n{child.text()}")
            assert listening(front), f"haproxy does not listen on {front}:\n{child.text()}"
            yield front
            return
        finally:
            child.kill()
    raise AssertionError("haproxy could not bind a free port three times in a row")


def connect_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection from C{source} (a loopback address) to 127.0.0.1:C{port}."""
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )


def half_closed_echo(source: str, port: int, payload: bytes) -> tuple[bytes, int]:
    """
    Send C{payload} from C{source}, half-close, read until the server closes.

    Returns what came back and how much of the echo was still to come at the moment
    of the half-close (a reader thread reads all along, so nothing deadlocks).
    """
    with connect_from(source, port, timeout=30) as sock:
        received = bytearray()
        reader = threading.Thread(target=read_all, args=(sock, received), daemon=True)
        reader.start()
        sock.sendall(payload)
        outstanding = len(payload) - len(received)
        sock.shutdown(socket.SHUT_WR)
        reader.join(60)
        assert not reader.is_alive(), "no end of the echo within 60 s"
        return bytes(received), outstanding


def opened_from(server: Child, client: str) -> list[str]:
    """The server's log lines of connections from C{client} (an address) opening."""
    with server._changed:
        return [
            line
            for line in server.err
            if f"haproxy connection from {client}:" in line and " opened on " in line
        ]


def wait_logged(server: Child, client: str, count: int) -> bool:
    return server.wait_for(lambda: len(opened_from(server, client)) >= count, 10)


@contextlib.contextmanager
def two_backends(tmp_path: Path, *flags: str) -> Iterator[tuple[Child, Child]]:
    """Two C{echokit serve FLAGS haproxy:tcp:...} processes, each in its own directory."""
    with contextlib.ExitStack() as stack:
        servers = []
        for name in ("echo1", "echo2"):
            workdir = tmp_path / name
            workdir.mkdir()
            server = stack.enter_context(serve(workdir, *flags, LISTENER))
            server.wait_announced(1)
            servers.append(server)
        yield servers[0], servers[1]


def backend_port(server: Child) -> int:
    return port_of(server.wait_announced(1)[0])


SEND_PROXY = pytest.mark.parametrize(
    "send_proxy", ["send-proxy", "send-proxy-v2"], ids=["v1", "v2"]
)


class RealHAProxyTests:
    @SEND_PROXY
    def test_half_closed_echoes_are_exact_on_both_backends(
        self, tmp_path: Path, send_proxy: str
    ) -> None:
        """
        Through HAProxy, round robin over two echokit processes: two clients (from
        127.0.0.2) each send 16 MiB and half-close while most of the echo is still on
        its way; each gets exactly its bytes back, one from each backend, and each
        backend logs its client as 127.0.0.2, never HAProxy's 127.0.0.1.
        """
        with two_backends(tmp_path) as (echo1, echo2):
            ports = (backend_port(echo1), backend_port(echo2))
            with haproxy(tmp_path, send_proxy, ports) as front:
                for _ in range(2):
                    payload = os.urandom(HALF_CLOSE_PAYLOAD)
                    echoed, outstanding = half_closed_echo("127.0.0.2", front, payload)
                    assert outstanding > 0, "the whole echo was back before the half-close"
                    assert len(echoed) == len(payload)
                    assert echoed == payload
                for server in (echo1, echo2):
                    assert wait_logged(server, "127.0.0.2", 1), server.text()
        for server in (echo1, echo2):
            assert len(opened_from(server, "127.0.0.2")) == 1, server.text()
            assert opened_from(server, "127.0.0.1") == [], server.text()

    @SEND_PROXY
    def test_max_per_peer_counts_the_client_not_the_proxy(
        self, tmp_path: Path, send_proxy: str
    ) -> None:
        """
        With C{--max-per-peer 1} on both backends and round robin, four connections
        held open in turn: 127.0.0.2's first two are served (one per backend), its
        third (back on the first backend) is refused, and 127.0.0.3's (on the second
        backend, beside 127.0.0.2's) is served. Were the limit counting HAProxy's
        address, every backend's second connection would be refused.
        """
        with contextlib.ExitStack() as stack:
            echo1, echo2 = stack.enter_context(two_backends(tmp_path, "--max-per-peer", "1"))
            ports = (backend_port(echo1), backend_port(echo2))
            front = stack.enter_context(haproxy(tmp_path, send_proxy, ports))
            held = []
            for source in ("127.0.0.2", "127.0.0.2"):
                sock = stack.enter_context(connect_from(source, front))
                message = f"held open, from {source}\n".encode()
                sock.sendall(message)
                assert read_exactly(sock, len(message)) == message
                held.append(sock)
            refused = stack.enter_context(connect_from("127.0.0.2", front))
            with contextlib.suppress(ConnectionResetError):
                refused.sendall(b"over the limit\n")
            with contextlib.suppress(ConnectionResetError):
                assert refused.recv(100) == b"", "a third connection from 127.0.0.2 echoed"
            other = stack.enter_context(connect_from("127.0.0.3", front))
            other.sendall(b"another client\n")
            assert read_exactly(other, 15) == b"another client\n"
            for server in (echo1, echo2):
                assert wait_logged(server, "127.0.0.2", 1), server.text()
            assert wait_logged(echo2, "127.0.0.3", 1) or wait_logged(echo1, "127.0.0.3", 1)
        texts = echo1.text() + echo2.text()
        assert "refused a connection from 127.0.0.2" in texts, texts
        assert "from 127.0.0.1" not in texts, texts
