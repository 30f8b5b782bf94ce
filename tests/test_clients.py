"""
echokit's clients (connect, bench) against servers that misbehave: servers that hang,
lie, drop bytes and vanish, written here as small socket servers on loopback.

Every test runs the real C{echokit} command against a real socket; every wait is
bounded, and each server thread stops when its test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ECHOKIT, echokit_server, require_ipv6, run_echokit, sigint_default

#: Every subprocess here must finish well within this many seconds.
TIMEOUT = 40
QUICK = ["--duration", "0.3", "--warmup", "0"]

Handler = Callable[[socket.socket, threading.Event], None]


def one_error_line(stderr: bytes, *fragments: str) -> str:
    """The single C{echokit: error:} line of C{stderr}, holding every fragment."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("echokit: error: ")]
    assert len(lines) == 1, text
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@contextlib.contextmanager
def misbehaving_server(handler: Handler, backlog: int = 8) -> Iterator[int]:
    """
    A TCP server on 127.0.0.1 running C{handler(conn, stop)} for each connection in a
    thread; yields its port. C{stop} is set when the test ends.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    listener.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn, stop)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for thread in threads:
            thread.join(5)


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and never read or write (a TLS server that never answers the ClientHello)."""
    stop.wait(TIMEOUT)


def echo_altered(every: int, alter: Callable[[bytearray, int], None]) -> Handler:
    """An echo that calls C{alter(chunk, index)} on the byte at each multiple of C{every}."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(0.2)
        offset = 0
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            chunk = bytearray(data)
            marks = [i for i in range(len(chunk)) if (offset + i + 1) % every == 0]
            offset += len(chunk)
            for index in reversed(marks):
                alter(chunk, index)
            conn.sendall(chunk)

    return handler


def flip(chunk: bytearray, index: int) -> None:
    chunk[index] ^= 0x01


def drop(chunk: bytearray, index: int) -> None:
    del chunk[index]


def run_client(
    args: list[str], cert_dir: Path, stdin: bytes = b"", timeout: float = TIMEOUT
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run C{echokit ARGS}; return the outcome and how many seconds it took."""
    started = time.monotonic()
    result = run_echokit(args, cert_dir, stdin=stdin, timeout=timeout)
    return result, time.monotonic() - started


def bench_record(
    target: str, cert_dir: Path, *flags: str
) -> tuple[dict[str, object], subprocess.CompletedProcess[bytes], float]:
    """Run C{echokit bench TARGET --json} (short phases); its one record, outcome, seconds."""
    result, took = run_client(["bench", target, "--json", *QUICK, *flags], cert_dir)
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    return record, result, took


def bench_altered(handler: Handler, cert_dir: Path) -> tuple[dict[str, Any], bytes, float]:
    """bench (200 messages) against a server running C{handler}: record, stderr, seconds."""
    with misbehaving_server(handler) as port:
        record, result, took = bench_record(
            f"tcp:host=127.0.0.1:port={port}", cert_dir, "--count", "200"
        )
    assert result.returncode == 1, result.stderr
    return record, result.stderr, took


# --- connecting: every phase bounded --------------------------------------------------


