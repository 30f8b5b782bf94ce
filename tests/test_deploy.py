"""
Deployment: echokit under twistd, behind HAProxy's PROXY protocol (hand-made headers),
and installed from its wheel. Under systemd's C{systemd-socket-activate} and behind a
real HAProxy: C{tests/test_deploy_systemd.py}, C{tests/test_deploy_haproxy.py}.

Every server here is a real child process (C{twistd} or C{echokit serve}) whose output
is read as it comes; clients are plain sockets. Only loopback addresses are used (the
192.0.2.x and 198.51.100.x addresses of the PROXY tests are data inside the header,
never a destination). Every wait is bounded.

twistd children run from this checkout: C{PYTHONPATH} names its root so that Twisted
finds C{twisted/plugins/echokit_plugin.py} (an editable install does not put the
checkout on C{sys.path}). The packaging test checks the installed wheel instead, from a
fresh venv, with nothing imported from the checkout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from twisted.python import usage

from echokit.runtime.policy import ServerPolicy
from tests.halfclose import fill_until_server_holds_echo, read_to_end
from tests.support import ECHOKIT, CollectedProcess, port_of, unmet

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
LOOPBACK = "127.0.0.1"
TCP = "tcp:0:interface=127.0.0.1"
HAPROXY = "haproxy:tcp:0:interface=127.0.0.1"

#: The PROXY v1 header of the tests: a client 192.0.2.10:56324 reached 198.51.100.1:443.
PROXY_V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"


def proxy_v2(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    """A PROXY v2 header: PROXY command over TCP/IPv4, the addresses given, no TLVs."""
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = (
        socket.inet_aton(source)
        + socket.inet_aton(destination)
        + struct.pack("!HH", source_port, destination_port)
    )
    return signature + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


PROXY_V2 = proxy_v2("192.0.2.20", "198.51.100.1", 50000, 443)


# --- child processes ---------------------------------------------------------------


class Child(CollectedProcess):
    """A server child process, its stdout and stderr collected line by line."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> None:
        super().__init__(argv, cwd=cwd, env=dict(env), pass_fds=tuple(pass_fds))

    def text(self) -> str:
        """Everything read so far, stdout then stderr."""
        with self._changed:
            return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)

    def announcements(self) -> list[str]:
        with self._changed:
            return [line for line in self.out if " -> echokit connect " in line]

    def wait_announced(self, count: int, seconds: float = 30) -> list[str]:
        """The connect strings of the first C{count} listeners announced on stdout."""
        self.wait_for(lambda: len(self.announcements()) >= count or not self._open_streams, seconds)
        lines = self.announcements()
        if len(lines) < count:
            self.kill()
            raise AssertionError(f"{self.argv} did not announce {count} listeners:\n{self.text()}")
        return [shlex.split(line.split(" -> echokit connect ", 1)[1])[0] for line in lines[:count]]

    def stop(self, signum: int = signal.SIGTERM, seconds: float = 20) -> int:
        """Send C{signum}, wait for the exit and for all output; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} did not exit within {seconds} s") from None
        self.wait_for(lambda: not self._open_streams, 5)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], pass_fds: Sequence[int] = ()
) -> Iterator[Child]:
    """Run a child; kill it at the end if the test has not stopped it."""
    child = Child(argv, cwd, env, pass_fds)
    try:
        yield child
    finally:
        child.kill()


def child_env(cert_dir: Path, checkout: bool = False) -> dict[str, str]:
    """The environment of a server child; C{checkout}: put this checkout on sys.path."""
    env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_dir), PYTHONUNBUFFERED="1")
    if checkout:
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(REPO), os.environ.get("PYTHONPATH", "")) if part
        )
    return env


def twistd(*args: str) -> list[str]:
    return [str(TWISTD), "-n", "--pidfile=", *args]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def twistd_fails(tmp_path: Path, *listens: str) -> str:
    """
    Run C{twistd -n echokit --listen L...}, which must exit 1 without a traceback; its
    stdout and stderr together.
    """
    result = subprocess.run(
        twistd("echokit", *(arg for d in listens for arg in ("--listen", d))),
        cwd=tmp_path,
        env=child_env(tmp_path / "certs", checkout=True),
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 1, output
    no_traceback(output)
    return output


# --- plain-socket clients ----------------------------------------------------------


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=timeout)


def stream_echo(port: int, payload: bytes, prefix: bytes = b"", timeout: float = 10.0) -> bytes:
    """
    Send C{prefix + payload}, half-close, and read until the server closes.

    A reader thread reads while the payload is sent, so a payload larger than the
    socket buffers cannot deadlock against the server's backpressure.
    """
    with connect(port, timeout) as sock:
        received = bytearray()
        reader = threading.Thread(target=read_all, args=(sock, received), daemon=True)
        reader.start()
        sock.sendall(prefix + payload)
        sock.shutdown(socket.SHUT_WR)
        reader.join(timeout)
        assert not reader.is_alive(), f"no end of echo within {timeout} s"
        return bytes(received)


def read_all(sock: socket.socket, into: bytearray) -> None:
    """Append what C{sock} receives to C{into} until EOF, a reset or the timeout."""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(1 << 16):
            into += chunk


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """Read C{size} bytes (fewer if the connection ends first)."""
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def nothing_more(sock: socket.socket, seconds: float = 0.3) -> bool:
    """C{True} if nothing more arrives within C{seconds} (the connection still open)."""
    sock.settimeout(seconds)
    try:
        return not sock.recv(1)
    except TimeoutError:
        return True


def udp_echo(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((LOOPBACK, port))
        sock.send(payload)
        return sock.recv(65_536)


def summary_line(text: str, listener: str) -> str:
    """The shutdown summary's line for C{listener}."""
    for line in text.splitlines():
        if line.strip().startswith(f"{listener}: "):
            return line.strip()
    raise AssertionError(f"no summary line for {listener}:\n{text}")


