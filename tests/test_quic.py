"""
QUIC (quic:) end to end on loopback: echokit's server and clients, aioquic's own client.

In-process tests run echokit's QUIC server and client on one reactor over real UDP
sockets; the interop and bad-input tests run C{echokit serve quic:0} as a child process
and reach it with aioquic's asyncio client (L{tests.quic_peer}), echokit's CLI, a udp:
client and an ssl: client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from echokit.client.connect import close_datagrams, open_datagram, open_stream
from echokit.errors import ConnectFailed, EndpointError, InputError
from echokit.runtime.policy import ServerPolicy
from echokit.server.serve import drain
from echokit.transports import quic
from echokit.transports.endpoints import ipv6_unavailable
from echokit.transports.grammar import parse_client, parse_server
from tests.realnet import EchoSession, cert_store, deferred_test, eventually, random_bytes
from tests.support import echokit_server, port_of, run_echokit, skip_reason
from tests.test_deploy import child_env, running, summary_line, twistd

udp_reactor: Any = reactor
NO_IPV6 = ipv6_unavailable()


def _server(listener: Any) -> Any:
    """The QuicEchoServer of a quic: listener."""
    return listener.server


def _held(listener: Any) -> int:
    """Bytes the server holds for its clients: echo written and not yet acknowledged."""
    return sum(
        len(stream.sender._buffer)
        for connection in _server(listener).open_protocols
        for stream in connection.connection._streams.values()
    )


class _NeverReads(QuicConnection):
    """A client whose application never reads: it grants the server no more credit."""

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        return

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        return


class QuicEchoTests(TestCase):
    """echokit's QUIC server and clients, one reactor, real UDP sockets."""

    @deferred_test
    async def test_stream_echo_then_fin_with_more_than_the_windows_hold(self) -> None:
        """
        4 MiB on one stream then its FIN (four times the server's and the client's flow
        control windows): every byte comes back, then the server's FIN.
        """
        session = EchoSession(self)
        [listener] = await session.serve("quic:0")
        echoed: list[bytes] = []
        connection = await session.stream(listener, echoed.append)
        protocol = connection.protocol
        payload = random_bytes(4 << 20)
        protocol.send(payload)
        protocol.finish()  # the FIN, right behind the data
        await protocol.done  # fails if the server's FIN came before the whole echo
        self.assertEqual(b"".join(echoed), payload)
        await protocol.closed  # once the server's FIN came (or CLOSE_WAIT ran out)
        self.assertTrue(protocol.transport.fin_received)  # type: ignore[attr-defined]
        await eventually(lambda: _server(listener).stats.bytes == len(payload))

    @deferred_test
    async def test_datagrams_echoed_when_negotiated(self) -> None:
        """DATAGRAM frames come back intact, up to the largest one frame carries."""
        session = EchoSession(self)
        [listener] = await session.serve("quic:0")
        spec = parse_client(listener.connect_string + ":datagram=yes")
        client = await open_datagram(reactor, spec, session.options)
        try:
            for size in (1, 64, 1000, quic.MAX_DATAGRAM_PAYLOAD):
                payload = random_bytes(size)
                result = await client.request(payload)
                self.assertEqual(result.echo, payload)
            with self.assertRaises(InputError):
                client.request(random_bytes(quic.MAX_DATAGRAM_PAYLOAD + 1))
        finally:
            await close_datagrams(client)
        await eventually(lambda: _server(listener).stats.datagrams == 4)

    async def _flood_without_reading(self, connection_class: type[QuicConnection] | None) -> int:
        """
        A client that never reads sends 16 MiB on one stream for up to 3 s; return the
        most the server held for it at once.
        """
        session = EchoSession(self)
        [listener] = await session.serve("quic:0")
        if connection_class is not None:  # else the server's own (EchoQuicConnection)
            _server(listener).connection_class = connection_class
        configuration = quic.client_configuration(
            "localhost", cert_store().ca_cert, insecure=False, datagrams=False
        )
        configuration.max_data = configuration.max_stream_data = 64 * 1024
        client = quic.ClientConnection(reactor, configuration, "test")
        client.connection = _NeverReads(configuration=configuration)
        port = udp_reactor.listenUDP(0, client, interface="127.0.0.1")

        def close() -> defer.Deferred[None]:
            client.close()
            return client.terminated

        self.addCleanup(close)
        address = listener.port.getHost()
        port.connect(address.host, address.port)  # type: ignore[attr-defined]
        client.start((address.host, address.port))  # type: ignore[attr-defined]
        await client.ready
        stream = client.connection.get_next_available_stream_id()
        client.connection.send_stream_data(stream, random_bytes(16 << 20))
        client.transmit()
        most = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            most = max(most, _held(listener))
            await task.deferLater(reactor, 0.05, lambda: None)
        client.close()
        await client.terminated
        return most

    @deferred_test
    async def test_client_that_never_reads_cannot_grow_server_memory(self) -> None:
        """
        The server extends a client's credit only as its echo is acknowledged: a client
        that never reads gets the server to hold about one window, not its 16 MiB. With
        aioquic's own windows (which double as data arrives) the same client makes it
        hold several times more: the test reaches the state where the limit matters.
        """
        held = await self._flood_without_reading(None)
        self.assertLessEqual(held, quic.WINDOW + 64 * 1024)
        unbounded = await self._flood_without_reading(QuicConnection)
        self.assertGreater(unbounded, 3 * quic.WINDOW)

    async def _held_by_paused_client(self, seconds: float, enough: int = 4 << 20) -> int:
        """
        A client whose transport is paused (as stdout full pauses it) sends 4 MiB; return
        the most it held back, unread, within C{seconds} (or once it held C{enough}); then
        resume and check the whole echo (only if it held back less than C{enough}).
        """
        session = EchoSession(self)
        [listener] = await session.serve("quic:0")
        connection = await session.stream(listener)
        protocol = connection.protocol
        transport: Any = protocol.transport
        transport.pauseProducing()
        protocol.send(random_bytes(4 << 20))
        most = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and most < enough:
            most = max(most, sum(len(data) for data in transport._held))
            await task.deferLater(reactor, 0.05, lambda: None)
        if most >= enough:  # the contrast run: no need to wait for the rest
            protocol.done.addErrback(lambda _: None)
            transport.abortConnection()
            await protocol.closed
            return most
        transport.resumeProducing()
        protocol.finish()
        await protocol.done  # every byte came back once resumed
        await protocol.closed
        return most

    @deferred_test
    async def test_paused_client_holds_one_window(self) -> None:
        """
        A paused client grants the server no credit for what it holds back: it holds at
        most one window of echo, not the 4 MiB sent; with aioquic's own windows the same
        client holds several times more (the test reaches the state that matters).
        """
        held = await self._held_by_paused_client(3)
        self.assertLessEqual(held, quic.WINDOW + 64 * 1024)
        self.patch(quic, "ClientQuicConnection", QuicConnection)
        unbounded = await self._held_by_paused_client(15, enough=2 * quic.WINDOW + 1)
        self.assertGreater(unbounded, 2 * quic.WINDOW)

    @deferred_test
    async def test_drain_closes_idle_connections_and_aborts_open_streams(self) -> None:
        """
        On shutdown a connection with no stream open is closed at once; one whose stream
        is still open is aborted when the drain time is up; then the socket closes.
        """
        session = EchoSession(self)
        [listener] = await session.serve("quic:0")
        spec = parse_client(listener.connect_string)
        busy = await open_stream(reactor, spec, session.options)
        busy.protocol.send(b"still talking")
        await busy.protocol.wait_echoed()
        idle = await open_datagram(
            reactor, parse_client(listener.connect_string + ":datagram=yes"), session.options
        )
        self.assertEqual(len(_server(listener).open_protocols), 2)
        started = time.monotonic()
        aborted = await drain(reactor, [listener], 0.5)
        self.assertEqual(aborted, 1)
        self.assertGreaterEqual(time.monotonic() - started, 0.5)
        self.assertEqual(_server(listener).open_protocols, set())
        await busy.protocol.closed
        self.assertTrue(idle.stopped)
        busy.protocol.done.addErrback(lambda _: None)

    @deferred_test
    async def test_connection_limit_refuses_with_a_reason(self) -> None:
        """Over --max-connections a QUIC client is refused, and told why."""
        session = EchoSession(self)
        session.policy = ServerPolicy(max_connections=1)
        [listener] = await session.serve("quic:0")
        spec = parse_client(listener.connect_string)
        first = await open_stream(reactor, spec, session.options)
        with self.assertRaises(ConnectFailed) as caught:
            await open_stream(reactor, spec, session.options)
        self.assertIn("over the total connection limit", str(caught.exception))
        self.assertEqual(_server(listener).stats.refused, 1)
        first.protocol.finish()
        await first.protocol.done
        await first.protocol.closed

    @deferred_test
    async def test_handshake_timeout(self) -> None:
        """A client that starts a handshake and goes silent is closed after the timeout."""
        session = EchoSession(self)
        session.policy = ServerPolicy(handshake_timeout=0.3)
        [listener] = await session.serve("quic:0")
        configuration = quic.client_configuration("localhost", None, True, False)
        silent = QuicConnection(configuration=configuration)
        address = listener.port.getHost()
        target = (address.host, address.port)  # type: ignore[attr-defined]
        silent.connect(target, now=time.monotonic())
        [(first, _)] = silent.datagrams_to_send(now=time.monotonic())[:1]
        port = udp_reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(lambda: defer.maybeDeferred(port.stopListening))
        port.write(first, target)
        await eventually(lambda: _server(listener).stats.timeouts == 1, 5)
        await eventually(lambda: not _server(listener).open_protocols, 5)

    @deferred_test
    async def test_idle_timeout_ends_a_silent_connection(self) -> None:
        """A connection silent for --idle-timeout ends (QUIC's own idle timeout), counted."""
        session = EchoSession(self)
        session.policy = ServerPolicy(idle_timeout=0.5)
        [listener] = await session.serve("quic:0")
        spec = parse_client(listener.connect_string)
        connection = await open_stream(reactor, spec, session.options)
        connection.protocol.send(b"then nothing")
        await connection.protocol.wait_echoed()
        connection.protocol.done.addErrback(lambda _: None)
        await eventually(lambda: _server(listener).stats.timeouts == 1, 10)
        self.assertEqual(_server(listener).open_protocols, set())
        connection.protocol.transport.abortConnection()
        await connection.protocol.closed

    @deferred_test
    async def test_retry_validates_the_address_first(self) -> None:
        """With retry=yes a client proves its address (a Retry round trip), then echoes."""
        session = EchoSession(self)
        [listener] = await session.serve("quic:0:retry=yes")
        connection = await session.stream(listener)
        connection.protocol.send(b"after a retry")
        connection.protocol.finish()
        await connection.protocol.done
        await connection.protocol.closed
        await eventually(lambda: _server(listener).stats.bytes == len(b"after a retry"))
        self.assertEqual(_server(listener).retries, 1)

    @pytest.mark.skipif(skip_reason(NO_IPV6) is not None, reason=f"{NO_IPV6}")
    @deferred_test
    async def test_ipv6_loopback(self) -> None:
        """quic:0:interface=::1 listens on ::1, and its announced string reaches it."""
        session = EchoSession(self)
        [listener] = await session.serve("quic:0:interface=\\:\\:1")
        self.assertIn("host=\\:\\:1", listener.connect_string)
        connection = await session.stream(listener)
        connection.protocol.send(b"over IPv6")
        connection.protocol.finish()
        await connection.protocol.done
        await connection.protocol.closed


