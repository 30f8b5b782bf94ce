"""
The echokit command line, end to end: its errors, its exit statuses and its output.

Errors that happen before the reactor starts (endpoint strings, flags) are checked
in-process with click's C{CliRunner}, with L{echokit.cli.run} replaced so that reaching
the reactor fails the test; everything that runs the reactor runs the real command in a
subprocess (L{run_echokit}, L{echokit_server}). Only loopback addresses and temporary
directories are used, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pty
import re
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from echokit import __version__, cli
from echokit.cli import main
from tests.support import (
    ECHOKIT,
    RunningServer,
    echokit_server,
    port_of,
    run_echokit,
    sigint_default,
)

#: Every subprocess run here must finish well within this many seconds.
TIMEOUT = 30
#: A round-trip time as echokit prints it after an echo: C{  (0.123 ms)}.
RTT = r"  \(\d+\.\d{3} ms\)"

CERT_FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


def assert_one_error_line(stderr: str | bytes, *fragments: str) -> str:
    """
    Check that C{stderr} is exactly one C{echokit: error: ...} line holding C{fragments}.

    @return: that line.
    """
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{text}"
    line = lines[0]
    assert line.startswith("echokit: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def error_lines(stderr: bytes) -> list[str]:
    """The C{echokit: error:} lines in C{stderr}."""
    text = stderr.decode(errors="replace")
    return [line for line in text.splitlines() if line.startswith("echokit: error: ")]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on (bound, then closed, so free for now)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- fixtures -------------------------------------------------------------------------


Invoke = Callable[..., Result]


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Invoke:
    """
    Run C{echokit ARGS} in-process, with a temporary certificate directory.

    The reactor must not be reached: these are errors echokit reports before it starts.
    """

    def reactor_reached(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("echokit started the reactor: this error should come before it")

    monkeypatch.setattr(cli, "run", reactor_reached)
    runner = CliRunner()
    cert_dir = tmp_path / "certs"

    def go(*args: str) -> Result:
        return runner.invoke(main, list(args), env={"ECHOKIT_CERT_DIR": str(cert_dir)})

    return go


@dataclass
class Servers:
    """One running C{echokit serve} with a listener of each kind, and its cert dirs."""

    server: RunningServer
    #: The directory the server's certificates (and CA) were created in.
    cert_dir: Path
    #: A directory with a different CA, made by C{echokit certs}.
    other_cert_dir: Path
    by_kind: dict[str, str]

    def announcement(self, kind: str) -> str:
        return next(a for a in self.server.announcements if a.startswith(kind + ":"))


SERVER_KINDS = ("tcp", "ssl", "unix", "udp")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """An C{echokit serve} on tcp, ssl, unix and udp (loopback), shared by this module."""
    base = tmp_path_factory.mktemp("cli")
    cert_dir, other = base / "certs-a", base / "certs-b"
    made = run_echokit(["certs", "--dir", str(other)], timeout=TIMEOUT)
    assert made.returncode == 0, made.stderr
    descriptions = [
        "tcp:0:interface=127.0.0.1",
        "ssl:0:interface=127.0.0.1",
        f"unix:{base / 'echo.sock'}",
        "udp:0:interface=127.0.0.1",
    ]
    with echokit_server(descriptions, cert_dir) as server:
        by_kind = dict(zip(SERVER_KINDS, server.connect_strings, strict=True))
        yield Servers(server, cert_dir, other, by_kind)


@pytest.fixture
def flipping_server() -> Iterator[int]:
    """
    A misbehaving echo server on 127.0.0.1: it returns the bytes it gets with byte 2 of
    the stream flipped. Yields its port; serves one connection.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    flip_at = 2

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            offset = 0
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                chunk = bytearray(data)
                if offset <= flip_at < offset + len(chunk):
                    chunk[flip_at - offset] ^= 0x01
                offset += len(chunk)
                try:
                    conn.sendall(chunk)
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        listener.close()
        thread.join(timeout=5)


# --- A. bad input: exit 2, one line, before anything runs -----------------------------


