"""
C{make mutants}: break each guarantee of the README on purpose and check that a test
notices.

Each L{Mutant} is one deliberate breakage of one row of the README's Guarantees table:
an exact piece of text in one file and what replaces it. For each, the tracked files of
this checkout are copied to a scratch directory, the replacement is made there (it must
match exactly once: a refactor that moves the text makes this fail loudly, rather than
letting the mutant silently vanish), and only the tests named to kill it run against
the copy. A mutant is killed when those tests fail; one they pass survives, and the run
fails naming it. The run also fails if a mutant's tests cannot run at all (pytest exit
status other than 0 or 1: a bad node id, a collection error).

    python -m tests.mutants            # every mutant
    python -m tests.mutants --list     # what each breaks, and the tests that kill it
    python -m tests.mutants NAME ...   # only these

Run from the checkout's root with its virtualenv's Python (C{make mutants} does). The
copy runs with C{PYTHONPATH} set to it, so the C{echokit} command the tests start as a
child process is the mutated one too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    """One deliberate breakage: replace C{old} by C{new} in C{path}."""

    name: str
    guarantee: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]

    def apply(self, root: Path) -> None:
        """Make the replacement under C{root}; fail loudly unless C{old} is there once."""
        target = root / self.path
        text = target.read_text()
        found = text.count(self.old)
        if found != 1:
            raise SystemExit(
                f"make mutants: mutant {self.name}: its text occurs {found} times in "
                f"{self.path} (expected once): update tests/mutants.py to the code as it "
                f"is now\n--- text ---\n{self.old}"
            )
        target.write_text(text.replace(self.old, self.new))


T = "tests/test_transports.py"
H = "tests/test_hardening.py"
TL = "tests/test_tlslayer.py"
D = "tests/test_deploy.py"
Q = "tests/test_quic.py"
W = "tests/test_websocket.py"

MUTANTS = [
    Mutant(
        "no-half-close",
        "Half-close loses nothing (tcp, tcp6, unix): the stream echo server no longer "
        "provides IHalfCloseableProtocol, so Twisted tears the connection down at the FIN",
        "echokit/transports/stream.py",
        "@implementer(IHalfCloseableProtocol, IHandshakeListener",
        "@implementer(IHandshakeListener",
        (
            f"{T}::HalfCloseWhileServerHoldsEchoTests::test_fin_while_server_holds_echo_loses_nothing[tcp]",
            f"{T}::HalfCloseWhileServerHoldsEchoTests::test_fin_while_server_holds_echo_loses_nothing[unix]",
        ),
    ),
    Mutant(
        "tls-fin-closes",
        "Half-close over TLS (a FIN without close_notify): the TLS layer no longer provides "
        "IHalfCloseableProtocol to its TCP connection",
        "echokit/transports/tlslayer.py",
        "@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableProtocol)",
        "@implementer(ITransport, IConsumer, IPushProducer)",
        (f"{T}::TLSHalfCloseTests::test_half_close_while_server_holds_echo[fin-only]",),
    ),
    Mutant(
        "tls-close-notify-aborts",
        "Half-close over TLS (close_notify): the TLS layer aborts at the peer's close_notify",
        "echokit/transports/tlslayer.py",
        "        if finished and not self._aborted:\n            self._peer_finished()",
        "        if finished and not self._aborted:\n            self.abortConnection()",
        (f"{T}::TLSHalfCloseTests::test_half_close_while_server_holds_echo[close_notify]",),
    ),
    Mutant(
        "proxy-fin-closes",
        "Half-close behind a PROXY header (haproxy: listeners pass half-close on): the "
        "header wrapper no longer provides IHalfCloseableProtocol",
        "echokit/transports/proxy.py",
        "@implementer(IHalfCloseableProtocol)\nclass ProxyHeaderProtocol",
        "class ProxyHeaderProtocol",
        (f"{D}::HAProxyTests::test_half_close_echoes_everything[haproxy]",),
    ),
    Mutant(
        "write-through-skips-a-byte",
        "Random payloads echo exactly: the write-through path drops one byte whenever the "
        "kernel takes only part of a write",
        "echokit/transports/fastpath.py",
        "        if sent < len(data):\n            t.write(data[sent:])",
        "        if sent < len(data):\n            t.write(data[sent + 1 :])",
        (f"{T}::TCPEchoTests::test_random_payloads_echo_exactly",),
    ),
    Mutant(
        "tls-delivers-per-record",
        "The TLS layer: one write per read (all plaintext decrypted from one read is "
        "handed over at once, so its echo leaves in one write): one delivery per record",
        "echokit/transports/tlslayer.py",
        '            self.wrapped.dataReceived(chunks[0] if len(chunks) == 1 else b"".join(chunks))',
        "            for chunk in chunks:\n                self.wrapped.dataReceived(chunk)",
        (f"{TL}::TLSServerProtocolTests::test_one_read_is_one_delivery_and_one_write",),
    ),
    Mutant(
        "udp-reads-8k",
        "UDP: 1 byte to 65,507 bytes intact: datagrams are read into 8 KiB",
        "echokit/transports/datagram.py",
        "READ_SIZE = 65_536",
        "READ_SIZE = 8192",
        (f"{T}::UDPEchoTests::test_ipv4_datagrams_up_to_65507_bytes",),
    ),
    Mutant(
        "port-error-escapes",
        "Any string: endpoint parsing succeeds or raises echokit's one-line error: a port "
        "that is not a number raises Python's ValueError",
        "echokit/transports/grammar.py",
        "            port = int(value, 10)\n        except ValueError:",
        "            port = int(value, 10)\n        except KeyError:",
        (
            "tests/test_properties.py::EndpointParsingPropertyTests::"
            "test_any_string_parses_or_raises_endpoint_error",
        ),
    ),
    Mutant(
        "no-backpressure",
        "Backpressure: the echo protocol never stops reading when its transport asks it "
        "to pause, so a client that never reads makes the server buffer without bound",
        "echokit/transports/stream.py",
        "        if held is None or not self.factory.budget.hold(self, held):\n"
        "            self._pause_reading()",
        "        if False:\n            self._pause_reading()",
        (f"{H}::BackpressureTests",),
    ),
    Mutant(
        "tls-pause-ignored",
        "Backpressure over TLS: pausing the TLS layer no longer pauses its TCP connection",
        "echokit/transports/tlslayer.py",
        "    def pauseProducing(self) -> None:\n        self.transport.pauseProducing()",
        "    def pauseProducing(self) -> None:\n        pass",
        (f"{TL}::TLSLayerRealSocketTests",),
    ),
    Mutant(
        "idle-never",
        "Idle timeout closes a silent peer: the idle sweep always finds the peer recent",
        "echokit/transports/stream.py",
        "            if now - heard >= timeout:",
        "            if False:",
        (f"{H}::IdleTimeoutTests",),
    ),
    Mutant(
        "no-handshake-timeout",
        "TLS handshake timeout: a TLS connection gets the idle timer instead",
        "echokit/transports/stream.py",
        "        if factory.is_tls and policy.handshake_timeout:",
        "        if False:",
        (f"{H}::HandshakeTimeoutTests::test_plaintext_client_that_says_nothing_is_closed",),
    ),
    Mutant(
        "no-close-grace",
        "A graceful close that cannot complete is aborted: no close_grace timer",
        "echokit/transports/stream.py",
        "        grace = self.factory.policy.close_grace\n        if grace:",
        "        grace = self.factory.policy.close_grace\n        if False:",
        (f"{H}::NeverReadingPeerTests",),
    ),
    Mutant(
        "total-limit-off-by-one",
        "--max-connections: one connection more than the limit is admitted",
        "echokit/runtime/policy.py",
        "self.open >= self.max_connections",
        "self.open > self.max_connections",
        (f"{H}::ConnectionLimitTests::test_max_connections",),
    ),
    Mutant(
        "per-peer-counts-proxy",
        "--max-per-peer behind a PROXY header: the limit counts the proxy's address, not "
        "the client's",
        "echokit/transports/stream.py",
        "        self.peer_key = peer_key(self.transport, credentials)",
        "        self.peer_key = peer_key(getattr(self.transport, 'transport', self.transport), credentials)",
        (f"{D}::HAProxyTests::test_per_peer_limit_behind_proxy_counts_each_client",),
    ),
    Mutant(
        "tls-keeps-wrapped",
        "A closed connection is freed by reference counting: the TLS layer keeps the "
        "protocol it wraps, which points back at it (a cycle only a full gc frees)",
        "echokit/transports/tlslayer.py",
        "        wrapped, self.wrapped = self.wrapped, _DETACHED",
        "        wrapped = self.wrapped",
        ("tests/test_reliability.py::MemoryGivenBackTests",),
    ),
    Mutant(
        "no-echo-buffer",
        "Naive clients get 4 MiB back: the server stops reading as soon as the transport "
        "holds 256 KiB of unsent echo, whatever the echo buffer",
        "echokit/transports/stream.py",
        "        if held is None or not self.factory.budget.hold(self, held):",
        "        if True:",
        (
            "tests/test_reliability.py::NaiveClientTests::"
            "test_blocking_client_gets_4_mib_back_on_every_stream_transport",
        ),
    ),
    Mutant(
        "no-shedding",
        "No address locks out the others: at --max-connections every newcomer is refused",
        "echokit/transports/stream.py",
        "        victim = factory.limiter.shed_for(self.peer_key)",
        "        victim = None",
        ("tests/test_reliability.py::FairnessTests",),
    ),
    Mutant(
        "unix-peers-one",
        "--max-per-peer on unix sockets counts by user id: every unix peer is one peer",
        "echokit/transports/stream.py",
        '    return f"uid {credentials[0]}" if credentials is not None else "unix"',
        '    return "unix"',
        ("tests/test_reliability.py::UnixPeerTests",),
    ),
    Mutant(
        "warnings-unthrottled",
        "Per-connection warnings are throttled like refusals: every one is logged",
        "echokit/transports/stream.py",
        "        suppressed = gate.ready(self.clock.seconds())\n        if suppressed is None:\n"
        "            return",
        "        suppressed = gate.ready(self.clock.seconds()) or 0",
        ("tests/test_reliability.py::WarningThrottleTests",),
    ),
    Mutant(
        "unix-lock-left-behind",
        "A unix listener that cannot start leaves no .lock behind: the lock is kept",
        "echokit/server/listeners.py",
        "            remove_own_lock(plan.spec)\n",
        "",
        (
            "tests/test_reliability.py::UnixPathTests::"
            "test_regular_file_and_symlink_are_named_and_leave_no_lock",
        ),
    ),
    Mutant(
        "memory-kept",
        "Memory given back: freed memory is not handed back when the last connection closes",
        "echokit/transports/stream.py",
        "            give_back_freed_memory()\n",
        "            pass\n",
        (
            "tests/test_reliability.py::MemoryAfterRoundsTests::"
            "test_rss_after_three_rounds_of_slow_clients_stays_near_the_first",
        ),
    ),
    Mutant(
        "udp-guard-off",
        "UDP reflection loop dies: the repeat guard never sees a repeat",
        "echokit/runtime/policy.py",
        "        elif key in recent:\n            return True",
        "        elif key in recent:\n            return False",
        (f"{H}::UDPReflectionTests::test_one_spoofed_datagram_does_not_loop_forever",),
    ),
    Mutant(
        "udp-guard-limits-all",
        "UDP benchmark traffic is not hurt by the guard: every datagram spends a repeat "
        "token, repeat or not",
        "echokit/transports/datagram.py",
        "        if guard.is_repeat(addr, datagram) and not guard.allow_repeat(",
        "        if not guard.allow_repeat(",
        (
            "tests/test_protocols.py::EchoDatagramServerTests::"
            "test_distinct_datagrams_at_once_are_all_echoed",
        ),
    ),
    Mutant(
        "default-limit-1000",
        "2,000 concurrent connections with default flags: the default --max-connections is 1,000",
        "echokit/runtime/policy.py",
        "    max_connections: int = 10_000",
        "    max_connections: int = 1_000",
        (f"{H}::ConcurrencyTests",),
    ),
    Mutant(
        "accept-warnings-unthrottled",
        "Out of file descriptors on accept: a throttled warning, not one per connection",
        "echokit/runtime/logs.py",
        "        suppressed = self.gate.ready(time.monotonic())\n"
        "        if suppressed is None:\n            return",
        "        suppressed = 0",
        (
            "tests/test_logging.py::AcceptTroubleWarningsTests::"
            "test_a_burst_of_accept_failures_is_one_warning",
            f"{H}::FileDescriptorExhaustionTests::"
            "test_emfile_on_accept_is_survived_and_logged_once",
        ),
    ),
    Mutant(
        "udp-privileged-ports",
        "UDP: datagrams from source ports below 1024 (echo, chargen) are answered",
        "echokit/transports/datagram.py",
        "LOWEST_SOURCE_PORT = 1024",
        "LOWEST_SOURCE_PORT = 0",
        (f"{H}::UDPReflectionTests::test_datagrams_from_privileged_source_ports_are_dropped",),
    ),
    Mutant(
        "unix-mode-open",
        "Unix sockets 0600 by default: created 0666",
        "echokit/transports/endpoints.py",
        "DEFAULT_UNIX_MODE = 0o600",
        "DEFAULT_UNIX_MODE = 0o666",
        (f"{H}::UnixSocketTests",),
    ),
    Mutant(
        "tls-minimum-1.0",
        "TLS 1.2 minimum: the server accepts TLS 1.0 and 1.1",
        "echokit/transports/tls.py",
        "    context.minimum_version = stdlib_ssl.TLSVersion.TLSv1_2",
        "    context.minimum_version = stdlib_ssl.TLSVersion.TLSv1\n"
        "    context.set_ciphers('DEFAULT:@SECLEVEL=0')",
        (f"{H}::TLSTests::test_versions",),
    ),
    Mutant(
        "client-skips-verification",
        "TLS clients verify certificate and hostname: echokit's client trusts anything",
        "echokit/transports/tls.py",
        "    if insecure:\n        return ssl.CertificateOptions(",
        "    if True:\n        return ssl.CertificateOptions(",
        (
            "tests/test_cli.py::ConnectFailureTests::test_wrong_hostname",
            "tests/test_cli.py::ConnectFailureTests::test_untrusted_certificate_from_option",
        ),
    ),
    Mutant(
        "mutual-tls-optional",
        "Mutual TLS: a client certificate is asked for but not required",
        "echokit/transports/tls.py",
        "        context.verify_mode = stdlib_ssl.CERT_REQUIRED",
        "        context.verify_mode = stdlib_ssl.CERT_OPTIONAL",
        (f"{H}::TLSTests::test_mutual_tls",),
    ),
    Mutant(
        "integrity-ignores-gaps",
        "Integrity counting: a message skipped over is not counted lost",
        "echokit/measure/integrity.py",
        "        elif seq > self._next:\n            self._missing.update(range(self._next, seq))",
        "        elif seq > self._next:\n            pass",
        (
            "tests/test_bench.py::MessageCheckerTests::test_lost_duplicated_reordered_corrupted",
            "tests/test_bench.py::BenchCommandTests::test_lossy_udp_peer_is_reported_with_its_loss",
        ),
    ),
    Mutant(
        "drain-never-ends",
        "SIGTERM: a connection still sending after the drain is aborted and its client "
        "sees a reset: the drain waits 1,000 times longer than --drain",
        "echokit/server/serve.py",
        "    for _ in range(max(0, int(seconds / 0.05))):\n        if not any(f.open_protocols",
        "    for _ in range(max(0, int(seconds / 0.05 * 1000))):\n        if not any(f.open_protocols",
        (
            "tests/test_reliability.py::AbortedAfterDrainTests::"
            "test_client_still_sending_after_the_drain_sees_a_reset",
        ),
    ),
    Mutant(
        "sigterm-drops-in-flight",
        "SIGTERM finishes in-flight echoes: open connections are aborted at once",
        "echokit/server/serve.py",
        "    for _ in range(max(0, int(seconds / 0.05))):\n        if not any(f.open_protocols",
        "    for _ in range(0):\n        if not any(f.open_protocols",
        (f"{H}::GracefulShutdownTests::test_sigterm_lets_an_echo_in_progress_finish",),
    ),
    Mutant(
        "ws-close-before-echo",
        "WebSocket: a close gets a close after every earlier message's echo: websockets' "
        "own answers (pongs, the close) go out first, before the echoes read with them",
        "echokit/transports/ws.py",
        "        out: list[bytes] = []\n        answered = 0\n",
        "        out: list[bytes] = list(replies)\n        answered = len(replies)\n",
        (f"{W}::WebSocketEchoTests::test_answers_keep_the_order_of_what_they_answer",),
    ),
    Mutant(
        "ws-frames-unbudgeted",
        "WebSocket backpressure: frames still arriving (held whole) never stop a reader, "
        "so clients sending large frames make the server hold them all",
        "echokit/transports/ws.py",
        "            if not self.factory.frames.hold(self, held):",
        "            if not self.factory.frames.hold(self, held) and False:",
        (f"{W}::FrameBudgetTests",),
    ),
    Mutant(
        "ws-unread-echo-frees-budget",
        "WebSocket backpressure: a large frame's echo keeps its share of the frames' budget "
        "until it is sent: the share is never given back, so other readers wait forever",
        "echokit/transports/ws.py",
        "        if self._holding_frame:\n            self._hold_frame()\n        super()",
        "        if False:\n            self._hold_frame()\n        super()",
        (
            f"{W}::FrameBudgetTests::test_stopped_for_its_unsent_echo_it_reads_again_once_that_is_sent",
            f"{W}::FrameBudgetRealSocketTests",
        ),
    ),
    Mutant(
        "ws-short-unsent-echo-held",
        "WebSocket backpressure: an unsent echo too short to pause the connection (so "
        "nothing says when it is sent) keeps its share, and others wait on it",
        "echokit/transports/ws.py",
        "(queued if queued > READ_SIZE else 0)",
        "queued",
        (f"{W}::FrameBudgetTests::test_a_short_unsent_echo_keeps_no_share_nobody_frees",),
    ),
    Mutant(
        "quic-close-at-fin",
        "QUIC half-close: the server closes the connection at a stream's FIN instead of "
        "echoing the rest first",
        "echokit/transports/quic.py",
        "            connection.send_stream_data(event.stream_id, event.data, event.end_stream)",
        "            connection.send_stream_data(event.stream_id, event.data, event.end_stream)\n"
        "            if event.end_stream:\n"
        '                self.close(QuicErrorCode.NO_ERROR, "mutant")',
        (f"{Q}::QuicEchoTests::test_stream_echo_then_fin_with_more_than_the_windows_hold",),
    ),
    Mutant(
        "quic-doubling-windows",
        "QUIC backpressure: the server uses aioquic's own flow control (windows that double "
        "as data arrives) instead of sliding them with the acknowledged echo",
        "echokit/transports/quic.py",
        "        connection_class: type[QuicConnection] = EchoQuicConnection,",
        "        connection_class: type[QuicConnection] = QuicConnection,",
        (f"{Q}::QuicEchoTests::test_client_that_never_reads_cannot_grow_server_memory",),
    ),
    Mutant(
        "quic-datagrams-dropped",
        "QUIC DATAGRAM frames are echoed: the server drops them",
        "echokit/transports/quic.py",
        "            connection.send_datagram_frame(event.data)",
        "            pass",
        (f"{Q}::QuicEchoTests::test_datagrams_echoed_when_negotiated",),
    ),
    Mutant(
        "quic-client-doubling-windows",
        "QUIC client backpressure: a paused client keeps granting the server credit "
        "(aioquic's own windows)",
        "echokit/transports/quic.py",
        "connection = (connection_class or ClientQuicConnection)(configuration=configuration)",
        "connection = (connection_class or QuicConnection)(configuration=configuration)",
        (f"{Q}::QuicEchoTests::test_paused_client_holds_one_window",),
    ),
    Mutant(
        "latency-rounds-in-one-go",
        "compare's latency rounds take turns between transports: each transport's rounds "
        "run one after the other instead",
        "echokit/measure/interleave.py",
        "        for index in range(rounds):\n            for turn, probe in enumerate(live):",
        "        for turn, probe in enumerate(live):\n            for index in range(rounds):",
        (
            "tests/test_interleave.py::InterleavedLatencyTests::"
            "test_rounds_take_turns_into_one_histogram",
        ),
    ),
    Mutant(
        "floor-not-reported",
        "compare reports the floor measured in its latency rounds beside every transport: "
        "it is measured and then dropped",
        "echokit/measure/interleave.py",
        "                probe.result.latency_floor_us = floor_us\n",
        "                pass\n",
        (
            "tests/test_interleave.py::InterleavedLatencyTests::"
            "test_rounds_take_turns_into_one_histogram",
        ),
    ),
    Mutant(
        "udp-empty-read-per-datagram",
        "A UDP server with one datagram per wake-up does not read its socket until EAGAIN "
        "after each: it does, as Twisted's port does",
        "echokit/transports/fastpath.py",
        "        port.__class__ = _BatchAwareUDPPort",
        "        pass",
        (
            "tests/test_fastpath.py::DatagramReadTests::"
            "test_one_in_flight_reads_about_once_per_datagram",
        ),
    ),
    Mutant(
        "udp-never-batches-again",
        "A UDP server reading one datagram per wake-up goes back to batches when a queue "
        "builds up: it never looks",
        "echokit/transports/fastpath.py",
        "        return bool(self._poller.poll(0))",
        "        return False",
        (
            "tests/test_fastpath.py::DatagramReadTests::"
            "test_queued_datagrams_are_all_read_in_batches",
        ),
    ),
    Mutant(
        "read-maps-a-block-per-recv",
        "A fresh server's 256 KiB reads come from the heap: glibc maps and unmaps a block "
        "for every read again until the first connection closes",
        "echokit/transports/fastpath.py",
        "        keep_blocks_on_the_heap(READ_SIZE)\n",
        "",
        (
            "tests/test_fastpath.py::LargeReadsOnTheHeapTests::"
            "test_fresh_server_reads_without_a_page_fault_each",
        ),
    ),
]


def tracked_files() -> list[str]:
    """The files of this checkout that git tracks or would track (not the ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in listed.decode().split("\0") if name]