class QuicGrammarTests(TestCase):
    def test_server_keywords(self) -> None:
        """quic:PORT takes interface=, certKey=/privateKey= and retry=yes, nothing else."""
        spec = parse_server("quic:16443:interface=\\:\\:1:retry=yes")
        self.assertEqual((spec.get("port"), spec.get("interface"), spec.get("retry")),
                         (16443, "::1", True))  # fmt: skip
        with self.assertRaises(EndpointError) as caught:
            parse_server("quic:16443:alpn=h3")
        self.assertIn("unknown keyword 'alpn'", str(caught.exception))
        with self.assertRaises(EndpointError):
            parse_server("quic:16443:retry=maybe")

    def test_client_keywords(self) -> None:
        """quic:host=H:port=P takes datagram=yes|no; a bad value says what to write."""
        self.assertTrue(parse_client("quic:host=localhost:port=1:datagram=yes").get("datagram"))
        with self.assertRaises(EndpointError) as caught:
            parse_client("quic:host=localhost:port=1:datagram=1")
        self.assertIn("write datagram=yes", str(caught.exception))


def _peer(port: int, ca: Path, *args: str) -> dict[str, Any]:
    """Run aioquic's own client (tests.quic_peer) against 127.0.0.1:PORT."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.quic_peer", "127.0.0.1", str(port), str(ca), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


class QuicInteropTests:
    """aioquic's asyncio client, in its own process, against `echokit serve quic:0`."""

    def test_concurrent_streams_echo_exactly_with_fin(self, tmp_path: Path) -> None:
        """Three streams at once on one connection, 1.5 MB each: each echoed whole, FIN last."""
        with echokit_server(["quic:0"], tmp_path) as server:
            port = port_of(server.connect_strings[0])
            result = _peer(port, tmp_path / "ca.pem", "streams", "3", "1500000")
            log = server.stop()
        assert result == {
            "streams": [{"sent": 1_500_000, "echoed": 1_500_000, "intact": True}] * 3
        }, result
        assert "after echoing 4500000 bytes on 3 stream(s)" in log, log

    def test_datagrams(self, tmp_path: Path) -> None:
        """DATAGRAM frames from aioquic's client come back intact."""
        with echokit_server(["quic:0"], tmp_path) as server:
            result = _peer(
                port_of(server.connect_strings[0]), tmp_path / "ca.pem", "datagrams", "5"
            )
        assert result == {"datagrams": 5, "intact": True}, result

    def test_bad_clients_get_clear_errors_and_the_server_keeps_serving(
        self, tmp_path: Path
    ) -> None:
        """
        A QUIC client offering ALPN h3, a udp: client and an ssl: (TLS over TCP) client:
        each fails with a clear error, the server logs one line for each, and still
        echoes for the next client.
        """
        with echokit_server(["quic:0"], tmp_path) as server:
            text = server.connect_strings[0]
            port = port_of(text)
            alpn = _peer(port, tmp_path / "ca.pem", "alpn", "h3")
            udp = run_echokit(
                ["connect", f"udp:host=127.0.0.1:port={port}", "-m", "hi", "--timeout", "0.5"],
                tmp_path,
            )
            tls = run_echokit(["connect", f"ssl:host=localhost:port={port}", "-m", "hi"], tmp_path)
            good = run_echokit(["connect", text, "-m", "still here"], tmp_path)
            log = server.stop()
        assert "error" in alpn, alpn
        assert log.count("QUIC handshake with") == 1 and "No common ALPN" in log, log
        assert udp.returncode == 1 and b"no echo for the datagram" in udp.stderr
        assert log.count("not a QUIC packet") == 1, log
        assert tls.returncode == 1 and b"connection refused" in tls.stderr, tls.stderr
        assert good.returncode == 0 and good.stdout.startswith(b"still here"), good.stderr
        assert "Traceback" not in log


