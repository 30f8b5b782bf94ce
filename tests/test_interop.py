"""
Interop with peers nobody here wrote: socat, ncat and openssl against echokit.

Two directions, each byte checked:

    - C{echokit serve} answered by foreign clients: socat (tcp, tcp6, unix, udp, ssl),
      ncat (tcp, ssl with certificate verification) and C{openssl s_client} (TLS 1.2 and
      1.3, verifying echokit's generated CA and the name C{localhost}).
    - C{echokit connect} against foreign echo servers: socat's C{PIPE} behind TCP, TCP6,
      UNIX, UDP (IPv4 and IPv6) and OPENSSL listeners, and C{ncat --exec /bin/cat} in
      clear and over TLS.

Only loopback addresses, ephemeral ports and unix sockets in temporary directories are
used; every wait is bounded; every process started here is stopped in a C{finally}.
Tools missing locally skip their tests; under CI (C{CI} set) they fail instead.

Some peers need care, and each test says why where it matters:

    - ncat's C{--exec} relay writes to the child with blocking writes and tears the
      session down as soon as the client half-closes, so it is fed in small chunks and
      its stdin is closed only once everything has come back.
    - ncat's C{--ssl} client ends its input with a TCP half-close (no close_notify),
      and TLS has no half-close: it too closes its stdin only after the whole echo.
    - ncat 7.x does not match IP addresses in certificates, so it connects by the name
      C{localhost} (with C{-4}, where echokit's ssl listener is).

socat's OPENSSL client sends close_notify straight after its data, and gets every byte
of its echo back: echokit's TLS layer takes close_notify as a half-close (once an echokit
bug, once an expected failure here; no test here is expected to fail).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from echokit.echo import MAX_UDP_PAYLOAD_IPV4
from echokit.transports.endpoints import ipv6_unavailable
from echokit.transports.grammar import escape
from tests.support import (
    ECHOKIT,
    RunningServer,
    echokit_server,
    port_of,
    require_tool,
    run_echokit,
    skip_reason,
)

#: No process run here may take longer than this many seconds.
TIMEOUT = 20
#: Size of the random payloads streamed through each stream transport.
STREAM_PAYLOAD = 300 * 1024
#: How much ncat is given at a time before its echo must come back (see its tests).
NCAT_STEP = 8 * 1024
#: Why IPv6 loopback cannot be used here, or None when it can.
NO_IPV6 = ipv6_unavailable()
needs_ipv6 = pytest.mark.skipif(skip_reason(NO_IPV6) is not None, reason=f"{NO_IPV6}")


# --- processes --------------------------------------------------------------------------


def _drain(stream: IO[bytes], into: bytearray) -> None:
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        into.extend(chunk)


class Conversation:
    """
    A process fed through a pipe while its output is collected as it comes.

    For peers that must not see the end of their input before they have answered
    everything: send, wait for the answer, and only then close stdin.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._out = bytearray()
        self._err = bytearray()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=_drain, args=(self.process.stdout, self._out), daemon=True),
            threading.Thread(target=_drain, args=(self.process.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stdout(self) -> bytes:
        return bytes(self._out)

    @property
    def stderr(self) -> bytes:
        return bytes(self._err)

    def describe(self) -> str:
        return (
            f"{' '.join(self.args)} (exit status {self.process.poll()}): "
            f"{len(self._out)} bytes on stdout; stderr: {self.stderr.decode(errors='replace')}"
        )

    def send(self, data: bytes) -> None:
        """Write C{data} to the process's stdin (keep it under a pipe's 64 KiB)."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def wait_for(self, done: Callable[[bytes], bool], what: str) -> None:
        """Wait, at most L{TIMEOUT} seconds, until C{done(stdout so far)} holds."""
        deadline = time.monotonic() + TIMEOUT
        while not done(self.stdout):
            if self.process.poll() is not None:
                for reader in self._readers:
                    reader.join(TIMEOUT)
                if done(self.stdout):
                    return
                raise AssertionError(f"exited before {what}: {self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {TIMEOUT} s: {self.describe()}")
            time.sleep(0.005)

    def finish(self) -> int:
        """Close stdin, wait (bounded) for the process to exit, and return its status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            status = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {TIMEOUT} s: {self.describe()}") from None
        for reader in self._readers:
            reader.join(TIMEOUT)
        return status

    def stop(self) -> None:
        """Kill the process if it is still running, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def conversation(args: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Conversation]:
    """Run a L{Conversation}, and kill its process on the way out whatever happened."""
    talk = Conversation(args, env)
    try:
        yield talk
    finally:
        talk.stop()


def at_least(size: int) -> Callable[[bytes], bool]:
    """A test for L{Conversation.wait_for}: at least C{size} bytes have come out."""
    return lambda out: len(out) >= size


def echo_in_lockstep(talk: Conversation, payload: bytes, chunk: int) -> int:
    """
    Send C{payload} C{chunk} bytes at a time, waiting for each chunk's echo before the
    next, close stdin once all of it has come back, and return the exit status.
    """
    for start in range(0, len(payload), chunk):
        talk.send(payload[start : start + chunk])
        end = min(start + chunk, len(payload))
        talk.wait_for(at_least(end), f"the echo of {end} bytes")
    return talk.finish()


def run_tool(
    args: Sequence[str], stdin: bytes | IO[bytes] = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run a foreign tool to completion (bounded) with C{stdin}; capture both outputs."""
    if isinstance(stdin, bytes):
        return subprocess.run(
            list(args), input=stdin, capture_output=True, timeout=TIMEOUT, check=False
        )
    return subprocess.run(
        list(args), stdin=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )


def explain(result: subprocess.CompletedProcess[bytes]) -> str:
    """A failure message: the command, its status and its stderr."""
    args = result.args if isinstance(result.args, str) else " ".join(map(str, result.args))
    return (
        f"{args} exited with {result.returncode}, {len(result.stdout)} bytes on stdout; "
        f"stderr: {result.stderr.decode(errors='replace')}"
    )


@dataclass
class Background:
    """A foreign server running in its own process group, logging to a file."""

    process: subprocess.Popen[bytes]
    log: Path

    def describe(self) -> str:
        return (
            f"{' '.join(map(str, self.process.args))} (exit status {self.process.poll()}); "  # type: ignore[arg-type]
            f"log: {self.log.read_text(errors='replace')}"
        )


@contextmanager
def background(args: Sequence[str], log: Path) -> Iterator[Background]:
    """
    Run a foreign server; on the way out, stop it and every child it forked.

    It runs in a new session, so its process group holds it and its children (socat's
    C{fork}, ncat's C{--exec}) and nothing else.
    """
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Background(process, log)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(TIMEOUT)


def free_port(family: socket.AddressFamily, kind: socket.SocketKind) -> int:
    """A loopback port nothing uses right now (bound to port 0, then closed)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def wait_accepting(
    server: Background, family: socket.AddressFamily, address: str | tuple[str, int]
) -> None:
    """Wait until C{address} accepts stream connections (the server must use fork/-k)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited: {server.describe()}")
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(address)
            except OSError:
                pass
            else:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing accepts on {address} after {TIMEOUT} s")
        time.sleep(0.02)


def wait_echoing_udp(
    server: Background, family: socket.AddressFamily, host: str, port: int
) -> None:
    """Wait until a probe datagram to C{host}:C{port} comes back."""
    deadline = time.monotonic() + TIMEOUT
    probe_payload = b"probe " + secrets.token_hex(8).encode()
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        probe.settimeout(0.2)
        while True:
            if server.process.poll() is not None:
                raise AssertionError(f"the server exited: {server.describe()}")
            try:
                probe.send(probe_payload)
                if probe.recv(65536) == probe_payload:
                    return
            except TimeoutError:
                pass
            except OSError:  # refused: not bound yet
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise AssertionError(f"no UDP echo from {host}:{port} after {TIMEOUT} s")


def connect_env(cert_dir: Path) -> dict[str, str]:
    """The environment for C{echokit connect} with C{cert_dir} as its certificate directory."""
    return dict(os.environ, ECHOKIT_CERT_DIR=str(cert_dir))


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_dir() -> Iterator[Path]:
    """A temporary directory with a short path, for unix sockets (sun_path is 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ek-interop-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_certs(directory: Path) -> Path:
    """Run C{echokit certs --dir DIRECTORY} and return the directory."""
    result = run_echokit(["certs", "--dir", str(directory)], cert_dir=directory)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    for name in ("ca.pem", "server.pem", "server.key"):
        assert (directory / name).is_file(), name
    return directory


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate directory made by C{echokit certs}: CA, server and client pairs."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated echokit CA, which must not vouch for the first one's server."""
    return make_certs(tmp_path_factory.mktemp("other-certs"))


@dataclass
class Served:
    """The module's C{echokit serve}: its connect strings by transport, and its CA."""

    server: RunningServer
    cert_dir: Path
    strings: dict[str, str]
    unix_path: Path

    @property
    def ca(self) -> str:
        return str(self.cert_dir / "ca.pem")

    def port(self, name: str) -> int:
        return port_of(self.strings[name])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, short_dir: Path) -> Iterator[Served]:
    """
    One C{echokit serve} on every transport, bound to loopback, for the whole module.

    Its certificate directory starts empty, so the ssl listener uses certificates that
    echokit generated itself. Afterwards its log must hold no traceback.
    """
    cert_dir = tmp_path_factory.mktemp("serve-certs")
    unix_path = short_dir / "serve.sock"
    wanted = {
        "tcp": "tcp:0:interface=127.0.0.1",
        "tcp6": "tcp6:0:interface=\\:\\:1",
        "unix": f"unix:{unix_path}",
        "ssl": "ssl:0:interface=127.0.0.1",
        "udp": "udp:0",
    }
    if skip_reason(NO_IPV6):
        del wanted["tcp6"]
    with echokit_server(list(wanted.values()), cert_dir) as server:
        assert (cert_dir / "ca.pem").is_file(), server.announcements
        strings = dict(zip(wanted, server.connect_strings, strict=True))
        assert strings["unix"] == f"unix:path={escape(str(unix_path))}", strings
        yield Served(server, cert_dir, strings, unix_path)
        log = server.stop()
    assert "Traceback" not in log and "Unhandled" not in log, log


# --- echokit serve, answered by foreign clients -----------------------------------------


class SocatClientTests:
    """socat as the client of C{echokit serve}."""

    @pytest.mark.parametrize(
        "address",
        [
            pytest.param(lambda s: f"TCP:127.0.0.1:{s.port('tcp')}", id="tcp"),
            pytest.param(lambda s: f"TCP6:[::1]:{s.port('tcp6')}", id="tcp6", marks=needs_ipv6),
            pytest.param(lambda s: f"UNIX-CONNECT:{s.unix_path}", id="unix"),
        ],
    )
    def test_stream_echoes_every_byte_then_closes(
        self, served: Served, address: Callable[[Served], str]
    ) -> None:
        """
        socat streams 300 KiB of random bytes and half-closes at their end: echokit
        sends back exactly those bytes, then closes, so socat exits 0 on its own.
        """
        require_tool("socat")
        payload = os.urandom(STREAM_PAYLOAD)
        result = run_tool(["socat", "-t", "10", "-", address(served)], payload)
        assert result.returncode == 0, explain(result)
        assert result.stdout == payload, explain(result)

    @pytest.mark.parametrize(
        ("address", "size"),
        [
            pytest.param("UDP", MAX_UDP_PAYLOAD_IPV4, id="udp-connect-largest-datagram"),
            pytest.param("UDP-SENDTO", 1200, id="udp-sendto"),
        ],
    )
    def test_udp_echoes_one_datagram_intact(
        self, served: Served, tmp_path: Path, address: str, size: int
    ) -> None:
        """
        One datagram from socat (from an ephemeral port) comes back whole and unchanged,
        up to the largest IPv4 UDP payload (65,507 bytes).
        """
        require_tool("socat")
        payload = os.urandom(size)
        source = tmp_path / "datagram.bin"
        source.write_bytes(payload)
        # -b: read the file in one block, so it leaves as one datagram; -t 1: after the
        # end of the file, wait a second for the echo (UDP has no end of stream).
        target = f"{address}:127.0.0.1:{served.port('udp')}"
        with source.open("rb") as stdin:
            result = run_tool(["socat", "-b", "65536", "-t", "1", "-", target], stdin)
        assert result.returncode == 0, explain(result)
        assert result.stdout == payload, explain(result)

    def test_ssl_verified_echo(self, served: Served) -> None:
        """
        socat's OPENSSL client verifies echokit's generated certificate against ca.pem
        and gets 300 KiB back byte for byte; its stdin ends (socat then sends
        close_notify) once everything has come back, and it exits 0.
        """
        require_tool("socat")
        payload = os.urandom(STREAM_PAYLOAD)
        address = f"OPENSSL:localhost:{served.port('ssl')},pf=ip4,cafile={served.ca}"
        with conversation(["socat", "-t", "10", "-", address]) as talk:
            status = echo_in_lockstep(talk, payload, 64 * 1024)
            assert status == 0, talk.describe()
            assert talk.stdout == payload, talk.describe()

    def test_ssl_untrusted_ca_is_refused(self, served: Served, other_certs: Path) -> None:
        """socat trusting another CA refuses echokit's certificate: nothing is echoed."""
        require_tool("socat")
        address = f"OPENSSL:localhost:{served.port('ssl')},pf=ip4,cafile={other_certs / 'ca.pem'}"
        result = run_tool(["socat", "-t", "2", "-", address], b"must not be echoed\n")
        assert result.returncode != 0, explain(result)
        assert result.stdout == b""
        assert b"certificate verify failed" in result.stderr, explain(result)

    def test_ssl_close_notify_right_after_the_data_loses_nothing(self, tmp_path: Path) -> None:
        """
        socat sends 300 KiB and, at the end of its input, close_notify at once (TLS's
        way to say "no more data"): echokit should still echo every byte before closing.

        It has a server of its own: the connection this leaves behind can hold up the
        shared server's shutdown.
        """
        require_tool("socat")
        payload = os.urandom(STREAM_PAYLOAD)
        with echokit_server(["ssl:0:interface=127.0.0.1"], tmp_path) as server:
            port = port_of(server.connect_strings[0])
            address = f"OPENSSL:localhost:{port},pf=ip4,cafile={tmp_path / 'ca.pem'}"
            result = run_tool(["socat", "-t", "10", "-", address], payload)
        assert result.returncode == 0, explain(result)
        assert len(result.stdout) == len(payload), explain(result)
        assert result.stdout == payload


class NcatClientTests:
    """ncat (Nmap's netcat) as the client of C{echokit serve}."""

    def test_tcp_echoes_every_byte_then_closes(self, served: Served) -> None:
        """
        ncat sends 300 KiB, half-closes at the end of its input and exits 0 when echokit,
        having echoed exactly those bytes, closes.
        """
        require_tool("ncat")
        payload = os.urandom(STREAM_PAYLOAD)
        result = run_tool(["ncat", "127.0.0.1", str(served.port("tcp"))], payload)
        assert result.returncode == 0, explain(result)
        assert result.stdout == payload, explain(result)

    def test_ssl_verified_echo(self, served: Served) -> None:
        """
        ncat --ssl-verify accepts echokit's generated certificate for localhost, and 300 KiB
        come back byte for byte; ncat exits 0 when its input ends.

        ncat ends its input with a bare TCP half-close, which TLS does not have, so its
        stdin is closed only once everything has come back. ncat also reads TLS 8 KiB
        at a time and then waits on the socket, so the tail of a larger record would
        sit unread in its TLS buffer: 8 KiB steps keep every echoed record within that.
        """
        require_tool("ncat")
        payload = os.urandom(STREAM_PAYLOAD)
        args = ["ncat", "-4", "--ssl", "--ssl-verify", "--ssl-trustfile", served.ca]
        with conversation([*args, "localhost", str(served.port("ssl"))]) as talk:
            status = echo_in_lockstep(talk, payload, NCAT_STEP)
            assert status == 0, talk.describe()
            assert talk.stdout == payload, talk.describe()

    def test_ssl_untrusted_ca_is_refused(self, served: Served, other_certs: Path) -> None:
        """ncat --ssl-verify trusting another CA refuses echokit's certificate."""
        require_tool("ncat")
        args = ["ncat", "-4", "--ssl", "--ssl-verify", "--ssl-trustfile"]
        other = str(other_certs / "ca.pem")
        result = run_tool([*args, other, "localhost", str(served.port("ssl"))], b"secret\n")
        assert result.returncode != 0, explain(result)
        assert result.stdout == b""


class OpensslClientTests:
    """C{openssl s_client} as the client of echokit's ssl listener."""

    @pytest.mark.parametrize(("flag", "version"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
    def test_s_client_verifies_and_gets_its_line_back(
        self, served: Served, flag: str, version: str
    ) -> None:
        """
        s_client verifies echokit's generated certificate (chain to ca.pem, name
        localhost), negotiates the TLS version asked for, and gets its line back.
        """
        require_tool("openssl")
        line = b"echo " + secrets.token_hex(24).encode() + b"\n"
        args = [
            *("openssl", "s_client", "-connect", f"127.0.0.1:{served.port('ssl')}"),
            *("-servername", "localhost", "-verify_hostname", "localhost"),
            *("-CAfile", served.ca, "-verify_return_error", flag),
        ]
        with conversation(args) as talk:
            talk.send(line)
            talk.wait_for(lambda out: line in out, "the echoed line")
            # At the end of its input s_client sends close_notify and exits.
            status = talk.finish()
            out = talk.stdout
            assert status == 0, talk.describe()
        assert b"\n" + line in out, out.decode(errors="replace")
        assert b"Verification: OK" in out
        assert b"Verified peername: localhost" in out
        assert b"Verify return code: 0 (ok)" in out
        assert f"New, {version}, Cipher is ".encode() in out, out.decode(errors="replace")

    @pytest.mark.parametrize(
        ("extra", "code"),
        [
            pytest.param(
                (),
                b"Verify return code: 20 (unable to get local issuer certificate)",
                id="other-ca",
            ),
            pytest.param(
                ("-verify_hostname", "wrong.example"),
                b"Verify return code: 62 (hostname mismatch)",
                id="wrong-name",
            ),
        ],
    )
    def test_s_client_refuses_an_unverified_server(
        self, served: Served, other_certs: Path, extra: tuple[str, ...], code: bytes
    ) -> None:
        """
        The checks above are real: s_client fails (exit 1) against another CA, and
        against echokit's own CA when it expects another name.
        """
        require_tool("openssl")
        ca = str(other_certs / "ca.pem") if not extra else served.ca
        args = [
            *("openssl", "s_client", "-connect", f"127.0.0.1:{served.port('ssl')}"),
            *("-servername", "localhost", "-CAfile", ca, "-verify_return_error", *extra),
        ]
        result = run_tool(args, b"")
        assert result.returncode == 1, explain(result)
        assert code in result.stdout, result.stdout.decode(errors="replace")
        assert b"certificate verify failed" in result.stderr, explain(result)


# --- echokit connect, against foreign echo servers --------------------------------------


def echokit_connect(description: str, cert_dir: Path, payload: bytes) -> None:
    """Pipe C{payload} through C{echokit connect DESCRIPTION}: all of it must come back."""
    result = run_echokit(["connect", description], cert_dir, payload, timeout=TIMEOUT)
    assert result.returncode == 0, explain(result)
    assert result.stdout == payload, explain(result)
    assert result.stderr == b"", explain(result)


class SocatServerTests:
    """C{echokit connect} against socat echo servers (socat's PIPE address)."""

    def test_tcp(self, tmp_path: Path, certs: Path) -> None:
        """256 KiB through socat TCP-LISTEN on 127.0.0.1 come back byte for byte, exit 0."""
        require_tool("socat")
        port = free_port(socket.AF_INET, socket.SOCK_STREAM)
        listen = f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"
        with background(["socat", listen, "PIPE"], tmp_path / "socat.log") as server:
            wait_accepting(server, socket.AF_INET, ("127.0.0.1", port))
            echokit_connect(f"tcp:host=127.0.0.1:port={port}", certs, os.urandom(256 * 1024))

    @needs_ipv6
    def test_tcp6(self, tmp_path: Path, certs: Path) -> None:
        """256 KiB through socat TCP6-LISTEN on [::1] come back byte for byte, exit 0."""
        require_tool("socat")
        port = free_port(socket.AF_INET6, socket.SOCK_STREAM)
        listen = f"TCP6-LISTEN:{port},bind=[::1],reuseaddr,fork"
        with background(["socat", listen, "PIPE"], tmp_path / "socat.log") as server:
            wait_accepting(server, socket.AF_INET6, ("::1", port))
            echokit_connect(f"tcp6:host=\\:\\:1:port={port}", certs, os.urandom(256 * 1024))

    def test_unix(self, tmp_path: Path, short_dir: Path, certs: Path) -> None:
        """256 KiB through socat UNIX-LISTEN come back byte for byte, exit 0."""
        require_tool("socat")
        path = short_dir / "socat.sock"
        listen = f"UNIX-LISTEN:{path},fork"
        with background(["socat", listen, "PIPE"], tmp_path / "socat.log") as server:
            wait_accepting(server, socket.AF_UNIX, str(path))
            echokit_connect(f"unix:path={escape(str(path))}", certs, os.urandom(256 * 1024))

    @pytest.mark.parametrize(
        ("family", "host", "listen"),
        [
            pytest.param(socket.AF_INET, "127.0.0.1", "UDP4-RECVFROM:{},bind=127.0.0.1", id="udp"),
            pytest.param(
                socket.AF_INET6, "::1", "UDP6-RECVFROM:{},bind=[::1]", id="udp6", marks=needs_ipv6
            ),
        ],
    )
    def test_udp(
        self, tmp_path: Path, certs: Path, family: socket.AddressFamily, host: str, listen: str
    ) -> None:
        """
        Each stdin line goes to socat's UDP echo as one datagram and comes back intact:
        stdout equals stdin, exit 0 (no datagram lost).
        """
        require_tool("socat")
        port = free_port(family, socket.SOCK_DGRAM)
        # fork: one child per datagram, so the readiness probe does not capture the server.
        address = listen.format(port) + ",fork"
        lines = [
            b"\n",
            b"hello, socat\n",
            secrets.token_hex(600).encode() + b"\n",
            os.urandom(300).replace(b"\n", b"_") + b"\n",
            b"last line without a newline",
        ]
        with background(["socat", address, "PIPE"], tmp_path / "socat.log") as server:
            wait_echoing_udp(server, family, host, port)
            echokit_connect(f"udp:host={escape(host)}:port={port}", certs, b"".join(lines))

    @pytest.mark.parametrize("trust", ["default-ca", "trustRoots", "caCertsDir"])
    def test_ssl(self, tmp_path: Path, certs: Path, trust: str) -> None:
        """
        256 KiB through socat OPENSSL-LISTEN (echokit's server certificate, no client
        certificate asked) come back byte for byte, and echokit verified the server:
        against $ECHOKIT_CERT_DIR's CA by default (ssl:, name localhost), or against the
        CA that trustRoots= (tls:, IP address 127.0.0.1) or caCertsDir= (ssl:) name when
        the certificate directory is empty.
        """
        require_tool("socat")
        port = free_port(socket.AF_INET, socket.SOCK_STREAM)
        listen = (
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,"
            f"cert={certs / 'server.pem'},key={certs / 'server.key'},verify=0"
        )
        empty = tmp_path / "no-certs"
        empty.mkdir()
        if trust == "default-ca":
            description, cert_dir = f"ssl:host=localhost:port={port}", certs
        elif trust == "trustRoots":
            ca = escape(str(certs / "ca.pem"))
            description, cert_dir = f"tls:host=127.0.0.1:port={port}:trustRoots={ca}", empty
        else:
            ca_dir = escape(str(certs))
            description, cert_dir = f"ssl:host=localhost:port={port}:caCertsDir={ca_dir}", empty
        with background(["socat", listen, "PIPE"], tmp_path / "socat.log") as server:
            wait_accepting(server, socket.AF_INET, ("127.0.0.1", port))
            echokit_connect(description, cert_dir, os.urandom(256 * 1024))

    def test_ssl_server_from_another_ca_is_refused(
        self, tmp_path: Path, certs: Path, other_certs: Path
    ) -> None:
        """
        A socat TLS server whose certificate another CA signed is refused: echokit
        connect exits 1 with a message naming the trust problem, and echoes nothing.
        """
        require_tool("socat")
        port = free_port(socket.AF_INET, socket.SOCK_STREAM)
        listen = (
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,"
            f"cert={other_certs / 'server.pem'},key={other_certs / 'server.key'},verify=0"
        )
        with background(["socat", listen, "PIPE"], tmp_path / "socat.log") as server:
            wait_accepting(server, socket.AF_INET, ("127.0.0.1", port))
            result = run_echokit(
                ["connect", f"ssl:host=localhost:port={port}"], certs, b"secret\n", TIMEOUT
            )
        assert result.returncode == 1, explain(result)
        assert result.stdout == b""
        assert b"is not trusted by" in result.stderr, explain(result)


class NcatServerTests:
    """C{echokit connect} against C{ncat -l -k -e /bin/cat}, in clear and over TLS."""

    @pytest.mark.parametrize("tls", [False, True], ids=["tcp", "ssl"])
    def test_exec_cat(self, tmp_path: Path, certs: Path, tls: bool) -> None:
        """
        256 KiB through ncat's --exec /bin/cat echo come back byte for byte, and echokit
        connect exits 0 when its input ends.

        ncat's exec relay blocks writing to cat while cat blocks writing back (a deadlock
        past ~56 KiB in flight), and drops cat's pending output when the client
        half-closes, so the payload goes in 8 KiB steps and stdin ends after the echo
        (8 KiB also being what ncat reads of a TLS record at a time).
        """
        require_tool("ncat")
        port = free_port(socket.AF_INET, socket.SOCK_STREAM)
        args = ["ncat", "-l", "-k", "-e", "/bin/cat"]
        if tls:
            args += ["--ssl", "--ssl-cert", str(certs / "server.pem")]
            args += ["--ssl-key", str(certs / "server.key")]
        # TLS: by name, the one echokit's server certificate carries (as ssl: expects).
        description = (
            f"ssl:host=localhost:port={port}" if tls else f"tcp:host=127.0.0.1:port={port}"
        )
        payload = os.urandom(256 * 1024)
        with background([*args, "127.0.0.1", str(port)], tmp_path / "ncat.log") as server:
            wait_accepting(server, socket.AF_INET, ("127.0.0.1", port))
            with conversation([*ECHOKIT, "connect", description], connect_env(certs)) as talk:
                status = echo_in_lockstep(talk, payload, NCAT_STEP)
                assert status == 0, talk.describe()
                assert talk.stdout == payload, talk.describe()
                assert talk.stderr == b"", talk.describe()
