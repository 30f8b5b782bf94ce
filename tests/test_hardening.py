"""
Hardening: what an echokit server does under abuse, overload and shutdown.

Process-level behaviour (memory, file descriptors, signals, resource limits, logs) is
checked against a real C{echokit serve} child (L{Server}), whose stdout and stderr are
read as they come so that a chatty server never blocks on a full pipe. Behaviour that
needs the server's own counters or precise timing is checked in-process, on trial's
reactor (L{EchoSession}).

Only loopback addresses and unix sockets in temporary directories are used; every
loop is bounded in iterations and in time. Tests marked C{stress} are the slow ones
(several seconds each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import resource
import select
import selectors
import shlex
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from twisted.internet import reactor, task
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from echokit.runtime.policy import ServerPolicy
from echokit.transports import stream as echokit_stream
from echokit.transports.datagram import EchoDatagramServer
from echokit.transports.stream import EchoServerFactory
from tests.realnet import EchoSession, cert_store, deferred_test, eventually
from tests.support import ECHOKIT, CollectedProcess, port_of, unmet

LOOPBACK = "127.0.0.1"
TCP = "tcp:0:interface=127.0.0.1"
SSL = "ssl:0:interface=127.0.0.1"

stress = pytest.mark.stress


def report(test: str, **figures: object) -> None:
    """Print what a test measured (shown with C{pytest -s} or C{-rP})."""
    shown = ", ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\n[{test}] {shown}")


# --- a real `echokit serve` child ---------------------------------------------------


class Server(CollectedProcess):
    """An C{echokit serve DESCRIPTIONS FLAGS} child, its output collected line by line."""

    def __init__(
        self,
        descriptions: Sequence[str],
        flags: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_store().directory), PYTHONUNBUFFERED="1")
        super().__init__([*ECHOKIT, "serve", *descriptions, *flags], env=env, preexec_fn=preexec_fn)
        announced = self.wait_for(
            lambda: len(self.announcements) >= len(descriptions) or not self._open_streams, 30
        )
        if not announced or len(self.announcements) < len(descriptions):
            self.close()
            raise AssertionError(f"echokit serve did not announce its listeners: {self.err_text()}")

    @property
    def announcements(self) -> list[str]:
        return [line for line in self.out if " listening on " in line]

    def connect_string(self, index: int = 0) -> str:
        return shlex.split(self.announcements[index].split(" -> echokit connect ", 1)[1])[0]

    def port(self, index: int = 0) -> int:
        return port_of(self.connect_string(index))

    @property
    def pid(self) -> int:
        return self.process.pid

    def err_text(self) -> str:
        with self._changed:
            return "\n".join(self.err)

    def out_text(self) -> str:
        with self._changed:
            return "\n".join(self.out)

    def rss_kib(self) -> int:
        """The child's resident set size, from C{/proc/PID/status}."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1))

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def settled_fd_count(self, seconds: float = 2.0) -> int:
        """The fd count once it has not changed for 0.3 s (bounded by C{seconds})."""
        count = self.fd_count()
        for _ in range(int(seconds / 0.3) + 1):
            time.sleep(0.3)
            now = self.fd_count()
            if now == count:
                return now
            count = now
        return count

    def wait_fd_count(self, target: int, seconds: float) -> int:
        """Poll until the fd count is at most C{target} (bounded); return the last count."""
        count = self.fd_count()
        for _ in range(int(seconds / 0.05) + 1):
            if count <= target:
                break
            time.sleep(0.05)
            count = self.fd_count()
        return count

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, seconds: float) -> int | None:
        """Wait up to C{seconds} for the child to exit; its status, or C{None}."""
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, seconds: float = 15) -> int:
        """SIGTERM, wait for the exit and for all output; return the exit status."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        status = self.wait(seconds)
        if status is None:
            self.process.kill()
            status = self.process.wait()
        self.wait_for(lambda: not self._open_streams, 5)
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.wait_for(lambda: not self._open_streams, 5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def serving(
    descriptions: Sequence[str],
    *flags: str,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Server]:
    """Run C{echokit serve}; kill it at the end if the test has not stopped it."""
    server = Server(descriptions, flags, preexec_fn)
    try:
        yield server
    finally:
        server.close()


# --- plain-socket clients -------------------------------------------------------------


def connect(port: int, source: str = LOOPBACK, timeout: float = 5.0) -> socket.socket:
    """A blocking tcp connection to loopback C{port}, from address C{source}."""
    return socket.create_connection((LOOPBACK, port), timeout=timeout, source_address=(source, 0))


def roundtrip(sock: socket.socket, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send a small C{payload} and read back as many bytes (fewer if the peer closes)."""
    sock.settimeout(timeout)
    sock.sendall(payload)
    got = bytearray()
    for _ in range(len(payload) + 1):
        if len(got) >= len(payload):
            break
        chunk = sock.recv(len(payload) - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def exchange(sock: socket.socket, payload: bytes, timeout: float = 10.0) -> bytes:
    """
    Send C{payload}, half-close, and read until the server closes: all it sent back.

    Sends and reads together (non-blocking), so a payload larger than the socket
    buffers cannot deadlock.
    """
    sock.setblocking(False)
    view = memoryview(payload)
    sent = 0
    received = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        if not payload:
            sock.shutdown(socket.SHUT_WR)
            selector.modify(sock, selectors.EVENT_READ)
        for _ in range(1_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for _, events in selector.select(left):
                if events & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(1 << 18)
                    except BlockingIOError:
                        chunk = None
                    if chunk == b"":
                        return bytes(received)
                    received += chunk or b""
                if events & selectors.EVENT_WRITE and sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(view[sent : sent + (1 << 18)])
                    if sent == len(payload):
                        sock.shutdown(socket.SHUT_WR)
                        selector.modify(sock, selectors.EVENT_READ)
    raise AssertionError(
        f"no end of echo within {timeout} s: sent {sent} of {len(payload)}, "
        f"got {len(received)} back"
    )


def echo(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Open a connection, send C{payload}, half-close, return the whole echo."""
    with connect(port, timeout=timeout) as sock:
        return exchange(sock, payload, timeout)


def closed_within(sock: socket.socket, seconds: float, tls_alert: bool = False) -> float | None:
    """
    Seconds until the peer closes C{sock} (EOF or reset), or C{None} if it does not.

    Fails if the peer sends anything: these connections should get nothing, except, with
    C{tls_alert}, one TLS alert record (a TLS server says why it gives up a handshake).
    """
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        data = sock.recv(1 << 16)
        if tls_alert and data[:2] == b"\x15\x03" and len(data) == 7:  # type, version, 2 bytes
            data = sock.recv(1 << 16)
    except (ConnectionResetError, ConnectionAbortedError):
        return time.monotonic() - started
    except TimeoutError:
        return None
    if not data:
        return time.monotonic() - started
    raise AssertionError(f"expected the server to close, got {data[:50]!r}")


def refused_within(port: int, seconds: float) -> float | None:
    """
    Connect to loopback C{port}, and give the seconds until the server closes the new
    connection, or C{None} if it does not within C{seconds}.

    A server that refuses by aborting sends a RST right after accepting; when the RST
    beats the end of our C{connect} call, the call itself fails with ECONNRESET.  That
    is the same refusal, seen earlier, and counts as closed.
    """
    started = time.monotonic()
    try:
        sock = connect(port)
    except ConnectionResetError:
        return time.monotonic() - started
    with sock:
        closed = closed_within(sock, seconds)
    return None if closed is None else time.monotonic() - started


def reset(sock: socket.socket) -> None:
    """Close C{sock} abruptly: SO_LINGER 0 makes the close send a RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def tls_context(
    minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A client context trusting echokit's test CA, optionally pinned to TLS versions."""
    context = ssl.create_default_context(cafile=str(cert_store().ca_cert))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def tls_echo(port: int, payload: bytes, context: ssl.SSLContext) -> tuple[bytes, str | None]:
    """One TLS connection to C{port}: send C{payload}; its echo and the TLS version."""
    with (
        connect(port) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return roundtrip(sock, payload), sock.version()


def run_connect(args: Sequence[str], timeout: float = 30) -> tuple[int, str, str, float]:
    """Run C{echokit connect ARGS}: exit status, stdout, stderr and seconds taken."""
    env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_store().directory))
    started = time.monotonic()
    done = subprocess.run(
        [*ECHOKIT, "connect", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return (
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
        time.monotonic() - started,
    )


def assert_one_error_line(stderr: str, *fragments: str) -> str:
    """C{stderr} is one C{echokit: error: ...} line, without traceback, holding C{fragments}."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("echokit: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def summary_counts(stdout: str, listener: str) -> dict[str, int]:
    """The numbers in the shutdown summary line of C{listener}, by what they count."""
    line = next(
        (x for x in stdout.splitlines() if x.strip().startswith(listener + ": ")),
        None,
    )
    assert line is not None, f"no summary line for {listener} in:\n{stdout}"
    return {
        what: int(number.replace(",", ""))
        for number, what in re.findall(r"([\d,]+) ([a-z][a-z ]*?)(?=,|$| \()", line)
    }


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ekh-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def raise_own_open_files_limit(needed: int) -> None:
    """Raise this test process's soft RLIMIT_NOFILE to at least C{needed} (or skip; fail
    under CI)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            unmet(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# --- 1. backpressure ------------------------------------------------------------------

PUSH_SECONDS = 10.0


@stress
class BackpressureTests:
    def test_client_that_never_reads_cannot_grow_server_memory(self) -> None:
        """
        A client that sends for 10 s and never reads is throttled: the server stops
        reading from it (its sends stall), its RSS grows by less than 16 MB, and
        meanwhile another client's echoes are exact.
        """
        with serving([TCP]) as server, contextlib.ExitStack() as stack:
            port = server.port()
            assert echo(port, b"warm-up") == b"warm-up"
            rss_before = server.rss_kib()
            pusher = stack.enter_context(connect(port))
            pusher.setblocking(False)
            checker = stack.enter_context(connect(port))
            chunk = os.urandom(1 << 16)
            sent = checks = 0
            started = last_progress = next_check = time.monotonic()
            for _ in range(1_000_000):
                now = time.monotonic()
                if now - started >= PUSH_SECONDS:
                    break
                try:
                    sent += pusher.send(chunk)
                    last_progress = now
                except BlockingIOError:
                    select.select([], [pusher], [], 0.02)
                if now >= next_check:
                    payload = b"check %d:" % checks + os.urandom(2000)
                    assert roundtrip(checker, payload) == payload, f"check {checks}"
                    checks += 1
                    next_check = now + 1.0
            stalled_for = time.monotonic() - last_progress
            rss_after = server.rss_kib()
            growth_mb = (rss_after - rss_before) / 1024
            report(
                "backpressure",
                pushed_mib=round(sent / (1 << 20), 1),
                stalled_s=round(stalled_for, 1),
                rss_before_mb=round(rss_before / 1024, 1),
                rss_growth_mb=round(growth_mb, 2),
                echo_checks=checks,
            )
            assert checks >= 8
            assert stalled_for > PUSH_SECONDS / 2, "the server kept reading from the pusher"
            assert growth_mb < 16


# --- 2. idle timeout ------------------------------------------------------------------


class IdleTimeoutTests:
    def test_silent_client_is_closed_talking_client_is_not(self) -> None:
        """
        With --idle-timeout 0.5, a silent tcp client is closed within 2 s, while a
        client that sends every 0.2 s for 1.5 s stays open and keeps getting its echo.
        """
        with serving([TCP], "--idle-timeout", "0.5") as server:
            with connect(server.port()) as silent, connect(server.port()) as talker:
                started = time.monotonic()
                silent_closed: float | None = None
                for i in range(20):
                    talked_for = time.monotonic() - started
                    if talked_for >= 1.5 and silent_closed is not None:
                        break
                    if talked_for >= 2.0:  # the silent client was never closed
                        break
                    payload = b"still here %d\n" % i
                    assert roundtrip(talker, payload) == payload, (
                        f"message {i} after {talked_for:.2f} s"
                    )
                    if silent_closed is None:
                        readable, _, _ = select.select([silent], [], [], 0.2)
                        if readable:
                            assert closed_within(silent, 0.5) is not None
                            silent_closed = time.monotonic() - started
                    else:
                        time.sleep(0.2)
                assert roundtrip(talker, b"last\n") == b"last\n"
                talked_for = time.monotonic() - started
                report(
                    "idle timeout",
                    silent_closed_after_s=silent_closed and round(silent_closed, 2),
                    talker_still_open_after_s=round(talked_for, 2),
                )
                assert silent_closed is not None, "the silent client was not closed within 2 s"
                assert 0.4 <= silent_closed <= 2.0
                assert talked_for >= 1.5
            status = server.stop()
            assert status == 0
            assert summary_counts(server.out_text(), TCP)["timed out"] == 1


# --- 3. TLS handshake timeout ---------------------------------------------------------


def handshake_lines(server: Server, peer: str) -> list[str]:
    return [line for line in server.err if peer in line and "handshake" in line.lower()]


class HandshakeTimeoutTests:
    def test_plaintext_client_that_says_nothing_is_closed(self) -> None:
        """
        With --handshake-timeout 0.5, a client that connects to a TLS port and says
        nothing is closed within 2 s; the server warns once about the TLS handshake,
        without a traceback, and still serves TLS afterwards.
        """
        with serving([SSL], "--handshake-timeout", "0.5") as server:
            port = server.port()
            plain = connect(port)
            peer = f"{LOOPBACK}:{plain.getsockname()[1]}"
            closed = closed_within(plain, 3.0)
            plain.close()
            assert closed is not None and closed < 2.0, closed
            assert server.wait_for(
                lambda: any("#warn" in x for x in handshake_lines(server, peer)), 3
            )
            echoed, _ = tls_echo(port, b"after the timeout", tls_context())
            assert echoed == b"after the timeout"
            time.sleep(0.2)
            lines = handshake_lines(server, peer)
            warnings = [x for x in lines if "#warn" in x]
            report("handshake timeout", closed_after_s=round(closed, 2), log_lines=lines)
            assert len(warnings) == 1, lines
            assert "TLS handshake" in warnings[0] and "timeout" in warnings[0]
            assert "Traceback" not in server.err_text()

    def test_handshake_timeout_is_one_log_line(self) -> None:
        """At the default log level, a TLS handshake timeout is told in exactly one line."""
        with serving([SSL], "--handshake-timeout", "0.3") as server:
            plain = connect(server.port())
            peer = f"{LOOPBACK}:{plain.getsockname()[1]}"
            assert closed_within(plain, 3.0) is not None
            plain.close()
            assert server.wait_for(
                lambda: any("#warn" in x for x in handshake_lines(server, peer)), 3
            )
            time.sleep(0.2)
            assert len(handshake_lines(server, peer)) == 1, handshake_lines(server, peer)


# --- 4. a peer that never reads -------------------------------------------------------


class NeverReadingPeerTests(TestCase):
    @deferred_test
    async def test_close_that_cannot_flush_is_aborted(self) -> None:
        """
        A raw client sends 8 MiB and never reads: with idle_timeout=0.3 and
        close_grace=0.3, the graceful close cannot flush the echo, so the server aborts
        the connection and it ends within a few seconds ("close stalled").
        """
        session = EchoSession(self)
        session.policy = dataclasses.replace(ServerPolicy(), idle_timeout=0.3, close_grace=0.3)
        [listener] = await session.serve(TCP)
        factory = listener.server
        assert isinstance(factory, EchoServerFactory)
        port = listener.port.getHost().port  # type: ignore[attr-defined]
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.setblocking(False)
        assert client.connect_ex((LOOPBACK, port)) in (0, errno.EINPROGRESS)
        await eventually(lambda: factory.open_connections == 1, 5)
        [protocol] = factory.open_protocols
        payload = memoryview(os.urandom(8 << 20))
        sent = 0
        started = reactor.seconds()
        for _ in range(1000):
            if factory.open_connections == 0 or reactor.seconds() - started > 10:
                break
            if sent < len(payload):
                try:
                    sent += client.send(payload[sent : sent + (1 << 16)])
                    continue
                except BlockingIOError:
                    pass
                except OSError:  # reset by the server's abort
                    break
            await task.deferLater(reactor, 0.01, lambda: None)
        await eventually(lambda: factory.open_connections == 0, 5)
        ended_after = reactor.seconds() - started
        report(
            "never-reading peer",
            sent_mib=round(sent / (1 << 20), 2),
            ended_after_s=round(ended_after, 2),
            closed_by=protocol.closed_by,
        )
        self.assertEqual(protocol.closed_by, "close stalled")
        self.assertEqual(factory.stats.timeouts, 1)
        self.assertLess(ended_after, 5.0)


# --- 5. connection limits -------------------------------------------------------------


def refused_lines(server: Server) -> list[str]:
    return [line for line in server.err if "refused a connection" in line]


class ConnectionLimitTests:
    def test_max_connections(self) -> None:
        """
        With --max-connections 3 and three open, a fourth connection is closed at once
        while the three keep working; 50 more refusals add no more than 2 warning lines
        in all, and the summary at SIGTERM counts every refusal.
        """
        with serving([TCP], "--max-connections", "3") as server:
            port = server.port()
            held = [connect(port) for _ in range(3)]
            for i, sock in enumerate(held):
                assert roundtrip(sock, b"held %d" % i) == b"held %d" % i
            fourth_closed = refused_within(port, 1.0)
            assert fourth_closed is not None, "a 4th connection was not refused within 1 s"
            for i, sock in enumerate(held):
                assert roundtrip(sock, b"still %d" % i) == b"still %d" % i
            extra_closed = [refused_within(port, 2.0) for _ in range(50)]
            assert all(t is not None for t in extra_closed), extra_closed
            for i, sock in enumerate(held):
                assert roundtrip(sock, b"again %d" % i) == b"again %d" % i
            for sock in held:
                sock.close()
            status = server.stop()
            lines = refused_lines(server)
            counts = summary_counts(server.out_text(), TCP)
            report(
                "max-connections",
                fourth_closed_after_s=round(fourth_closed, 3),
                slowest_extra_refusal_s=round(max(t or 0 for t in extra_closed), 3),
                refused_warning_lines=len(lines),
                summary=counts,
            )
            assert status == 0
            assert 1 <= len(lines) <= 2, lines
            assert "over the total connection limit" in lines[0]
            assert counts["refused over limits"] == 51
            assert counts["connections"] == 3

    def test_max_per_peer(self) -> None:
        """
        With --max-per-peer 2, a third connection from 127.0.0.1 is closed at once while
        127.0.0.2 still gets in, the first two keep working, and the summary counts it.
        """
        with serving([TCP], "--max-per-peer", "2") as server:
            port = server.port()
            held = [connect(port) for _ in range(2)]
            for i, sock in enumerate(held):
                assert roundtrip(sock, b"held %d" % i) == b"held %d" % i
            third_closed = refused_within(port, 1.0)
            assert third_closed is not None, "a 3rd connection from one peer was not refused"
            with connect(port, source="127.0.0.2") as other:
                assert roundtrip(other, b"other peer") == b"other peer"
            for i, sock in enumerate(held):
                assert roundtrip(sock, b"still %d" % i) == b"still %d" % i
                sock.close()
            status = server.stop()
            counts = summary_counts(server.out_text(), TCP)
            lines = refused_lines(server)
            report(
                "max-per-peer",
                third_closed_after_s=round(third_closed, 3),
                refused_lines=len(lines),
                summary=counts,
            )
            assert status == 0
            assert len(lines) == 1 and "per-peer" in lines[0], lines
            assert counts["refused over limits"] == 1
            assert counts["connections"] == 3


@implementer(ILogObserver)
class EventList(list[LogEvent]):
    """A log observer that keeps every event."""

    def __call__(self, event: LogEvent) -> None:
        self.append(event)


class RefusalLogTests(TestCase):
    @deferred_test
    async def test_refusals_are_logged_once_per_interval_with_a_count(self) -> None:
        """
        Refusals are logged at most once per 10 s; the next message says how many were
        refused in between (the factory's clock is replaced by a fake one).
        """
        session = EchoSession(self)
        session.policy = dataclasses.replace(ServerPolicy(), max_connections=1)
        [listener] = await session.serve(TCP)
        factory = listener.server
        assert isinstance(factory, EchoServerFactory)
        events = EventList()
        self.patch(echokit_stream, "_log", Logger(namespace="echokit.serve", observer=events))
        clock = task.Clock()
        clock.advance(1000)
        factory.clock = clock
        port = listener.port.getHost().port  # type: ignore[attr-defined]
        held = socket.create_connection((LOOPBACK, port))
        self.addCleanup(held.close)
        await eventually(lambda: factory.open_connections == 1, 5)

        async def refuse_one() -> None:
            refused_before = factory.stats.refused
            with socket.create_connection((LOOPBACK, port)):
                await eventually(lambda: factory.stats.refused == refused_before + 1, 5)

        for _ in range(6):
            await refuse_one()
        clock.advance(11)
        await refuse_one()
        messages = [formatEvent(e) for e in events if "refused a connection" in formatEvent(e)]
        report("refusal log", messages=messages)
        self.assertEqual(len(messages), 2, messages)
        self.assertNotIn("more refused", messages[0])
        self.assertIn("(5 more refused since the last message)", messages[1])
        self.assertEqual(factory.stats.refused, 7)


# --- 6. 2000 concurrent connections ---------------------------------------------------

CONCURRENT = 2000


@stress
class ConcurrencyTests:
    def test_2000_concurrent_connections_echo_exactly(self) -> None:
        """
        2000 tcp connections open at once against a default `echokit serve`, each
        sends a distinct payload and gets it back while all are open; after all
        half-close, each gets exactly its payload and the server's close.
        """
        raise_own_open_files_limit(CONCURRENT + 200)
        with serving([TCP]) as server:
            port = server.port()
            fds_before = server.settled_fd_count()
            started = time.monotonic()
            deadline = started + 30
            payloads = [b"%05d:" % i + os.urandom(16 + i % 200) for i in range(CONCURRENT)]
            socks: list[socket.socket] = []
            try:
                with selectors.DefaultSelector() as selector:
                    for i in range(CONCURRENT):
                        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        socks.append(sock)
                        sock.setblocking(False)
                        assert sock.connect_ex((LOOPBACK, port)) in (0, errno.EINPROGRESS)
                        selector.register(sock, selectors.EVENT_WRITE, i)
                    # Connected: send each payload (small: one send) and wait for its echo.
                    echoed = [bytearray() for _ in range(CONCURRENT)]
                    waiting = CONCURRENT
                    for _ in range(100_000):
                        if not waiting or time.monotonic() > deadline:
                            break
                        for key, events in selector.select(1.0):
                            i, sock = key.data, socks[key.data]
                            if events & selectors.EVENT_WRITE:
                                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                                assert err == 0, f"connection {i}: {os.strerror(err)}"
                                assert sock.send(payloads[i]) == len(payloads[i])
                                selector.modify(sock, selectors.EVENT_READ, i)
                            elif events & selectors.EVENT_READ:
                                chunk = sock.recv(4096)
                                assert chunk, f"connection {i} closed before its echo"
                                echoed[i] += chunk
                                if len(echoed[i]) >= len(payloads[i]):
                                    selector.unregister(sock)
                                    waiting -= 1
                    all_open_after = time.monotonic() - started
                    assert waiting == 0, f"{waiting} connections got no echo within 30 s"
                    fds_all_open = server.fd_count()
                    # All open at once: now half-close each, and read to the server's close.
                    for i, sock in enumerate(socks):
                        sock.shutdown(socket.SHUT_WR)
                        selector.register(sock, selectors.EVENT_READ, i)
                    open_count = CONCURRENT
                    for _ in range(100_000):
                        if not open_count or time.monotonic() > deadline:
                            break
                        for key, _events in selector.select(1.0):
                            chunk = socks[key.data].recv(4096)
                            if chunk:
                                echoed[key.data] += chunk
                            else:
                                selector.unregister(key.fileobj)
                                open_count -= 1
                    assert open_count == 0, f"{open_count} connections not closed within 30 s"
                wrong = [i for i in range(CONCURRENT) if bytes(echoed[i]) != payloads[i]]
                total = time.monotonic() - started
                report(
                    "2000 concurrent",
                    all_echoed_while_open_s=round(all_open_after, 2),
                    total_s=round(total, 2),
                    server_fds_before=fds_before,
                    server_fds_all_open=fds_all_open,
                )
                assert wrong == [], f"{len(wrong)} wrong echoes, e.g. connection {wrong[:5]}"
                assert fds_all_open >= fds_before + CONCURRENT
            finally:
                for sock in socks:
                    sock.close()


# --- 7. out of file descriptors -------------------------------------------------------


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def _soft_fd_limit_below_hard() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 4096))


class FileDescriptorExhaustionTests:
    def test_emfile_on_accept_is_survived_and_logged_once(self) -> None:
        """
        A server limited to 64 open files, hit by 100 connections: it stays up, logs a
        throttled 'out of file descriptors' warning (not one per connection), and once
        the connections close a new connection gets an exact echo.
        """
        with serving([TCP], preexec_fn=_low_fd_limit) as server:
            port = server.port()
            socks = [connect(port) for _ in range(100)]
            try:
                assert server.wait_for(lambda: "out of file descriptors" in "".join(server.err), 5)
                # Each connection was either served, or accepted and closed at once.
                for i, sock in enumerate(socks):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"%05d" % i)
                served = 0
                deadline = time.monotonic() + 10
                for i, sock in enumerate(socks):
                    with contextlib.suppress(OSError):
                        sock.settimeout(max(0.01, deadline - time.monotonic()))
                        served += sock.recv(5) == b"%05d" % i
                assert server.process.poll() is None, server.err_text()
            finally:
                for sock in socks:
                    sock.close()
            # The server frees descriptors as it notices the closes: retry, bounded.
            payload = os.urandom(100_000)
            got = b""
            deadline = time.monotonic() + 10
            for _ in range(100):
                with contextlib.suppress(OSError, AssertionError):
                    got = echo(port, payload, timeout=2.0)
                if got == payload or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            warnings = [x for x in server.err if "out of file descriptors" in x]
            report(
                "EMFILE",
                served_of_100=served,
                warning_lines=len(warnings),
                fd_limit_line=warnings[:1],
            )
            assert got == payload
            assert server.process.poll() is None
            assert 1 <= len(warnings) <= 3, warnings
            assert "open files limit 64" in warnings[0]
            assert 0 < served < 100

    def test_serve_raises_its_soft_open_files_limit_to_the_hard_limit(self) -> None:
        """
        Started with a soft limit of 128 open files (hard 4096), `echokit serve` raises
        its soft limit to 4096 and then serves 300 connections open at once.
        """
        with serving([TCP], preexec_fn=_soft_fd_limit_below_hard) as server:
            limits = Path(f"/proc/{server.pid}/limits").read_text()
            line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
            port = server.port()
            socks = [connect(port) for _ in range(300)]
            try:
                for i, sock in enumerate(socks):
                    sock.sendall(b"%05d" % i)
                served = 0
                for i, sock in enumerate(socks):
                    sock.settimeout(5)
                    served += sock.recv(5) == b"%05d" % i
            finally:
                for sock in socks:
                    sock.close()
            report("soft limit raised", limits=" ".join(line.split()), served_of_300=served)
            assert line.split()[3:5] == ["4096", "4096"], line
            assert served == 300
            assert not [x for x in server.err if "out of file descriptors" in x]


# --- 8. graceful shutdown -------------------------------------------------------------

DRAIN_PAYLOAD = 4 << 20
PART_READ = 512 << 10


class GracefulShutdownTests:
    def test_sigterm_lets_an_echo_in_progress_finish(self) -> None:
        """
        SIGTERM with an echo in progress (4 MiB sent, part read): new connections are
        refused promptly, the client still gets all 4 MiB back, stdout has a summary
        line per listener, and the exit status is 0.
        """
        with serving([TCP, "udp:0"], "--drain", "10") as server:
            port = server.port()
            payload = os.urandom(DRAIN_PAYLOAD)
            view = memoryview(payload)
            client = connect(port)
            client.setblocking(False)
            sent = 0
            received = bytearray()
            deadline = time.monotonic() + 10
            for _ in range(100_000):
                if sent == len(payload) or time.monotonic() > deadline:
                    break
                try:
                    sent += client.send(view[sent : sent + (1 << 16)])
                except BlockingIOError:
                    # Read only what is needed to keep the server sending.
                    with contextlib.suppress(BlockingIOError):
                        received += client.recv(1 << 16)
                    time.sleep(0.001)
            assert sent == len(payload)
            # Read part of the echo (512 KiB in all), leaving the rest in flight.
            client.setblocking(True)
            client.settimeout(10)
            for _ in range(10_000):
                if len(received) >= PART_READ:
                    break
                received += client.recv(PART_READ - len(received))
            read_before_signal = len(received)
            assert read_before_signal < len(payload)
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            refused_after: float | None = None
            for _ in range(200):
                try:
                    probe = socket.create_connection((LOOPBACK, port), timeout=1)
                except ConnectionRefusedError:
                    refused_after = time.monotonic() - signalled
                    break
                probe.close()
                time.sleep(0.01)
                if time.monotonic() - signalled > 2:
                    break
            assert refused_after is not None, "new connections were still accepted after 2 s"
            client.shutdown(socket.SHUT_WR)
            for _ in range(10_000):
                chunk = client.recv(1 << 18)
                if not chunk:
                    break
                received += chunk
            client.close()
            status = server.wait(15)
            server.stop()
            out = server.out_text()
            report(
                "graceful drain",
                read_before_sigterm_mib=round(read_before_signal / (1 << 20), 2),
                refused_after_s=round(refused_after, 3),
                exit_status=status,
                summary=[x.strip() for x in out.splitlines() if x.startswith("  ")],
            )
            assert bytes(received) == payload
            assert status == 0
            assert "summary:" in out
            tcp = summary_counts(out, TCP)
            assert tcp["bytes echoed"] == DRAIN_PAYLOAD
            assert tcp["connections"] >= 1
            udp = summary_counts(out, "udp:0")
            assert udp["datagrams"] == 0

    def test_summary_counts_connections_aborted_after_the_drain(self) -> None:
        """
        A connection still open when the drain ends is aborted, and the summary still
        counts the bytes echoed to it (here at least the 100 KiB the client read).
        """
        with serving([TCP], "--drain", "0.3") as server:
            client = connect(server.port())
            payload = os.urandom(100 << 10)
            assert roundtrip(client, payload) == payload
            client.setblocking(False)
            chunk = os.urandom(1 << 16)
            for _ in range(2000):
                try:
                    client.send(chunk)
                except BlockingIOError:
                    break
            server.signal(signal.SIGTERM)
            status = server.wait(10)
            client.close()
            server.stop()
            out = server.out_text()
            report("aborted after drain", exit_status=status, summary=summary_counts(out, TCP))
            assert status == 0
            assert "1 connection(s) still open after the drain were aborted" in out
            assert summary_counts(out, TCP)["bytes echoed"] >= len(payload)

    def test_second_signal_during_drain_exits_at_once(self) -> None:
        """
        With --drain 30 and a client that never reads, a second SIGTERM during the
        drain makes the server exit within 2 s instead of waiting out the drain.
        """
        with serving([TCP], "--drain", "30") as server:
            client = connect(server.port())
            client.setblocking(False)
            chunk = os.urandom(1 << 16)
            for _ in range(2000):
                try:
                    client.send(chunk)
                except BlockingIOError:
                    break
            server.signal(signal.SIGTERM)
            assert server.wait_for(lambda: "stopped accepting" in "".join(server.out), 5)
            time.sleep(0.3)
            assert server.process.poll() is None, "the drain did not wait for the client"
            second = time.monotonic()
            server.signal(signal.SIGTERM)
            status = server.wait(5)
            exited_after = time.monotonic() - second
            client.close()
            report("second signal", exit_status=status, exited_after_s=round(exited_after, 3))
            assert status is not None and exited_after < 2.0
            assert status == 128 + signal.SIGTERM


# --- 9. unix sockets ------------------------------------------------------------------


class UnixSocketTests:
    def test_modes_and_restart_after_kill(self, short_tmp: Path) -> None:
        """
        unix:PATH is created mode 0600 and unix:PATH:mode=660 mode 0660; after kill -9
        the stale socket and lock file do not stop a new server on the same path.
        """
        private, shared = short_tmp / "private.sock", short_tmp / "shared.sock"
        with serving([f"unix:{private}", f"unix:{shared}:mode=660"]) as server:
            modes = (stat.S_IMODE(private.stat().st_mode), stat.S_IMODE(shared.stat().st_mode))
            assert stat.S_ISSOCK(private.stat().st_mode)
            for path in (private, shared):
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(5)
                    sock.connect(str(path))
                    assert exchange(sock, b"over unix") == b"over unix"
            server.process.kill()
            assert server.wait(5) == -signal.SIGKILL
        leftovers = sorted(p.name for p in short_tmp.iterdir())
        with serving([f"unix:{private}"]) as again:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(private))
                assert exchange(sock, b"after kill -9") == b"after kill -9"
            mode_again = stat.S_IMODE(private.stat().st_mode)
            assert again.stop() == 0
        report(
            "unix", modes=[oct(m) for m in modes], leftovers=leftovers, mode_again=oct(mode_again)
        )
        assert modes == (0o600, 0o660)
        assert "private.sock" in leftovers
        assert mode_again == 0o600


# --- 10. TLS --------------------------------------------------------------------------


def _tls11_only() -> ssl.SSLContext:
    """A client context that offers TLS 1.1 and nothing else (and accepts any certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ValueError, ssl.SSLError):
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, on purpose
        with contextlib.suppress(ValueError, ssl.SSLError):
            context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def tls11_handshake_with_a_willing_server(client: ssl.SSLContext) -> str | None:
    """
    The TLS version C{client} negotiates with a stdlib server that allows TLS 1.1 (echokit's
    test certificate, C{@SECLEVEL=0}); C{None} if they cannot agree. This proves that
    C{client} offers TLS 1.1 and that this machine's OpenSSL speaks it, so that a refusal
    by echokit's server is echokit's own.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_store().server_cert, cert_store().server_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.suppress(ValueError, ssl.SSLError):
            server.set_ciphers("DEFAULT:@SECLEVEL=0")
            server.minimum_version = ssl.TLSVersion.TLSv1_1
    with socket.socket() as listening:
        listening.bind((LOOPBACK, 0))
        listening.listen(1)

        def serve_one() -> None:
            with contextlib.suppress(OSError), listening.accept()[0] as raw:
                raw.settimeout(5)
                with server.wrap_socket(raw, server_side=True):
                    pass

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        try:
            with (
                connect(listening.getsockname()[1]) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                return tls.version()
        except ssl.SSLError:
            return None
        finally:
            thread.join(5)


class TLSTests:
    def test_versions(self) -> None:
        """
        A client offering only TLS 1.1 (one that a TLS 1.1 server does accept) gets the
        server's protocol_version alert, and the server keeps serving; TLS 1.2-only and
        TLS 1.3 clients get their echo.
        """
        tls11 = _tls11_only()
        willing = tls11_handshake_with_a_willing_server(tls11)
        if willing != "TLSv1.1":
            unmet(f"this machine's OpenSSL does not speak TLS 1.1 (got {willing})")
        with serving([SSL]) as server:
            port = server.port()
            with pytest.raises(ssl.SSLError) as refused:
                tls_echo(port, b"old", tls11)
            tls12 = tls_echo(
                port, b"tls 1.2", tls_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
            )
            tls13 = tls_echo(port, b"tls 1.3", tls_context(ssl.TLSVersion.TLSv1_3))
            report("TLS versions", tls11_error=str(refused.value), tls12=tls12, tls13=tls13)
            assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value
            assert tls12 == (b"tls 1.2", "TLSv1.2")
            assert tls13 == (b"tls 1.3", "TLSv1.3")
            assert server.process.poll() is None
            assert "Traceback" not in server.err_text()

    def test_mutual_tls(self) -> None:
        """
        With --require-client-cert, `echokit connect ssl:...` fails (exit 1, one line)
        without --client-cert and succeeds (exit 0) with it.
        """
        with serving([SSL], "--require-client-cert") as server:
            target = server.connect_string()
            without = run_connect([target, "--message", "hi"])
            with_cert = run_connect([target, "--message", "hi", "--client-cert"])
            report(
                "mutual TLS",
                without=(without[0], without[2].strip(), round(without[3], 2)),
                with_cert=(with_cert[0], with_cert[1].strip(), round(with_cert[3], 2)),
            )
            assert without[0] == 1
            assert without[1] == ""
            assert_one_error_line(without[2])
            assert with_cert[0] == 0, with_cert[2]
            assert with_cert[1].startswith("hi  (")
            assert with_cert[2] == ""

    def test_wrong_protocol_on_either_side(self) -> None:
        """
        A plaintext client on the TLS port ends promptly (exit 1, one line) and the
        server logs exactly one line about it besides 'opened'; a TLS client on the
        plaintext port ends promptly with a one-line 'handshake' error; the server keeps
        serving both listeners.
        """
        with serving([SSL, TCP]) as server:
            ssl_port, tcp_port = server.port(0), server.port(1)
            before = len(server.err)
            plain = run_connect([f"tcp:host=127.0.0.1:port={ssl_port}", "--message", "hi"])
            assert plain[0] == 1, plain
            assert plain[3] < 10
            assert_one_error_line(plain[2])
            assert server.wait_for(lambda: any("handshake" in x for x in server.err[before:]), 5), (
                server.err_text()
            )
            time.sleep(0.3)
            about_plain = [x for x in server.err[before:] if " opened on " not in x]

            tls = run_connect([f"ssl:host=localhost:port={tcp_port}", "--message", "hi"])
            assert tls[0] == 1, tls
            assert tls[3] < 10
            assert_one_error_line(tls[2], "handshake")

            assert tls_echo(ssl_port, b"still tls", tls_context())[0] == b"still tls"
            assert echo(tcp_port, b"still tcp") == b"still tcp"
            report(
                "wrong protocol",
                plaintext_to_tls=(plain[2].strip(), round(plain[3], 2)),
                server_lines=about_plain,
                tls_to_plaintext=(tls[2].strip(), round(tls[3], 2)),
            )
            assert len(about_plain) == 1, about_plain
            assert "TLS handshake" in about_plain[0]
            assert "Traceback" not in server.err_text()


# --- 11. UDP reflection ---------------------------------------------------------------


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


class UDPReflectionTests(TestCase):
    async def bounce(self, *spoofed: bytes) -> tuple[int, int, int]:
        """
        Start two UDP servers A and B, make A act on C{spoofed} datagrams "from" B (so A
        sends each to B from its own port and they bounce), and count the echoes after
        1 s and after 1.3 s, and the datagrams dropped.
        """
        session = EchoSession(self)
        a, b = await session.serve("udp:0", "udp:0")
        assert isinstance(a.server, EchoDatagramServer)
        assert isinstance(b.server, EchoDatagramServer)
        servers = (a.server, b.server)
        b_address = (LOOPBACK, b.port.getHost().port)  # type: ignore[attr-defined]
        for datagram in spoofed:
            a.server.datagramReceived(datagram, b_address)
        await task.deferLater(reactor, 1.0, lambda: None)
        first = sum(s.stats.datagrams for s in servers)
        await task.deferLater(reactor, 0.3, lambda: None)
        second = sum(s.stats.datagrams for s in servers)
        return first, second, sum(s.stats.dropped for s in servers)

    @deferred_test
    async def test_one_spoofed_datagram_does_not_loop_forever(self) -> None:
        """
        Two UDP echo servers aimed at each other by one spoofed datagram stop bouncing
        it: fewer than 100 echoes in all, and no more after the first second.
        """
        first, second, dropped = await self.bounce(b"spoof")
        report("UDP reflection", echoes_after_1s=first, echoes_after_1_3s=second, dropped=dropped)
        self.assertLess(second, 100)
        self.assertEqual(first, second)
        self.assertGreaterEqual(dropped, 1)

    @deferred_test
    async def test_two_spoofed_datagrams_do_not_loop_forever(self) -> None:
        """
        Two distinct spoofed datagrams aimed at a pair of UDP echo servers stop bouncing
        too: fewer than 1000 echoes in all, and no more after the first second.
        """
        first, second, _ = await self.bounce(b"spoof one", b"spoof two")
        report("UDP reflection, two datagrams", echoes_after_1s=first, after_1_3s=second)
        self.assertLess(second, 1000)
        self.assertEqual(first, second)

    @deferred_test
    async def test_datagrams_from_privileged_source_ports_are_dropped(self) -> None:
        """
        A datagram claiming a source port below 1024 (7: echo, 19: chargen) is dropped
        unanswered, so two echo services cannot be made to ping-pong through echokit.
        """
        session = EchoSession(self)
        [listener] = await session.serve("udp:0")
        server = listener.server
        assert isinstance(server, EchoDatagramServer)
        for port in (7, 19, 1023):
            server.datagramReceived(b"from a privileged port", (LOOPBACK, port))
        self.assertEqual((server.stats.datagrams, server.stats.dropped), (0, 3))
        # The same datagram from an ordinary port is answered (to a socket of ours).
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind((LOOPBACK, 0))
        receiver.setblocking(False)
        server.datagramReceived(b"from a privileged port", receiver.getsockname())
        await eventually(lambda: _readable(receiver), 5)
        self.assertEqual(receiver.recv(100), b"from a privileged port")
        self.assertEqual((server.stats.datagrams, server.stats.dropped), (1, 3))

    @deferred_test
    async def test_distinct_datagrams_from_one_source_are_all_echoed(self) -> None:
        """5,000 distinct, numbered datagrams, one at a time from one source: all echoed."""
        session = EchoSession(self)
        [listener] = await session.serve("udp:0")
        server = listener.server
        assert isinstance(server, EchoDatagramServer)
        client = await session.datagram(listener)
        started = reactor.seconds()
        wrong = 0
        for i in range(5000):
            payload = b"datagram %d" % i
            result = await client.request(payload)
            wrong += result.echo != payload
        elapsed = reactor.seconds() - started
        report("UDP benchmark", datagrams=5000, seconds=round(elapsed, 2), lost=client.ledger.lost)
        self.assertEqual(wrong, 0)
        self.assertEqual(client.ledger.lost, 0)
        self.assertEqual(server.stats.datagrams, 5000)
        self.assertEqual(server.stats.dropped, 0)


# --- 12. garbage, resets and storms ---------------------------------------------------


class AbuseTests:
    def test_garbage_resets_and_storms_leak_nothing(self) -> None:
        """
        Random bytes (to tcp and to the TLS port), abrupt resets mid-echo and storms of
        connect-then-close leave the server serving exact echoes, with its file
        descriptor count back where it started.
        """
        with serving([TCP, SSL]) as server:
            tcp_port, ssl_port = server.port(0), server.port(1)
            assert echo(tcp_port, b"warm-up") == b"warm-up"
            assert tls_echo(ssl_port, b"warm-up", tls_context())[0] == b"warm-up"
            fds_before = server.settled_fd_count()

            # Random bytes: echoed exactly over tcp; a failed handshake over TLS.
            for _ in range(5):
                payload = os.urandom(1 << 20)
                assert echo(tcp_port, payload) == payload
            tls_garbage_closed = []
            for _ in range(5):
                with connect(ssl_port) as sock:
                    with contextlib.suppress(OSError):
                        sock.sendall(os.urandom(1 << 14))
                    tls_garbage_closed.append(closed_within(sock, 5.0, tls_alert=True))
            assert all(t is not None for t in tls_garbage_closed), tls_garbage_closed

            # Abrupt resets mid-stream, with echo left unread.
            for _ in range(20):
                sock = connect(tcp_port)
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    for _ in range(16):
                        sock.send(os.urandom(1 << 16))
                time.sleep(0.005)
                reset(sock)
            for _ in range(10):
                with connect(ssl_port) as raw:
                    tls = tls_context().wrap_socket(raw, server_hostname="localhost")
                    tls.sendall(os.urandom(1 << 16))
                    reset(tls)

            # Connect-then-close storms, some ending with a reset.
            for i in range(500):
                sock = connect(tcp_port)
                if i % 2:
                    reset(sock)
                else:
                    sock.close()
            for i in range(100):
                sock = connect(ssl_port)
                if i % 2:
                    reset(sock)
                else:
                    sock.close()

            payload = os.urandom(300_000)
            assert echo(tcp_port, payload) == payload
            assert tls_echo(ssl_port, b"still serving", tls_context())[0] == b"still serving"
            fds_after = server.wait_fd_count(fds_before, 10)
            report(
                "abuse",
                fds_before=fds_before,
                fds_after=fds_after,
                tls_garbage_closed_s=[round(t or -1, 3) for t in tls_garbage_closed],
            )
            assert fds_after == fds_before
            assert server.process.poll() is None
            assert server.stop() == 0
            assert "Traceback" not in server.err_text()