class ServeParseErrorTests:
    """C{echokit serve} rejects bad endpoint strings before the reactor starts."""

    @pytest.mark.parametrize(
        ("description", "fragments"),
        [
            (
                "tcp:notaport",
                [
                    "port 'notaport' is not a number",
                    "'tcp:notaport'",
                    "give a port from 0 to 65535",
                ],
            ),
            ("tcp:99999", ["port 99999 is out of range", "give a port from 0 to 65535"]),
            (
                "ssl:0:privateKey=/nonexistent.pem",
                [
                    "privateKey file '/nonexistent.pem' does not exist",
                    "give the path of an existing PEM file",
                    "echokit certs",
                ],
            ),
            (
                "unix:/nonexistent-dir/x.sock",
                [
                    "directory '/nonexistent-dir' of the unix socket does not exist",
                    "create it first or choose a path in an existing directory",
                ],
            ),
            ("tcp:0:foo=1", ["unknown keyword 'foo'", "tcp accepts port, backlog, interface"]),
            (
                "tcp6:0:interface=::1",
                ["unescaped IPv6 address", "interface=::1", r"write interface=\:\:1"],
            ),
            ("", ["empty server endpoint", "tcp:16000"]),
            ("tcp", ["'tcp' has no port", "write e.g. tcp:16000"]),
            (
                "tcp:1:2",
                [
                    "too many fields in 'tcp:1:2'",
                    "tcp takes tcp:port",
                    r"escape a literal ':' as \:",
                ],
            ),
            (
                r"tcp:0:interface=\:\:1",
                ["interface='::1' is not an IPv4 address", "interface=127.0.0.1", "tcp6:"],
            ),
            ("tcp:0:backlog=0", ["backlog='0' is not a whole number of at least 1"]),
        ],
    )
    def test_bad_endpoint(self, invoke: Invoke, description: str, fragments: list[str]) -> None:
        """A bad server string exits 2 with one line naming the bad part and the fix."""
        result = invoke("serve", description)
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert result.stdout == ""
        assert_one_error_line(result.stderr, *fragments)

    def test_bad_endpoint_among_good_ones(self, invoke: Invoke) -> None:
        """A typo in any argument stops serve before it listens on the others."""
        result = invoke("serve", "tcp:0:interface=127.0.0.1", "tcp:notaport")
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert result.stdout == ""
        assert_one_error_line(result.stderr, "port 'notaport' is not a number")

    def test_unknown_transport(self, tmp_path: Path) -> None:
        """
        An unknown transport exits 2 naming it and the transports echokit knows.

        (Unknown prefixes may be Twisted plugins, so they are checked with the reactor
        running: hence a subprocess.)
        """
        result = run_echokit(["serve", "bogus:1"], tmp_path / "certs", timeout=TIMEOUT)
        assert result.returncode == 2, result.stderr
        assert result.stdout == b""
        assert b"Traceback" not in result.stderr
        [line] = error_lines(result.stderr)
        assert "unknown transport 'bogus' in 'bogus:1'" in line
        assert "use one of tcp, tcp6, unix, ssl, udp, udp6" in line

    def test_unknown_transport_is_the_only_line(self, tmp_path: Path) -> None:
        """The unknown-transport error is the only line serve prints on stderr."""
        result = run_echokit(["serve", "bogus:1"], tmp_path / "certs", timeout=TIMEOUT)
        assert result.returncode == 2, result.stderr
        assert_one_error_line(result.stderr, "unknown transport 'bogus'")

    def test_bad_third_endpoint_listens_on_none(self, tmp_path: Path) -> None:
        """serve with a bad third endpoint exits 2 promptly, announcing no listener."""
        started = time.monotonic()
        result = run_echokit(
            ["serve", "tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", "bogus:1"],
            tmp_path / "certs",
            timeout=TIMEOUT,
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 2, result.stderr
        assert elapsed < 15
        assert b"listening" not in result.stdout
        assert result.stdout == b""
        assert b"Traceback" not in result.stderr
        [line] = error_lines(result.stderr)
        assert "unknown transport 'bogus' in 'bogus:1'" in line


class ServeListenErrorTests:
    """
    When a listener cannot start, C{echokit serve} exits 1 with one line naming the
    endpoint, the system's reason and what to do; nothing is announced.
    """

    def serve_fails(self, tmp_path: Path, *descriptions: str) -> str:
        result = run_echokit(["serve", *descriptions], tmp_path / "certs", timeout=TIMEOUT)
        assert result.returncode == 1, result.stderr
        assert b"listening on" not in result.stdout, result.stdout
        return assert_one_error_line(result.stderr, f"cannot listen on '{descriptions[-1]}'")

    @pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
    def test_port_in_use(self, tmp_path: Path, kind: int) -> None:
        """A port another socket holds: 'Address already in use', and how to pick another."""
        with socket.socket(socket.AF_INET, kind) as taken:
            taken.bind(("127.0.0.1", 0))
            if kind == socket.SOCK_STREAM:
                taken.listen()
            port = taken.getsockname()[1]
            prefix = "tcp" if kind == socket.SOCK_STREAM else "udp"
            line = self.serve_fails(tmp_path, f"{prefix}:{port}:interface=127.0.0.1")
        assert line.endswith(
            f"Address already in use: another program holds port {port}; "
            "stop it, or choose another port (0 picks a free one)"
        ), line

    @pytest.mark.parametrize(
        "description, without",
        [
            ("tcp:0:interface=192.0.2.1", "listen on every address"),
            ("udp:0:interface=192.0.2.1", "listen on loopback only"),
        ],
        ids=["tcp", "udp"],
    )
    def test_interface_not_on_this_machine(
        self, tmp_path: Path, description: str, without: str
    ) -> None:
        """
        An interface address the machine does not have (TEST-NET-1) is named as such, with
        what leaving interface= out means for that transport (udp listens on loopback).
        """
        line = self.serve_fails(tmp_path, description)
        assert line.endswith(
            "Cannot assign requested address: 192.0.2.1 is not an address of this machine; "
            "give one of its addresses (127.0.0.1 for loopback), or leave interface= out to "
            f"{without}"
        ), line

    def test_unix_path_served_by_another_echokit(self, tmp_path: Path) -> None:
        """
        A unix path another echokit serves: the process holding its lock is named, with
        what to do (not Twisted's 'Cannot acquire lock').
        """
        path = tmp_path / "taken.sock"
        with echokit_server([f"unix:{path}"], tmp_path / "certs") as other:
            line = self.serve_fails(tmp_path, f"unix:{path}")
            pid = other.process.pid
        assert line.endswith(
            f"{path} is in use: process {pid} holds {path}.lock; stop it, or choose another "
            f"path (if process {pid} serves nothing there, remove {path}.lock)"
        ), line

    def test_one_port_twice_in_one_command(self, tmp_path: Path) -> None:
        """tcp and ssl on one port in one command: the message names the listener holding it."""
        port = free_port()
        line = self.serve_fails(
            tmp_path, f"tcp:{port}:interface=127.0.0.1", f"ssl:{port}:interface=127.0.0.1"
        )
        assert line.endswith(
            f"Address already in use: the listener for 'tcp:{port}:interface=127.0.0.1' in "
            f"this command already holds port {port}; give each listener its own port"
        ), line

    def test_one_unix_path_twice_in_one_command(self, tmp_path: Path) -> None:
        """A haproxy:unix: and a unix: listener on one path: the first one is named."""
        path = tmp_path / "both.sock"
        line = self.serve_fails(tmp_path, f"haproxy:unix:{path}", f"unix:{path}")
        assert line.endswith(
            f"{path} is in use: the listener for 'haproxy:unix:{path}' in this command "
            "already serves there; give each unix listener its own path"
        ), line

    def test_unix_path_where_no_file_can_be_made(self, tmp_path: Path) -> None:
        """A unix path in a directory nobody can create files in (/proc): where to put it."""
        line = self.serve_fails(tmp_path, "unix:/proc/echokit-test.sock")
        assert "cannot create /proc/echokit-test.sock or /proc/echokit-test.sock.lock" in line
        assert "choose a path in a directory you can write" in line

    def test_privileged_port_hint(self) -> None:
        """
        EACCES on a port below 1024 (what a user without root sees; tests may run as
        root, so the error is made here) says what the port needs and which to choose.
        """
        from twisted.internet.error import CannotListenError

        from echokit.server.listeners import _listen_failed
        from echokit.transports.endpoints import ServerPlan
        from echokit.transports.grammar import parse_server

        denied = OSError(errno.EACCES, os.strerror(errno.EACCES))
        plan = ServerPlan(parse_server("tcp:80"), None)  # type: ignore[arg-type]
        message = str(_listen_failed(plan, CannotListenError("", 80, denied)))
        assert message == (
            "cannot listen on 'tcp:80': Permission denied: port 80 is below 1024 and needs "
            "root or CAP_NET_BIND_SERVICE; choose a port from 1024 up"
        )


class ConnectParseErrorTests:
    """C{echokit connect} rejects bad endpoint strings and flags before the reactor starts."""

    @pytest.mark.parametrize(
        ("description", "fragments"),
        [
            (
                "tcp:host=127.0.0.1:port=notaport",
                [
                    "port 'notaport' is not a number",
                    "give a port from 1 to 65535",
                    "tcp:host=127.0.0.1:port=16000",
                ],
            ),
            ("tcp:host=127.0.0.1:port=99999", ["port 99999 is out of range", "from 1 to 65535"]),
            ("tcp:host=127.0.0.1:port=0", ["port 0 is out of range", "from 1 to 65535"]),
            (
                "ssl:host=localhost:port=1:privateKey=/nonexistent.pem",
                ["privateKey file '/nonexistent.pem' does not exist", "echokit certs"],
            ),
            (
                "tls:host=localhost:port=1:trustRoots=/nonexistent-ca.pem",
                ["trustRoots '/nonexistent-ca.pem' does not exist", "CA certificates to trust"],
            ),
            (
                "tcp:host=127.0.0.1:port=1:foo=1",
                ["unknown keyword 'foo'", "tcp accepts host, port, timeout, bindAddress"],
            ),
            ("tcp6:host=::1:port=1", ["unescaped IPv6 address", r"write host=\:\:1"]),
            ("tcp:host=::1:port=1", ["unescaped IPv6 address", r"write host=\:\:1"]),
            ("", ["empty client endpoint", "tcp:host=127.0.0.1:port=16000"]),
            ("tcp", ["'tcp' has no host or port", "write e.g. tcp:host=127.0.0.1:port=16000"]),
            (
                "tcp:a:1:2",
                ["too many fields in 'tcp:a:1:2'", "tcp takes tcp:host:port", r"as \:"],
            ),
            ("tcp:host=:port=1", ["empty host", "name the server"]),
            (
                "unix:path=/tmp/" + "x" * 120,
                ["unix socket path is 125 bytes long", "the limit is 107"],
            ),
            (
                f"tcp:host={'a' * 64}.example:port=1",
                [f"host '{'a' * 64}.example' is not a valid name", "label", "63"],
            ),
            ("udp:host=a..b:port=1", ["host 'a..b' is not a valid name", "empty label"]),
            (
                "tls:host=a_b.example:port=1",
                ["host 'a_b.example' is not a valid name for TLS", "hostname="],
            ),
            (
                "ssl:host=localhost:port=1:hostname=-x-.example",
                ["hostname '-x-.example' is not a valid name for TLS"],
            ),
            (
                "tcp:16000",
                [
                    "'tcp:16000' reads 16000 as the host",
                    "write e.g. tcp:host=127.0.0.1:port=16000",
                ],
            ),
        ],
    )
    def test_bad_endpoint(self, invoke: Invoke, description: str, fragments: list[str]) -> None:
        """A bad client string exits 2 with one line naming the bad part and the fix."""
        result = invoke("connect", description)
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert result.stdout == ""
        assert_one_error_line(result.stderr, *fragments)

    def test_unknown_transport(self, tmp_path: Path) -> None:
        """An unknown transport exits 2 with one line naming it and the known ones."""
        result = run_echokit(["connect", "bogus:1"], tmp_path / "certs", timeout=TIMEOUT)
        assert result.returncode == 2, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr,
            "unknown transport 'bogus' in 'bogus:1'",
            "use one of tcp, tcp6, unix, ssl, tls, udp",
        )

    @pytest.mark.parametrize(
        ("flags", "fragment"),
        [
            (["--count", "0"], "'--count': 0 is not in the range x>=1"),
            (["--timeout", "-1"], "'--timeout': -1.0 is not in the range x>0"),
            (["--timeout", "0"], "'--timeout': 0.0 is not in the range x>0"),
        ],
    )
    def test_bad_flag(self, invoke: Invoke, flags: list[str], fragment: str) -> None:
        """An out-of-range --count or --timeout exits 2 naming the flag and its range."""
        result = invoke("connect", "tcp:host=127.0.0.1:port=1", *flags)
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        assert fragment in result.stderr

    def test_client_cert_without_certificates(self, invoke: Invoke, tmp_path: Path) -> None:
        """--client-cert with an empty cert dir exits 2 saying to run `echokit certs`."""
        empty = tmp_path / "empty"
        empty.mkdir()
        result = invoke(
            "connect",
            "ssl:host=127.0.0.1:port=1",
            "--client-cert",
            "--cert-dir",
            str(empty),
            "--message",
            "hi",
        )
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert result.stdout == ""
        assert_one_error_line(
            result.stderr,
            f"--client-cert: no client certificate in {empty}",
            "run `echokit certs` first",
        )
        assert list(empty.iterdir()) == []


