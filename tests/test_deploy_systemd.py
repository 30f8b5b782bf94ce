"""
Socket activation by systemd's own C{systemd-socket-activate} (Debian's C{systemd}
package; no running systemd needed; under CI C{.ci/run} installs it, and a missing one
fails).

C{systemd-socket-activate -l ADDRESS --fdname=NAME COMMAND} binds and listens on ADDRESS,
waits for the first connection, then execs COMMAND with the listening socket as fd 3 and
LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set, as a socket unit does. The connection that
caused the activation waits in the socket's queue until echokit serves it. The tool
passes only TERM, PATH, USER, HOME and its C{-E NAME=VALUE} variables on, so the tests
hand echokit its certificate directory (and twistd this checkout's path) with C{-E}.

ADDRESS needs a concrete port: one is reserved by binding port 0 and releasing it just
before the tool starts (and the tool started again on another port if that one was taken
in between).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from echokit.transports.endpoints import ipv6_unavailable
from tests.halfclose import Held, fill_until_server_holds_echo, read_to_end
from tests.support import port_of, require_tool, skip_reason
from tests.test_deploy import REPO, Child, no_traceback, read_exactly, twistd

NO_IPV6 = ipv6_unavailable()

#: (domain= of the systemd: string, the address family, its loopback address)
FAMILIES = [
    pytest.param("INET", socket.AF_INET, "127.0.0.1", id="INET"),
    pytest.param(
        "INET6",
        socket.AF_INET6,
        "::1",
        id="INET6",
        marks=pytest.mark.skipif(skip_reason(NO_IPV6) is not None, reason=f"{NO_IPV6}"),
    ),
]

RUNNERS = pytest.mark.parametrize("runner", ["echokit serve", "twistd echokit"])


def reserved_port(family: socket.AddressFamily, host: str) -> int:
    """A loopback TCP port free right now (bound to port 0, then released)."""
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def listen_address(host: str, port: int) -> str:
    """systemd-socket-activate's C{-l} form: C{127.0.0.1:PORT}, C{[::1]:PORT}."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_command(runner: str, description: str) -> list[str]:
    if runner == "echokit serve":
        return [sys.executable, "-m", "echokit", "serve", description]
    return twistd("echokit", "--listen", description)


def listening(child: Child) -> bool:
    """Has C{systemd-socket-activate} said it listens (C{Listening on ADDRESS as 3.})?"""
    return any(" as 3." in line for line in child.err)


def listening_or_gone(child: Child) -> bool:
    return listening(child) or not child._open_streams


@contextlib.contextmanager
def socket_activated(
    tmp_path: Path,
    family: socket.AddressFamily,
    host: str,
    command: Sequence[str],
    fdname: str | None = "echokit.socket",
) -> Iterator[tuple[Child, int]]:
    """
    Run C{command} under C{systemd-socket-activate}, listening on C{host} (a free port);
    yield the child and the port once the tool listens (C{command} starts at the first
    connection). The child is killed at the end if the test has not stopped it.
    """
    tool = require_tool("systemd-socket-activate")
    variables = {
        "ECHOKIT_CERT_DIR": str(tmp_path / "certs"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),  # twistd finds twisted/plugins/ in this checkout
    }
    passed = [arg for name, value in variables.items() for arg in ("-E", f"{name}={value}")]
    names = [] if fdname is None else [f"--fdname={fdname}"]
    for _ in range(3):
        port = reserved_port(family, host)
        argv = [tool, "-l", listen_address(host, port), *names, *passed, *command]
        child = Child(argv, tmp_path, dict(os.environ))
        try:
            child.wait_for(functools.partial(listening_or_gone, child), 10)
            if not listening(child):
                child.stop()
                if "Address already in use" in child.text():
                    continue  # the reserved port was taken in between: another one
                raise AssertionError(f"systemd-socket-activate did not listen:\n{child.text()}")
            yield child, port
            return
        finally:
            child.kill()
    raise AssertionError("systemd-socket-activate could not bind a free port three times")