class QuicCommandTests:
    """echokit connect, serve and compare over quic:, as a user runs them."""

    def test_connect_pipe_streams_stdin_and_summary_counts(self, tmp_path: Path) -> None:
        """1 MiB piped through `echokit connect quic:...` comes back exactly."""
        payload = os.urandom(1 << 20)
        with echokit_server(["quic:0"], tmp_path) as server:
            text = server.connect_strings[0]
            assert "(add :datagram=yes for QUIC datagrams)" in server.announcements[0]
            piped = run_echokit(["connect", text], tmp_path, stdin=payload)
            datagrams = run_echokit(["connect", text + ":datagram=yes", "-m", "hi", "-n", "2"],
                                    tmp_path)  # fmt: skip
            server.stop()
            assert server.process.stdout is not None
            summary = server.process.stdout.read().decode()
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == payload
        assert datagrams.returncode == 0 and datagrams.stdout.count(b"hi  (") == 2
        assert "2 connections, 1 streams, 1,048,576 bytes and 2 datagrams echoed" in summary

    def test_twistd_listen_quic(self, tmp_path: Path) -> None:
        """`twistd -n echokit --listen quic:0` announces, echoes, and summarizes on SIGTERM."""
        env = child_env(tmp_path / "certs", checkout=True)
        with running(twistd("echokit", "--listen", "quic:0"), tmp_path, env) as child:
            (text,) = child.wait_announced(1)
            assert text.startswith("quic:host=127.0.0.1:port="), text
            done = run_echokit(["connect", text, "-m", "via twistd"], tmp_path / "certs")
            child.stop(signal.SIGTERM)
        assert done.returncode == 0 and done.stdout.startswith(b"via twistd"), done.stderr
        assert summary_line(child.text(), "quic:0").startswith(
            "quic:0: 1 connections, 1 streams, 10 bytes and 0 datagrams echoed"
        ), child.text()

    def test_client_errors_are_one_line(self, tmp_path: Path) -> None:
        """Nothing there, a udp echo server, an unknown CA: each a clear message, exit 1."""
        other = tmp_path / "other"
        assert run_echokit(["certs"], other).returncode == 0
        with echokit_server(["udp:0", "quic:0"], tmp_path) as server:
            udp_port, quic_text = port_of(server.connect_strings[0]), server.connect_strings[1]
            closed = run_echokit(["connect", "quic:host=127.0.0.1:port=9", "-m", "x"], tmp_path)
            not_quic = run_echokit(
                ["connect", f"quic:host=127.0.0.1:port={udp_port}:timeout=1", "-m", "x"], tmp_path
            )
            untrusted = run_echokit(
                ["connect", f"{quic_text}:trustRoots={other / 'ca.pem'}", "-m", "x"], tmp_path
            )
        for done in (closed, not_quic, untrusted):
            assert done.returncode == 1, done
            assert len(done.stderr.decode().strip().splitlines()) == 1, done.stderr
        assert b"no QUIC server at" in closed.stderr
        assert b"no QUIC handshake from" in not_quic.stderr
        assert b"certificate" in untrusted.stderr and b"trustRoots=" in untrusted.stderr

    def test_missing_aioquic_gives_a_one_line_hint(self, tmp_path: Path) -> None:
        """Without aioquic, a quic: string says how to install it (exit 2, no traceback)."""
        code = (
            "import sys; sys.modules['aioquic'] = None; sys.argv = ['echokit', 'connect', "
            "'quic:host=127.0.0.1:port=9', '-m', 'x']; from echokit.cli import entry; entry()"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 2, done
        assert b"pip install 'echokit[quic]'" in done.stderr
        assert b"Traceback" not in done.stderr

    def test_workers_refuse_quic(self, tmp_path: Path) -> None:
        """--workers cannot share a QUIC socket: refused before anything listens."""
        done = run_echokit(["serve", "--workers", "2", "quic:0"], tmp_path)
        assert done.returncode == 2 and b"without --workers" in done.stderr

    def test_compare_quic_streams_and_datagrams(self, tmp_path: Path) -> None:
        """`echokit compare quic quic-dgram --json`: both measured, the stream intact."""
        done = run_echokit(
            ["compare", "quic", "quic-dgram", "--json", "--duration", "0.3", "--warmup", "0"],
            tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert [r["transport"] for r in rows] == ["quic", "quic-dgram"]
        for row in rows:
            assert row["error"] is None and row["messages_per_s"] > 0, row
            assert row["latency_us"]["p50"] > 0
        assert rows[0]["lost"] == rows[0]["corrupted"] == 0
        assert rows[0]["endpoint"] + ":datagram=yes" != rows[1]["endpoint"]  # two servers