class BoundedConnectTests:
    """The connect and TLS handshake phases end within the user's timeout (10 s by default)."""

    def test_connect_tls_handshake_bounded_by_timeout(self, tmp_path: Path) -> None:
        """A TLS server that never answers: connect --timeout 1 fails in one line, at once."""
        with misbehaving_server(silent) as port:
            target = f"ssl:host=127.0.0.1:port={port}"
            result, took = run_client(
                ["connect", "--timeout", "1", "--message", "hi", target], tmp_path
            )
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        one_error_line(result.stderr, f"TLS handshake with {target} did not complete within 1 s")
        assert took < 15, took

    def test_connect_tls_handshake_default_bound(self, tmp_path: Path) -> None:
        """Without --timeout the TLS handshake is bounded at 10 s, and the message says so."""
        with misbehaving_server(silent) as port:
            target = f"ssl:host=127.0.0.1:port={port}"
            result, took = run_client(["connect", "--message", "hi", target], tmp_path)
        assert result.returncode == 1, result.stderr
        one_error_line(result.stderr, "did not complete within 10 s", "--timeout")
        assert 9 < took < 25, took

    def test_bench_tls_handshake_bounded(self, tmp_path: Path) -> None:
        """bench against a TLS server that never answers: an error row within the timeout."""
        with misbehaving_server(silent) as port:
            target = f"ssl:host=127.0.0.1:port={port}"
            record, result, took = bench_record(target, tmp_path, "--timeout", "1")
        assert result.returncode == 1, result.stderr
        assert "did not complete within 1 s" in str(record["error"]), record["error"]
        assert took < 15, took

    @pytest.fixture
    def full_backlog(self) -> Iterator[int]:
        """A listener that never accepts, with its backlog full: new connects hang."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            with pytest.raises(TimeoutError):
                probe.connect(("127.0.0.1", port))  # the backlog is full indeed
        finally:
            probe.close()
        try:
            yield port
        finally:
            for sock in [*fillers, listener]:
                sock.close()

    @pytest.mark.parametrize("command", ["connect", "bench"])
    def test_connect_phase_honours_timeout(
        self, tmp_path: Path, full_backlog: int, command: str
    ) -> None:
        """Against a full backlog, --timeout 1 ends the connect phase (not Twisted's 30 s)."""
        target = f"tcp:host=127.0.0.1:port={full_backlog}"
        expected = f"connecting to {target} timed out after 1 s"
        if command == "connect":
            result, took = run_client(
                ["connect", target, "--timeout", "1", "--message", "hi"], tmp_path
            )
            one_error_line(result.stderr, expected)
        else:
            record, result, took = bench_record(target, tmp_path, "--timeout", "1")
            assert expected in str(record["error"]), record
        assert result.returncode == 1, result.stderr
        assert took < 15, took


# --- pipe mode ------------------------------------------------------------------------


class PipeModeTests:
    """Pipe mode against servers that do not read, say too much, or close early."""

    def test_idle_bound(self, tmp_path: Path) -> None:
        """A server that accepts and never reads: --idle-timeout ends the wait, in one line."""
        with misbehaving_server(silent) as port:
            target = f"tcp:host=127.0.0.1:port={port}"
            result, took = run_client(
                ["connect", target, "--idle-timeout", "1"], tmp_path, stdin=b"hello\n"
            )
        assert result.returncode == 1, result.stderr
        one_error_line(result.stderr, "no echo for 1 s", "6 of 6 bytes", "--idle-timeout")
        assert took < 15, took

    def test_idle_bound_is_documented(self, tmp_path: Path) -> None:
        """connect --help says what the idle bound is and its default."""
        result = run_echokit(["connect", "--help"], tmp_path)
        text = " ".join(result.stdout.decode().split())
        assert "--idle-timeout" in text
        assert "default: 60" in text.split("--idle-timeout", 1)[1][:400], text

    def test_empty_stdin_and_unsolicited_bytes(self, tmp_path: Path) -> None:
        """Nothing sent, yet the server sends bytes: a mismatch, exit 1 (not 0)."""

        def banner(conn: socket.socket, stop: threading.Event) -> None:
            time.sleep(0.3)  # after the client has read the end of its (empty) stdin
            conn.sendall(b"banner\n")
            conn.settimeout(5)
            while conn.recv(4096):
                pass

        with misbehaving_server(banner) as port:
            target = f"tcp:host=127.0.0.1:port={port}"
            result, _ = run_client(["connect", target], tmp_path, stdin=b"")
        assert result.returncode == 1, result.stderr
        one_error_line(result.stderr, "the server sent back 7 more byte(s) than were sent")

    def test_close_mid_stream_says_what_was_not_sent(self, tmp_path: Path) -> None:
        """A server that echoes 64 KiB and closes: the message says input was left unsent."""

        def echo_then_close(conn: socket.socket, stop: threading.Event) -> None:
            got = 0
            while got < 65536:
                data = conn.recv(65536 - got)
                if not data:
                    return
                conn.sendall(data)
                got += len(data)
            # Close its side (FIN, as a server whose drain expired does) and read no more:
            # the client, blocked by the unread input, has more to send.
            conn.shutdown(socket.SHUT_WR)
            stop.wait(TIMEOUT)

        payload = os.urandom(8 * 1024 * 1024)
        with misbehaving_server(echo_then_close) as port:
            target = f"tcp:host=127.0.0.1:port={port}"
            result, _ = run_client(["connect", target], tmp_path, stdin=payload)
        assert result.returncode == 1, result.stderr
        line = one_error_line(result.stderr, "the server closed the connection")
        match = re.search(r"input after byte (\d+) was not sent", line)
        assert match, line
        assert 65536 <= int(match[1]) < len(payload), line
        assert result.stdout == payload[:65536]


# --- interactive mode ---------------------------------------------------------------


class Terminal:
    """C{echokit connect} on a pseudo-terminal: what it shows, bounded reads."""

    def __init__(self, target: str, cert_dir: Path) -> None:
        self.master, slave = pty.openpty()
        env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_dir))
        self.process = subprocess.Popen(
            [*ECHOKIT, "connect", target],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            preexec_fn=sigint_default,
        )
        os.close(slave)
        self.seen = bytearray()

    def read_until(self, pattern: bytes, seconds: float = 15) -> None:
        deadline = time.monotonic() + seconds
        while re.search(pattern, self.seen) is None:
            ready, _, _ = select.select(
                [self.master], [], [], max(0.0, deadline - time.monotonic())
            )
            if not ready:
                raise AssertionError(f"no {pattern!r} within {seconds} s: {bytes(self.seen)!r}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {pattern!r}: {bytes(self.seen)!r}")
            self.seen.extend(chunk)

    def finish(self, seconds: float = 15) -> int:
        """Wait for the exit status; collect what is left on the terminal."""
        try:
            status = self.process.wait(timeout=seconds)
            with contextlib.suppress(OSError):
                while select.select([self.master], [], [], 0.2)[0]:
                    chunk = os.read(self.master, 4096)
                    if not chunk:
                        break
                    self.seen.extend(chunk)
            return status
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            os.close(self.master)