def half_closed_echo(family: socket.AddressFamily, host: str, port: int) -> tuple[bytes, Held]:
    """
    Connect, send (reading nothing) until the server holds echo it cannot send yet
    (L{tests.halfclose}), half-close, then read until the server closes; return what
    came back and what was sent and held.
    """
    with socket.socket(family) as sock:
        sock.settimeout(30)
        sock.connect((host, port))
        held = fill_until_server_holds_echo(sock)
        sock.shutdown(socket.SHUT_WR)
        return read_to_end(sock), held


class SystemdSocketActivateTests:
    @RUNNERS
    @pytest.mark.parametrize(("domain", "family", "host"), FAMILIES)
    def test_activated_socket_echoes_exactly(
        self,
        tmp_path: Path,
        runner: str,
        domain: str,
        family: socket.AddressFamily,
        host: str,
    ) -> None:
        """
        Under C{systemd-socket-activate}, C{systemd:domain=DOMAIN:index=0} serves the
        socket the tool bound: the connection that started echokit (waiting in the
        socket's queue meanwhile) is echoed, the announcement gives the tool's port, a
        4 MiB echo half-closed while still on its way comes back exact, and SIGTERM ends
        with the listener's summary.
        """
        description = f"systemd:domain={domain}:index=0"
        first_message = b"the connection that activated echokit\n"
        command = server_command(runner, description)
        with socket_activated(tmp_path, family, host, command) as (child, port):
            with socket.socket(family) as first:
                first.settimeout(30)
                first.connect((host, port))
                first.sendall(first_message)
                (connect_string,) = child.wait_announced(1)
                assert port_of(connect_string) == port
                assert connect_string.startswith("tcp6:" if family == socket.AF_INET6 else "tcp:")
                assert read_exactly(first, len(first_message)) == first_message
            echoed, held = half_closed_echo(family, host, port)
            assert held.in_server > 0, "the server held no echo at the half-close"
            assert echoed == held.sent
            child.stop()
        text = child.text()
        no_traceback(text)
        assert "Execing " in text  # the tool, not a stand-in, started echokit
        total = len(first_message) + len(held.sent)
        assert f"{description}: 2 connections, {total:,} bytes" in text, text

    @RUNNERS
    def test_name_finds_the_socket_named_by_fdname(self, tmp_path: Path, runner: str) -> None:
        """C{systemd:domain=INET:name=NAME} serves the socket C{--fdname=NAME} named."""
        command = server_command(runner, "systemd:domain=INET:name=echo")
        with socket_activated(tmp_path, socket.AF_INET, "127.0.0.1", command, "echo") as (
            child,
            port,
        ):
            echoed, held = half_closed_echo(socket.AF_INET, "127.0.0.1", port)
            assert echoed == held.sent
            child.stop()
        no_traceback(child.text())

    @pytest.mark.parametrize(
        ("description", "fdname", "expected"),
        [
            pytest.param(
                "systemd:domain=INET:index=0",
                None,
                "fd 3 is a listening socket, but LISTEN_FDNAMES is not set",
                id="no-fdname",
            ),
            pytest.param(
                "systemd:domain=INET6:index=0",
                "echokit.socket",
                "socket 3 is INET, not INET6: write domain=INET",
                id="wrong-domain",
            ),
        ],
    )
    def test_a_mismatch_is_one_line(
        self, tmp_path: Path, description: str, fdname: str | None, expected: str
    ) -> None:
        """
        Without C{--fdname} the tool sets no LISTEN_FDNAMES, which Twisted needs to see
        the sockets; and C{domain=INET6} on an IPv4 socket would serve garbage addresses.
        Either way C{echokit serve} exits non-zero at the first connection with one line
        that says what to change (not a traceback, not a hang).
        """
        command = server_command("echokit serve", description)
        with socket_activated(tmp_path, socket.AF_INET, "127.0.0.1", command, fdname) as (
            child,
            port,
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=30):
                status = child.process.wait(timeout=30)
            child.wait_for(lambda: not child._open_streams, 5)
        assert status != 0, child.text()
        errors = [line for line in child.err if line.startswith("echokit: error: ")]
        assert len(errors) == 1, child.text()
        assert expected in errors[0], errors
        no_traceback(child.text())