def serve_error(description: str) -> str:
    """The one-line message C{echokit serve DESCRIPTION} fails with (without its prefix)."""
    result = subprocess.run(
        [*ECHOKIT, "serve", description], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2, result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("echokit: error: "), lines
    return lines[0].removeprefix("echokit: error: ")


# --- twistd ----------------------------------------------------------------------


class TwistdPluginTests:
    def test_twistd_echoes_tcp_and_udp_and_stops_with_a_summary(self, tmp_path: Path) -> None:
        """
        C{twistd -n echokit --listen tcp:... --listen udp:0} announces both listeners on
        stdout, echoes exact bytes over each, and on SIGTERM drains and writes the summary.
        """
        env = child_env(tmp_path / "certs", checkout=True)
        argv = twistd("echokit", "--listen", TCP, "--listen", "udp:0")
        with running(argv, tmp_path, env) as child:
            tcp, udp = child.wait_announced(2)
            assert tcp.startswith("tcp:host=127.0.0.1:port=") and udp.startswith("udp:")
            payload = bytes(range(256)) * 257 + b"\r\n\x00end"
            assert stream_echo(port_of(tcp), payload) == payload
            datagram = b"\x00datagram\xff" * 100
            assert udp_echo(port_of(udp), datagram) == datagram
            status = child.stop(signal.SIGTERM)
        text = child.text()
        # twistd stops on SIGTERM, then ends the process with the same signal.
        assert status == -signal.SIGTERM, text
        no_traceback(text)
        assert "stopping: stopped accepting; letting open connections finish for up to 5 s" in text
        assert summary_line(text, TCP) == (
            f"{TCP}: 1 connections, {len(payload):,} bytes echoed, 0 refused over limits, "
            "0 shed for other addresses, 0 timed out, 0 errors"
        )
        assert summary_line(text, "udp:0") == (
            f"udp:0: 1 datagrams ({len(datagram):,} bytes) echoed, 0 dropped, 0 errors"
        )
        assert not (tmp_path / "twistd.pid").exists()

    def test_second_signal_during_the_drain_exits_at_once(self, tmp_path: Path) -> None:
        """
        With a connection still open, SIGTERM starts a drain of up to C{--drain} seconds;
        a second SIGTERM during it ends the process at once (status 143), as under
        C{echokit serve}.
        """
        argv = twistd("echokit", "--drain", "30", "--listen", TCP)
        with running(argv, tmp_path, child_env(tmp_path / "certs", checkout=True)) as child:
            (connect_string,) = child.wait_announced(1)
            with connect(port_of(connect_string)) as held:
                held.sendall(b"still here")
                assert read_exactly(held, 10) == b"still here"
                child.process.send_signal(signal.SIGTERM)
                assert child.wait_for(lambda: "a second signal exits at once" in child.text(), 10)
                started = time.monotonic()
                status = child.stop(signal.SIGTERM, seconds=10)
                elapsed = time.monotonic() - started
        assert status == 128 + signal.SIGTERM, child.text()
        assert elapsed < 5
        no_traceback(child.text())

    @pytest.mark.parametrize("description", ["tcp:notaport", "bogus:16000", "udp:16000:bad"])
    def test_bad_listen_string_is_one_line_and_exits_nonzero(
        self, tmp_path: Path, description: str
    ) -> None:
        """
        A bad C{--listen} string is a usage error carrying the very one-line message
        C{echokit serve} gives, with no traceback; nothing is started.
        """
        message = serve_error(description)
        output = twistd_fails(tmp_path, TCP, description)
        # twistd prints its usage, then "<argv0> -n: <message>" as the last line.
        assert output.rstrip().splitlines()[-1].endswith(f" -n: {message}"), output
        assert "listening on" not in output

    @pytest.mark.parametrize("first", [True, False], ids=["first-endpoint", "second-endpoint"])
    def test_listen_failure_exits_1_with_one_line(self, tmp_path: Path, first: bool) -> None:
        """
        When an endpoint cannot listen (its port is taken), twistd logs one line,
        C{echokit: error: cannot listen on ...}, and exits 1 instead of running idle:
        whether it is the first endpoint (known at once) or a later one (known once
        the listeners already started have stopped, a turn of the reactor later).
        """
        with socket.socket() as taken:
            taken.bind((LOOPBACK, 0))
            taken.listen()
            busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            listens = [busy, "udp:0"] if first else ["udp:0", busy]
            output = twistd_fails(tmp_path, *listens)
        errors = [line for line in output.splitlines() if "echokit: error:" in line]
        assert len(errors) == 1, output
        port = busy.split(":")[1]
        assert errors[0].endswith(
            f"echokit: error: cannot listen on '{busy}': Address already in use: another "
            f"program holds port {port}; stop it, or choose another port "
            "(0 picks a free one)"
        )
        assert "listening on" not in output
        assert "summary:" not in output

    def test_options_are_serves_limits_with_the_same_defaults(self, tmp_path: Path) -> None:
        """
        The plugin's options build the same L{ServerPolicy} as C{echokit serve}'s flags,
        with ServerPolicy's defaults, and makeService wraps the shared L{EchoService}.
        """
        from echokit.server.serve import EchoService
        from echokit.server.twistd import Options, TwistdEchoService, makeService

        defaults = Options()
        defaults.parseOptions(["--listen", TCP, "--cert-dir", str(tmp_path)])
        assert defaults.policy == ServerPolicy()
        assert [spec.text for spec in defaults.specs] == [TCP]

        ca = tmp_path / "ca.pem"
        ca.write_text("not parsed here")
        given = Options()
        given.parseOptions(
            [
                *("--listen", TCP, "--listen", "udp:0", "--cert-dir", str(tmp_path)),
                *("--idle-timeout", "7.5", "--handshake-timeout", "2", "--max-connections", "9"),
                *("--max-per-peer", "3", "--drain", "0.5", "--udp-repeat-burst", "4"),
                *("--udp-repeat-rate", "1.5", "--require-client-cert", "--client-ca", str(ca)),
            ]
        )
        assert given.policy == ServerPolicy(
            idle_timeout=7.5,
            handshake_timeout=2.0,
            max_connections=9,
            max_per_peer=3,
            drain=0.5,
            udp_repeat_burst=4,
            udp_repeat_rate=1.5,
            require_client_cert=True,
            client_ca=ca,
        )
        service = makeService(given)
        assert isinstance(service, TwistdEchoService)
        assert isinstance(service.echo, EchoService)
        assert service.echo.policy == given.policy
        assert service.echo.certs.directory == tmp_path

        for args, message in [
            (["--idle-timeout", "-1"], "--idle-timeout: -1 is not a number >= 0"),
            (["--max-connections", "2.5"], "--max-connections: '2.5' is not a whole number"),
            (["--client-ca", str(ca)], "--client-ca only applies with --require-client-cert"),
            ([], None),
        ]:
            options = Options()
            with pytest.raises(usage.UsageError) as raised:
                options.parseOptions(args if message is None else ["--listen", TCP, *args])
            if message is None:
                assert "give at least one --listen" in str(raised.value)
            else:
                assert str(raised.value).startswith(message)

    def test_daemon_announces_and_summarizes_in_its_log(self, tmp_path: Path) -> None:
        """
        Without C{-n} (a daemon, whose stdout is /dev/null), the announcements and the
        summary go to twistd's log file; SIGTERM stops it and twistd removes its pidfile.
        """
        pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
        argv = [str(TWISTD), f"--pidfile={pidfile}", f"--logfile={logfile}", "echokit"]
        env = child_env(tmp_path / "certs", checkout=True)
        pid = 0
        try:
            started = subprocess.run(
                [*argv, "--listen", TCP], cwd=tmp_path, env=env, timeout=60, check=False
            )
            assert started.returncode == 0
            pid = int(pidfile.read_text())
            line = wait_for_line(logfile, " -> echokit connect ", 30)
            assert "[echokit.serve#info] tcp:0:interface=127.0.0.1 listening on 127.0.0.1:" in line
            connect_string = shlex.split(line.split(" -> echokit connect ", 1)[1])[0]
            assert stream_echo(port_of(connect_string), b"daemon\n") == b"daemon\n"
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                if not pidfile.exists():
                    break
                time.sleep(0.05)
            assert not pidfile.exists(), logfile.read_text()
        finally:
            if pid and pidfile.exists():
                os.kill(pid, signal.SIGKILL)
        log = logfile.read_text()
        no_traceback(log)
        assert re.search(
            r"\[echokit\.serve#info\]   tcp:0:interface=127\.0\.0\.1: 1 connections", log
        )

    def test_privileged_port_is_bound_before_dropping_privileges(self, tmp_path: Path) -> None:
        """
        C{twistd -u 65534 -g 65534 echokit --listen tcp:PORT} with PORT below 1024 listens
        while still root (privilegedStartService), then echoes as uid 65534.
        """
        if os.geteuid() != 0:
            unmet("needs root to bind a port below 1024")
        port = free_privileged_port()
        description = f"tcp:{port}:interface=127.0.0.1"
        argv = [str(TWISTD), "-n", "--pidfile=", "-u", "65534", "-g", "65534", "echokit"]
        env = child_env(tmp_path / "certs", checkout=True)
        with running([*argv, "--listen", description], tmp_path, env) as child:
            (connect_string,) = child.wait_announced(1)
            assert port_of(connect_string) == port
            assert child.wait_for(lambda: "set uid/gid 65534/65534" in child.text(), 10)
            status = Path(f"/proc/{child.process.pid}/status").read_text()
            assert re.search(r"^Uid:\s+65534\s", status, re.MULTILINE), status
            assert stream_echo(port, b"port below 1024\n") == b"port below 1024\n"
            assert child.stop() == -signal.SIGTERM
        no_traceback(child.text())


def wait_for_line(path: Path, fragment: str, seconds: float) -> str:
    """The first line of file C{path} containing C{fragment}, waiting up to C{seconds}."""
    for _ in range(int(seconds / 0.05)):
        if path.exists():
            for line in path.read_text().splitlines():
                if fragment in line:
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {fragment!r} in {path} within {seconds} s")


def free_privileged_port() -> int:
    """A loopback TCP port below 1024 that nothing listens on now."""
    for port in range(990, 700, -1):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    unmet("no free port below 1024 on 127.0.0.1")


# --- HAProxy PROXY protocol -------------------------------------------------------


def serve(tmp_path: Path, *args: str) -> contextlib.AbstractContextManager[Child]:
    """Run C{echokit serve ARGS}, logging on stderr."""
    return running([*ECHOKIT, "serve", *args], tmp_path, child_env(tmp_path / "certs"))


def wait_closed(server: Child, count: int, seconds: float = 10) -> bool:
    """Wait until the server has logged C{count} closed connections."""
    return server.wait_for(
        lambda: sum(" closed on " in line for line in server.err) >= count, seconds
    )


class HAProxyTests:
    @pytest.mark.parametrize(
        ("version", "header"), [("v1", PROXY_V1), ("v2", PROXY_V2)], ids=["v1", "v2"]
    )
    def test_proxy_header_is_never_echoed(
        self, tmp_path: Path, version: str, header: bytes
    ) -> None:
        """
        Behind C{haproxy:tcp:...}, a PROXY header followed by data (in the same segment,
        then more data later) gets exactly the data back, never the header.
        """
        first = f"first, after a PROXY {version} header\r\n".encode() + bytes(range(256))
        second = b"PROXY TCP4 is only data now\r\n"
        with serve(tmp_path, HAPROXY) as server:
            (connect_string,) = server.wait_announced(1)
            with connect(port_of(connect_string), timeout=5) as sock:
                sock.sendall(header + first)
                assert read_exactly(sock, len(first)) == first
                sock.sendall(second)
                assert read_exactly(sock, len(second)) == second
                assert nothing_more(sock)

    def test_log_names_the_client_from_the_header(self, tmp_path: Path) -> None:
        """
        The server's log lines for a connection behind PROXY name the client the header
        gives (192.0.2.10:56324 for v1, 192.0.2.20:50000 for v2), not the proxy's address.
        """
        with serve(tmp_path, HAPROXY) as server:
            (connect_string,) = server.wait_announced(1)
            port = port_of(connect_string)
            for header in (PROXY_V1, PROXY_V2):
                with connect(port, timeout=5) as sock:
                    sock.sendall(header + b"hello")
                    assert read_exactly(sock, 5) == b"hello"
            assert wait_closed(server, 2), server.text()
        lines = [line for line in server.err if " connection from " in line]
        for client in ("192.0.2.10:56324", "192.0.2.20:50000"):
            opened = f"haproxy connection from {client} opened on {HAPROXY}"
            assert any(opened in line for line in lines), "\n".join(lines)
            assert any(f"from {client} closed on" in line for line in lines), "\n".join(lines)

    def test_tls_behind_proxy_reads_the_header_before_the_handshake(self, tmp_path: Path) -> None:
        """
        C{haproxy:ssl:...} is what HAProxy's C{server ... ssl send-proxy} talks to: the
        PROXY header comes in clear, then the TLS handshake. The echo is exact and the
        log names the client from the header, with the negotiated TLS version.
        """
        listener = "haproxy:ssl:0:interface=127.0.0.1"
        with serve(tmp_path, listener) as server:
            (connect_string,) = server.wait_announced(1)
            context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
            with connect(port_of(connect_string), timeout=5) as raw:
                raw.sendall(PROXY_V1)
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    payload = os.urandom(100_000)
                    tls.sendall(payload)
                    assert read_exactly(tls, len(payload)) == payload
            assert wait_closed(server, 1), server.text()
        opened = [line for line in server.err if " opened on " in line]
        assert len(opened) == 1, server.text()
        assert f"connection from 192.0.2.10:56324 opened on {listener} (TLSv1." in opened[0]

    def test_header_timeout_applies_under_tls_too(self, tmp_path: Path) -> None:
        """
        Behind C{haproxy:ssl:...}, a connection that sends no PROXY header is closed after
        --handshake-timeout (0.5 s here), as behind C{haproxy:tcp:...}.
        """
        listener = "haproxy:ssl:0:interface=127.0.0.1"
        with serve(tmp_path, "--handshake-timeout", "0.5", listener) as server:
            (connect_string,) = server.wait_announced(1)
            with connect(port_of(connect_string), timeout=5) as sock:
                started = time.monotonic()
                with contextlib.suppress(ConnectionResetError):  # aborted: a reset
                    assert sock.recv(100) == b""
                assert time.monotonic() - started < 3.0

    def test_per_peer_limit_behind_proxy_releases_closed_connections(self, tmp_path: Path) -> None:
        """
        With C{--max-per-peer 1}, one client reaching echokit through a PROXY proxy
        three times in a row (each connection closed before the next) is echoed every
        time.
        """
        with serve(tmp_path, "--max-per-peer", "1", HAPROXY) as server:
            (connect_string,) = server.wait_announced(1)
            port = port_of(connect_string)
            for attempt in range(3):
                message = f"attempt {attempt}\n".encode()
                assert stream_echo(port, message, prefix=PROXY_V1) == message, server.text()
                assert wait_closed(server, attempt + 1), server.text()

    def test_per_peer_limit_behind_proxy_counts_each_client(self, tmp_path: Path) -> None:
        """
        With C{--max-per-peer 1}, two clients behind one proxy (one proxy address, two
        header addresses) are both served at once, while a second connection from the
        first client, with the first still open, is refused: the limit counts the
        client the header names, not the proxy.
        """
        first_client = proxy_v2("192.0.2.30", "198.51.100.1", 40000, 443)
        second_client = proxy_v2("192.0.2.31", "198.51.100.1", 40001, 443)
        first_again = proxy_v2("192.0.2.30", "198.51.100.1", 40002, 443)
        with serve(tmp_path, "--max-per-peer", "1", HAPROXY) as server:
            (connect_string,) = server.wait_announced(1)
            port = port_of(connect_string)
            with connect(port, timeout=5) as one, connect(port, timeout=5) as two:
                one.sendall(first_client + b"client one")
                assert read_exactly(one, 10) == b"client one", server.text()
                two.sendall(second_client + b"client two")
                assert read_exactly(two, 10) == b"client two", server.text()
                with connect(port, timeout=5) as again:
                    with contextlib.suppress(OSError):  # the refusal may reset the connection
                        again.sendall(first_again + b"refused")
                    again.settimeout(5)
                    with contextlib.suppress(ConnectionResetError):
                        assert again.recv(100) == b"", "a 2nd connection from 192.0.2.30 was echoed"
                one.sendall(b"still one")
                assert read_exactly(one, 9) == b"still one"
            assert server.wait_for(lambda: "refused a connection" in server.text(), 5)
        refused = [line for line in server.err if "refused a connection" in line]
        assert len(refused) == 1 and "192.0.2.30:40002" in refused[0], refused

    @pytest.mark.parametrize(
        "description",
        [
            pytest.param(TCP, id="tcp"),
            pytest.param(HAPROXY, id="haproxy"),
        ],
    )
    def test_half_close_echoes_everything(self, tmp_path: Path, description: str) -> None:
        """
        Behind a PROXY header as on plain tcp, the client's FIN is a half-close passed on
        to the echo: the client reads nothing until the server holds echo it cannot send
        yet (L{tests.halfclose}), then half-closes; every byte still comes back.
        """
        prefix = PROXY_V1 if description == HAPROXY else b""
        with serve(tmp_path, description) as server:
            (connect_string,) = server.wait_announced(1)
            with connect(port_of(connect_string)) as sock:
                sock.sendall(prefix)
                held = fill_until_server_holds_echo(sock)
                sock.shutdown(socket.SHUT_WR)
                time.sleep(0.3)  # the server reads the FIN now, with echo still queued
                received = read_to_end(sock)
        assert held.in_server > 0
        assert len(received) == len(held.sent), server.text()
        assert received == held.sent


# --- packaging ----------------------------------------------------------------------

#: What the source tree copy for building leaves out.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".*_cache",
    ".hypothesis",
    "certs",
    "dropin.cache",
    "tests",
    # trial's temporary directories under pytest (tests.MODULE/), which can hold unix
    # sockets a failed test left behind: copytree cannot copy those.
    "tests.*",
    "_trial_temp",
)