class InteractiveModeTests:
    """At a terminal: a server's close is noticed at once; Ctrl-C exits 130 on a fresh line."""

    def test_server_close_noticed_at_once(self, tmp_path: Path) -> None:
        """The server closes while nothing is typed: connect says why and exits 1 by itself."""

        def close_soon(conn: socket.socket, stop: threading.Event) -> None:
            time.sleep(0.5)

        with misbehaving_server(close_soon) as port:
            terminal = Terminal(f"tcp:host=127.0.0.1:port={port}", tmp_path)
            terminal.read_until(rb"Ctrl-D to quit")
            terminal.read_until(rb"echokit: error: the server closed the connection[^\n]*\n")
            status = terminal.finish()
        assert status == 1, bytes(terminal.seen)
        assert b"Traceback" not in terminal.seen

    def test_ctrl_c_exits_130_on_a_fresh_line(self, tmp_path: Path) -> None:
        """SIGINT with a half-typed line: exit status 130, and the terminal ends on a new line."""
        with echokit_server(["tcp:0:interface=127.0.0.1"], tmp_path) as server:
            terminal = Terminal(server.connect_strings[0], tmp_path)
            terminal.read_until(rb"Ctrl-D to quit\r?\n")
            os.write(terminal.master, b"half a line")
            terminal.read_until(rb"half a line")
            terminal.process.send_signal(signal.SIGINT)
            status = terminal.finish()
        assert status == 130, bytes(terminal.seen)
        after = bytes(terminal.seen).split(b"half a line", 1)[1]
        assert after.endswith(b"\n"), bytes(terminal.seen)
        assert b"Traceback" not in terminal.seen


# --- bench's accounting ---------------------------------------------------------------


class BenchAccountingTests:
    """bench reports what a bad stream server did as what it is."""

    def test_corrupted_is_not_also_lost(self, tmp_path: Path) -> None:
        """A server flipping a byte every 1,000: messages counted corrupted, none lost."""
        record, _, _ = bench_altered(echo_altered(1000, flip), tmp_path)
        assert record["corrupted"] > 0, record
        assert record["lost"] == 0, record
        assert record["received"] + record["corrupted"] == record["sent"], record

    def test_dropped_bytes_are_reported_as_loss_promptly(self, tmp_path: Path) -> None:
        """A server dropping a byte every 1,000: loss with the bytes missing, within --timeout."""
        record, stderr, took = bench_altered(echo_altered(1000, drop), tmp_path)
        assert record["lost"] >= 1, record
        assert "1 byte(s) of message" in record["error"], record["error"]
        assert "never came back within 1 s" in record["error"], record["error"]
        assert "echo was not intact" in stderr.decode()
        assert took < 15, took


# --- udp ------------------------------------------------------------------------------