# --- B. runtime failures: exit 1, one line ----------------------------------------------


class ConnectFailureTests:
    """C{echokit connect} turns every runtime failure into one line and exit status 1."""

    def connect(
        self, args: Sequence[str], cert_dir: Path, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return run_echokit(["connect", *args], cert_dir, stdin=stdin, timeout=TIMEOUT)

    def test_connection_refused(self, tmp_path: Path) -> None:
        """A tcp port nothing listens on: 'connection refused', naming the endpoint."""
        target = f"tcp:host=127.0.0.1:port={free_port()}"
        result = self.connect([target, "--message"], tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr,
            f"connection refused by {target}",
            "is an echo server listening there?",
        )

    @pytest.mark.parametrize("form", ["unix:path={}", "unix:{}"])
    def test_missing_unix_socket(self, tmp_path: Path, form: str) -> None:
        """A unix socket path that does not exist: 'no unix socket at ...'."""
        target = form.format(tmp_path / "absent" / "echo.sock")
        result = self.connect([target, "--message"], tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr, f"no unix socket at {target}", "is the server running?"
        )

    def test_udp_refused(self, tmp_path: Path) -> None:
        """A udp port nothing listens on: the ICMP refusal is reported as 'refused'."""
        target = f"udp:host=127.0.0.1:port={free_port(socket.SOCK_DGRAM)}"
        result = self.connect([target, "--timeout", "1", "--message"], tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr, "UDP datagram refused (ICMP port unreachable)", "is a UDP server there?"
        )

    def test_untrusted_certificate_from_environment(self, servers: Servers) -> None:
        """A TLS server signed by another CA ($ECHOKIT_CERT_DIR): 'not trusted by ...'."""
        target = servers.by_kind["ssl"]
        result = self.connect([target, "--message"], servers.other_cert_dir)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr,
            f"TLS: the server's certificate at {target} is not trusted by "
            f"{servers.other_cert_dir / 'ca.pem'}",
            "caCertsDir=",
            "--insecure",
            "--cert-dir",
            "ECHOKIT_CERT_DIR",
        )

    def test_untrusted_certificate_from_option(self, servers: Servers) -> None:
        """--cert-dir wins over $ECHOKIT_CERT_DIR: the other CA does not trust the server."""
        target = servers.by_kind["ssl"]
        result = self.connect(
            [target, "--cert-dir", str(servers.other_cert_dir), "--message"], servers.cert_dir
        )
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr, f"is not trusted by {servers.other_cert_dir / 'ca.pem'}", "--insecure"
        )

    def test_wrong_hostname(self, servers: Servers) -> None:
        """hostname= naming a name the certificate lacks: 'not valid for NAME'."""
        port = port_of(servers.by_kind["ssl"])
        target = f"ssl:host=127.0.0.1:port={port}:hostname=wrong.example"
        result = self.connect([target, "--message"], servers.cert_dir)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr,
            "TLS: the server's certificate is not valid for 'wrong.example'",
            "hostname=NAME",
            "--insecure",
        )

    def test_tls_to_plaintext_port(self, servers: Servers) -> None:
        """A TLS client against a plain tcp echo server: 'TLS handshake ... failed'."""
        target = f"ssl:host=127.0.0.1:port={port_of(servers.by_kind['tcp'])}"
        result = self.connect([target, "--message"], servers.cert_dir)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert_one_error_line(
            result.stderr, f"TLS handshake with {target} failed", "is the server speaking TLS?"
        )

    def test_echo_differs(self, tmp_path: Path, flipping_server: int) -> None:
        """A server that flips a byte: exit 1, 'echo differs at byte N', both bytes shown."""
        target = f"tcp:host=127.0.0.1:port={flipping_server}"
        result = self.connect([target, "--message", "hello"], tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        assert error_lines(result.stderr) == [
            "echokit: error: echo differs at byte 2: sent b'l', got b'm'"
        ]

    def test_echo_differs_is_the_only_line(self, tmp_path: Path, flipping_server: int) -> None:
        """A differing echo is reported in one line, with no traceback."""
        target = f"tcp:host=127.0.0.1:port={flipping_server}"
        result = self.connect([target, "--message", "hello"], tmp_path)
        assert result.returncode == 1, result.stderr
        assert_one_error_line(result.stderr, "echo differs at byte 2: sent b'l', got b'm'")

    def test_insecure_skips_verification(self, servers: Servers) -> None:
        """--insecure reaches an untrusted TLS server, warning that nothing is verified."""
        target = servers.by_kind["ssl"]
        result = self.connect([target, "--insecure", "--message"], servers.other_cert_dir)
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(rf"Hello, Server!{RTT}\n", result.stdout.decode()), result.stdout
        stderr = result.stderr.decode()
        assert "Traceback" not in stderr
        assert "error" not in stderr
        assert stderr.splitlines() == [
            "echokit: warning: --insecure: the server's certificate is NOT verified"
        ]


# --- C. the happy paths ---------------------------------------------------------------


class HelpTests:
    """--version and --help say what echokit is and show examples."""

    def test_command_line_imports_no_twisted(self) -> None:
        """
        Importing the command line (enough for --help and usage errors) loads neither
        Twisted nor the TLS libraries: they come when a command runs, which keeps
        `echokit --help` fast.
        """
        code = (
            "import sys, echokit.cli; "
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('twisted', 'OpenSSL', 'cryptography')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT, check=False
        )
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.decode().strip() == "[]"

    def test_version(self, invoke: Invoke) -> None:
        """echokit --version prints the version and exits 0."""
        result = invoke("--version")
        assert result.exit_code == 0, result.output
        assert result.stdout == f"echokit, version {__version__}\n"

    @pytest.mark.parametrize(
        ("args", "example"),
        [
            ([], "echokit serve tcp:16000"),
            (["serve"], "echokit serve tcp:16000"),
            (["connect"], "echokit connect ssl:host=localhost:port=16443"),
            (["certs"], "echokit certs --dir ./certs"),
            (["demo"], "echokit demo"),
        ],
    )
    @pytest.mark.parametrize("flag", ["--help", "-h"])
    def test_help(self, invoke: Invoke, args: list[str], example: str, flag: str) -> None:
        """Every command's help exits 0 and shows an example of its use."""
        result = invoke(*args, flag)
        assert result.exit_code == 0, result.output
        assert "Example" in result.stdout
        assert example in result.stdout
        assert result.stderr == ""

    def test_connect_help_shows_escaped_ipv6(self, invoke: Invoke) -> None:
        """connect's help shows how to write an IPv6 host, colons escaped."""
        result = invoke("connect", "--help")
        assert result.exit_code == 0, result.output
        assert r"'tcp6:host=\:\:1:port=16001'" in result.stdout

    def test_python_m_echokit(self) -> None:
        """python -m echokit --help runs the same command line."""
        result = subprocess.run(
            [*ECHOKIT, "--help"], capture_output=True, timeout=TIMEOUT, check=False
        )
        assert result.returncode == 0, result.stderr
        assert b"Usage: python -m echokit" in result.stdout
        assert b"Examples:" in result.stdout
        assert result.stderr == b""


class InterruptedStartTests:
    """Ctrl-C while the command line is still loading exits 130 quietly, like Ctrl-C later."""

    # A real SIGINT at a known point: when the command line first imports click (a
    # fraction of a second into every run; a user's Ctrl-C can land there).
    SIGINT_ON_CLICK = (
        "import os, signal, sys\n"
        "class SigintOnClick:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'click':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, SigintOnClick())\n"
        "sys.argv = ['echokit', '--help']\n"
    )

    def interrupted(self, start: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-c", self.SIGINT_ON_CLICK + start],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
            preexec_fn=sigint_default,
        )

    def test_installed_command(self) -> None:
        """
        The installed `echokit` script (its console_scripts entry point), interrupted
        while it imports the command line: status 130, no traceback, no help printed.
        """
        start = (
            "from importlib.metadata import entry_points\n"
            "entry_points(group='console_scripts')['echokit'].load()()\n"
        )
        result = self.interrupted(start)
        assert result.returncode == 130, result.stderr.decode()
        assert result.stderr == b"\n"
        assert result.stdout == b""

    def test_python_m_echokit(self) -> None:
        """`python -m echokit`, interrupted while it imports the command line: the same."""
        result = self.interrupted(
            "import runpy; runpy.run_module('echokit', run_name='__main__')\n"
        )
        assert result.returncode == 130, result.stderr.decode()
        assert result.stderr == b"\n"
        assert result.stdout == b""


class CertsTests:
    """echokit certs writes a CA, server and client certificates once."""

    def test_creates_certificates(self, invoke: Invoke, tmp_path: Path) -> None:
        """certs --dir D writes six files, keys mode 0600, and lists them."""
        directory = tmp_path / "new" / "certs"
        result = invoke("certs", "--dir", str(directory))
        assert result.exit_code == 0, (result.output, result.exception)
        assert result.stdout.splitlines() == [f"wrote {directory / name}" for name in CERT_FILES]
        assert sorted(p.name for p in directory.iterdir()) == sorted(CERT_FILES)
        for name in CERT_FILES:
            if name.endswith(".key"):
                mode = stat.S_IMODE((directory / name).stat().st_mode)
                assert mode == 0o600, (name, oct(mode))
        assert (directory / "ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert (directory / "ca.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")

    def test_second_run_keeps_them(self, invoke: Invoke, tmp_path: Path) -> None:
        """A second certs run says they exist already and leaves them unchanged."""
        directory = tmp_path / "certs"
        assert invoke("certs", "--dir", str(directory)).exit_code == 0
        before = {name: (directory / name).read_bytes() for name in CERT_FILES}
        result = invoke("certs", "--dir", str(directory))
        assert result.exit_code == 0, result.output
        assert result.stdout == (f"certificates already in {directory} (--force makes new ones)\n")
        assert {name: (directory / name).read_bytes() for name in CERT_FILES} == before


class ServeAnnouncementTests:
    """serve announces each listener's bound address and a connect string that works."""

    @pytest.mark.parametrize("kind", ["tcp", "ssl", "udp"])
    def test_bound_port(self, servers: Servers, kind: str) -> None:
        """A port-0 listener is announced with the port it bound, also in its connect string."""
        announcement = servers.announcement(kind)
        match = re.fullmatch(
            rf"{kind}:0:interface=127\.0\.0\.1 listening on 127\.0\.0\.1:(\d+) "
            rf"-> echokit connect {kind}:host=(127\.0\.0\.1|localhost):port=(\d+)",
            announcement,
        )
        assert match, announcement
        assert match[1] == match[3]
        assert int(match[1]) != 0
        assert port_of(servers.by_kind[kind]) == int(match[1])

    def test_unix_announcement(self, servers: Servers) -> None:
        """A unix listener is announced with its path and a unix:path= connect string."""
        announcement = servers.announcement("unix")
        path = announcement.split(" ", 1)[0].removeprefix("unix:")
        assert f" listening on {path} " in announcement
        assert servers.by_kind["unix"] == f"unix:path={path}"

    @pytest.mark.parametrize("kind", SERVER_KINDS)
    def test_connect_string_works(self, servers: Servers, kind: str) -> None:
        """The announced connect string, used as is, reaches the server and echoes."""
        result = run_echokit(
            ["connect", servers.by_kind[kind], "--message", f"via {kind}"],
            servers.cert_dir,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(rf"via {kind}{RTT}\n", result.stdout.decode()), result.stdout
        assert result.stderr == b""


class ConnectTests:
    """connect's pipe and message modes print exactly what came back."""

    def test_pipe(self, servers: Servers) -> None:
        """Piped stdin is echoed to stdout byte for byte, with nothing else."""
        result = run_echokit(
            ["connect", servers.by_kind["tcp"]], servers.cert_dir, stdin=b"hello\n", timeout=TIMEOUT
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello\n"
        assert result.stderr == b""

    def test_pipe_udp(self, servers: Servers) -> None:
        """Over udp, each piped line goes as one datagram and its echo to stdout."""
        result = run_echokit(
            ["connect", servers.by_kind["udp"]],
            servers.cert_dir,
            stdin=b"one\ntwo\n",
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"one\ntwo\n"
        assert result.stderr == b""

    def test_default_message(self, servers: Servers) -> None:
        """--message alone sends 'Hello, Server!' and prints its echo with the RTT."""
        result = run_echokit(
            ["connect", servers.by_kind["tcp"], "--message"], servers.cert_dir, timeout=TIMEOUT
        )
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(rf"Hello, Server!{RTT}\n", result.stdout.decode()), result.stdout
        assert result.stderr == b""

    def test_message_count(self, servers: Servers) -> None:
        """--message hi --count 3 prints three echoes of 'hi'."""
        result = run_echokit(
            ["connect", servers.by_kind["tcp"], "--message", "hi", "--count", "3"],
            servers.cert_dir,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert len(lines) == 3, lines
        for line in lines:
            assert re.fullmatch(rf"hi{RTT}", line), line
        assert result.stderr == b""


class InteractiveTests:
    """At a terminal, connect sends each typed line and shows its round-trip time."""

    @pytest.mark.parametrize(
        ("typed", "echo"),
        [
            (b"hello\n", rb"hello  \((\d+\.\d{3}) ms\)\r?\n"),
            # A line ended by Ctrl-D rather than Enter arrives without its newline: it is
            # sent when the terminal ends (and must not make the client spin meanwhile).
            (b"abc\x04", rb"abc  \((\d+\.\d{3}) ms\)\r?\n"),
        ],
        ids=["line", "unterminated"],
    )
    def test_type_a_line_then_ctrl_d(self, servers: Servers, typed: bytes, echo: bytes) -> None:
        """A typed line comes back with '(N ms)'; Ctrl-D ends the session with status 0."""
        master, slave = pty.openpty()
        env = dict(os.environ, ECHOKIT_CERT_DIR=str(servers.cert_dir))
        target = servers.by_kind["tcp"]
        process = subprocess.Popen(
            [*ECHOKIT, "connect", target],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(slave)
        seen = bytearray()

        def read_until(pattern: bytes, seconds: float = 15) -> re.Match[bytes]:
            deadline = time.monotonic() + seconds
            while (match := re.search(pattern, seen)) is None:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([master], [], [], max(0.0, left))
                if not ready:
                    raise AssertionError(f"no {pattern!r} within {seconds} s; got {bytes(seen)!r}")
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {pattern!r}: {bytes(seen)!r}")
                seen.extend(chunk)
            return match

        try:
            read_until(rb"connected to .*Ctrl-D to quit")
            typed_at = time.monotonic()
            os.write(master, typed)
            if typed.endswith(b"\n"):
                match = read_until(echo)
                os.write(master, b"\x04")
            else:
                time.sleep(0.3)
                os.write(master, b"\x04")
                match = read_until(echo)
            waited_ms = (time.monotonic() - typed_at) * 1000
            # The time shown is the line's own round trip: more than nothing, and no
            # more than the test waited from typing it to seeing its echo.
            assert 0 < float(match[1]) <= waited_ms, (match[1], waited_ms)
            status = process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(master)
        assert process.stderr is not None
        stderr = process.stderr.read()
        process.stderr.close()
        assert status == 0, stderr
        assert b"Traceback" not in stderr
        assert stderr == b""
        assert f"connected to {target}".encode() in seen


class PartialLineTests:
    """Input that ends (or pauses) in the middle of a line is handled, never spun on."""

    def test_udp_pipe_last_line_without_newline(self, tmp_path: Path) -> None:
        """printf abc | connect udp: sends 'abc' as one datagram and exits 0 (no hang)."""
        with echokit_server(["udp:0"], tmp_path) as server:
            result = run_echokit(["connect", server.connect_strings[0]], stdin=b"abc", timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"abc"

    def test_udp_pipe_lines_split_across_reads(self) -> None:
        """
        Long lines arriving in several reads are still one datagram each: a UDP echo
        written here records every datagram it gets, and gets each line whole.
        """
        lines = [os.urandom(20_000).replace(b"\n", b"x") + b"\n" for _ in range(5)]
        datagrams: list[bytes] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
            echo.bind(("127.0.0.1", 0))
            echo.settimeout(30)

            def serve() -> None:
                with contextlib.suppress(OSError):
                    while len(datagrams) < len(lines):
                        datagram, peer = echo.recvfrom(65_536)
                        datagrams.append(datagram)
                        echo.sendto(datagram, peer)

            server = threading.Thread(target=serve, daemon=True)
            server.start()
            result = run_echokit(
                ["connect", f"udp:host=127.0.0.1:port={echo.getsockname()[1]}"],
                stdin=b"".join(lines),
                timeout=30,
            )
            server.join(5)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"".join(lines)
        assert datagrams == lines