def scratch_copy(files: list[str], into: Path) -> None:
    for name in files:
        source = REPO / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def run_mutant(mutant: Mutant, files: list[str]) -> tuple[str, float, str]:
    """Apply C{mutant} to a scratch copy and run its tests: (verdict, seconds, output)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"echokit-mutant-{mutant.name}-") as scratch:
        root = Path(scratch)
        scratch_copy(files, root)
        mutant.apply(root)
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests],
            cwd=root,
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    verdict = {0: "SURVIVED", 1: "killed"}.get(result.returncode, f"ERROR ({result.returncode})")
    return verdict, time.monotonic() - started, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__)
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
    parser.add_argument("--show", action="store_true", help="show how each mutant was killed")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"no mutant named {', '.join(unknown)}; --list shows them")
    chosen = [known[name] for name in args.names] or MUTANTS
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name}: {mutant.guarantee}\n  killed by: {' '.join(mutant.tests)}")
        return 0
    files = tracked_files()
    started = time.monotonic()
    failed: list[str] = []
    for mutant in chosen:
        verdict, seconds, output = run_mutant(mutant, files)
        print(f"{mutant.name:28} {verdict:10} {seconds:6.1f} s", flush=True)
        if args.show and verdict == "killed":
            print("  " + "\n  ".join(line for line in output.splitlines() if line[:2] == "E "))
        if verdict != "killed":
            failed.append(mutant.name)
            print(f"  breaks: {mutant.guarantee}\n  tests run: {' '.join(mutant.tests)}")
            print("  " + "\n  ".join(output.strip().splitlines()[-15:]), flush=True)
    total = time.monotonic() - started
    killed = len(chosen) - len(failed)
    print(f"make mutants: {killed} of {len(chosen)} mutants killed in {total:.0f} s")
    if failed:
        print(f"make mutants: not killed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