class DatagramClientTests:
    """UDP pipe mode's line limit, udp6: on the client, and the repeat guard's hint."""

    def test_long_line_refused_before_input_ends(self, tmp_path: Path) -> None:
        """A line over the datagram limit is refused as soon as it is too long, stdin still open."""
        with echokit_server(["udp:0"], tmp_path) as server:
            process = subprocess.Popen(
                [*ECHOKIT, "connect", server.connect_strings[0]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert process.stdin is not None
            try:
                process.stdin.write(b"x" * 70_000)
                process.stdin.flush()
                status = process.wait(timeout=15)  # stdin is still open
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                process.stdin.close()
            assert process.stderr is not None
            stderr = process.stderr.read()
            process.stderr.close()
            assert process.stdout is not None
            process.stdout.close()
        assert status == 2, stderr
        one_error_line(stderr, "does not fit in one UDP datagram", "the limit is 65507 bytes")

    def test_udp6_client_string(self, tmp_path: Path) -> None:
        """connect accepts udp6:host=...:port=..., as it accepts tcp6:."""
        require_ipv6()
        with echokit_server(["udp6:0"], tmp_path) as server:
            port = server.connect_strings[0].rsplit("port=", 1)[1]
            result = run_echokit(
                ["connect", f"udp6:host=\\:\\:1:port={port}", "--message", "six"],
                tmp_path,
                timeout=TIMEOUT,
            )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(b"six  ("), result.stdout

    def test_repeat_guard_hint(self, tmp_path: Path) -> None:
        """Many identical datagrams, then a timeout: the error points at the repeat guard."""
        with echokit_server(["udp:0"], tmp_path) as server:
            result = run_echokit(
                [
                    *("connect", server.connect_strings[0]),
                    *("--message", "same", "--count", "60", "--timeout", "0.5"),
                ],
                tmp_path,
                timeout=TIMEOUT,
            )
        assert result.returncode == 1, result.stderr
        one_error_line(result.stderr, "no echo for the datagram", "repeat")


# --- first hour -----------------------------------------------------------------------


class FirstHourTests:
    """What a new user sees: where certificates are, and files that stay tidy."""

    def test_serve_ssl_names_its_certificate_directory_every_start(self, tmp_path: Path) -> None:
        """Each start of serve ssl: says which certificate directory it uses, in one line."""
        cert_dir = tmp_path / "certs"
        outputs = []
        for _ in range(2):
            process = subprocess.Popen(
                [*ECHOKIT, "serve", "ssl:0:interface=127.0.0.1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ, ECHOKIT_CERT_DIR=str(cert_dir), PYTHONUNBUFFERED="1"),
            )
            assert process.stdout is not None
            lines: list[str] = []
            try:
                while not any(" listening on " in line for line in lines):
                    line = process.stdout.readline().decode()
                    assert line, (lines, process.wait())
                    lines.append(line)
            finally:
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=15)
            outputs.append([line for line in lines if str(cert_dir) in line])
        assert outputs[0] == [
            f"created a CA and certificates in {cert_dir} (clients trust {cert_dir / 'ca.pem'})\n"
        ]
        assert outputs[1] == [
            f"using the certificates in {cert_dir} (clients trust {cert_dir / 'ca.pem'})\n"
        ]

    def test_test_certificates_are_removed(self, tmp_path: Path) -> None:
        """The test suite's generated CA and keys (tests.realnet.cert_store) go at exit."""
        code = "from tests.realnet import cert_store; print(cert_store().directory)"
        result = subprocess.run(
            [*ECHOKIT[:1], "-c", code],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
            cwd=Path(__file__).parent.parent,
        )
        assert result.returncode == 0, result.stderr
        directory = Path(result.stdout.decode().strip())
        assert directory.name.startswith("echokit-test-certs-"), directory
        assert not directory.exists(), sorted(directory.iterdir())


# --- the line splitter of UDP pipe mode and interactive mode ---------------------------


class LineSplitterTests:
    """L{_Lines}: lines split however the input arrives; a line over the limit refused at once."""

    def test_lines_across_reads(self) -> None:
        """Lines split across reads, several lines in one read: each line once, whole."""
        from twisted.internet import defer

        from echokit.client.connect import _Lines

        lines = _Lines()
        for chunk in [b"on", b"e\ntw", b"o\nthree\nfo", b"ur"]:
            lines.feed(chunk)
        lines.end()
        got = []
        while True:
            d = defer.ensureDeferred(lines.next())
            line = d.result if d.called else None
            if line is None:
                break
            got.append(line)
        assert got == [b"one\n", b"two\n", b"three\n", b"four"]

    def test_line_over_the_limit_refused_before_it_ends(self) -> None:
        """A partial line longer than the limit makes the next line an InputError, now."""
        from twisted.internet import defer
        from twisted.python.failure import Failure

        from echokit.client.connect import _Lines
        from echokit.errors import InputError

        lines = _Lines(limit=100)
        lines.feed(b"x" * 60)
        waiting = defer.ensureDeferred(lines.next())
        assert not waiting.called
        lines.feed(b"x" * 60)  # no newline yet: 120 bytes are already too many
        failure: list[Failure] = []

        def failed(reason: Failure) -> None:
            failure.append(reason)

        waiting.addErrback(failed)
        assert failure and failure[0].check(InputError), failure
        assert "a line of more than 120 bytes does not fit" in failure[0].getErrorMessage()
        assert len(lines.partial) == 120  # nothing more is kept