class Deadline:
    """What is left of an overall time budget, for each step's own timeout."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, at_most: float) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the packaging test ran out of time")
        return min(at_most, remaining)


PROBE_OPTIONS = ("--retries", "0", "--timeout", "10")


def package_index_unreachable() -> str | None:
    """
    Why pip cannot reach its package index (PyPI unless pip is configured otherwise),
    or C{None} if it can: the packaging test needs it, for the build backend (an isolated
    build) and for the fresh venv's Twisted and other dependencies.
    """
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "setuptools", *PROBE_OPTIONS],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if probe.returncode == 0:
        return None
    said = (probe.stderr or probe.stdout).decode(errors="replace").strip().splitlines()
    return (
        "the packaging test needs pip's package index (PyPI) to build the wheel and install "
        f"its dependencies, and pip cannot reach it: {said[-1] if said else probe.returncode}"
    )


@pytest.mark.packaging
class PackagingTests:
    def test_wheel_installs_into_a_fresh_venv_and_runs(self, tmp_path: Path) -> None:
        """
        Build the sdist and the wheel, install the wheel into a fresh venv and, from
        outside the checkout: C{echokit --version}, C{echokit serve} + C{echokit connect},
        C{twistd --help} listing echokit (also with a stale and with an unusable
        dropin.cache), and C{twistd -n echokit} echoing; uninstalling leaves Twisted's
        plugins intact.
        """
        index = package_index_unreachable()
        if index is not None:
            unmet(index)
        deadline = Deadline(300)
        source, dist, venv, work = (tmp_path / name for name in ("src", "dist", "venv", "work"))
        shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
        work.mkdir()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_NO_CACHE_DIR")
        }
        env.update(ECHOKIT_CERT_DIR=str(work / "certs"), PYTHONUNBUFFERED="1")

        def run(*argv: str | Path, seconds: float = 120) -> str:
            result = subprocess.run(
                [str(arg) for arg in argv],
                cwd=work,
                env=env,
                capture_output=True,
                timeout=deadline.left(seconds),
                check=False,
            )
            output = result.stdout.decode() + result.stderr.decode()
            assert result.returncode == 0, f"{argv}:\n{output}"
            return result.stdout.decode()

        run(sys.executable, "-m", "build", "--outdir", dist, source, seconds=240)
        (wheel,) = dist.glob("echokit-*.whl")
        (sdist,) = dist.glob("echokit-*.tar.gz")
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        assert "twisted/plugins/echokit_plugin.py" in names
        assert "echokit/server/twistd.py" in names
        assert not {n for n in names if n.startswith("twisted/") and "echokit" not in n}, names
        with tarfile.open(sdist) as tar:
            members = tar.getnames()
        assert any(m.endswith("/twisted/plugins/echokit_plugin.py") for m in members)

        run(sys.executable, "-m", "venv", venv, seconds=60)
        python, bin_dir = venv / "bin" / "python", venv / "bin"
        site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        plugins = Path(site.strip()) / "twisted" / "plugins"
        # Twisted first, and its plugin cache written before echokit exists: stale.
        run(python, "-m", "pip", "install", "--quiet", "twisted[tls]>=24.7", seconds=180)
        assert "echokit" not in run(bin_dir / "twistd", "--help")
        assert (plugins / "dropin.cache").is_file()
        run(python, "-m", "pip", "install", "--quiet", wheel, seconds=180)
        assert "echokit" in run(bin_dir / "twistd", "--help")
        # A cache that can be neither read nor replaced (a directory in its place: root
        # ignores permission bits) must not hide the plugin either.
        (plugins / "dropin.cache").unlink()
        (plugins / "dropin.cache").mkdir()
        try:
            assert "echokit" in run(bin_dir / "twistd", "--help")
        finally:
            (plugins / "dropin.cache").rmdir()

        where = run(
            python,
            "-c",
            "import echokit, echokit.server.twistd, twisted.plugins.echokit_plugin as p; "
            "print(echokit.__file__); print(p.__file__)",
        )
        for path in where.split():
            assert Path(path).is_relative_to(venv), where
        assert run(bin_dir / "echokit", "--version").strip() == "echokit, version 1.0.0"

        payload = b"from the installed wheel\n"
        for argv in (
            [bin_dir / "echokit", "serve", TCP],
            [bin_dir / "twistd", "-n", "--pidfile=", "echokit", "--listen", TCP],
        ):
            with running([str(arg) for arg in argv], work, env) as child:
                (connect_string,) = child.wait_announced(1, deadline.left(30))
                echoed = subprocess.run(
                    [str(bin_dir / "echokit"), "connect", connect_string],
                    input=payload,
                    cwd=work,
                    env=env,
                    capture_output=True,
                    timeout=deadline.left(30),
                    check=False,
                )
                assert echoed.returncode == 0, echoed
                assert echoed.stdout == payload
                child.stop()
            no_traceback(child.text())
            assert "summary:" in child.text()

        run(python, "-m", "pip", "uninstall", "--quiet", "--yes", "echokit")
        assert not (plugins / "echokit_plugin.py").exists()
        assert (plugins / "__init__.py").is_file()
        assert "web " in run(bin_dir / "twistd", "--help")
