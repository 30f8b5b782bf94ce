"""
Unit tests of the echo protocols on Twisted's in-memory transports.

No sockets and no real time: L{StringTransport}, L{twisted.test.iosim} and
L{twisted.internet.task.Clock}. The same behaviours are checked on real sockets in
L{tests.test_transports}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from echokit.errors import ConnectFailed, EchoMismatch, InputError, RuntimeFailure
from echokit.runtime.policy import ConnectionLimiter, ServerPolicy
from echokit.transports.datagram import DatagramEcho, EchoDatagramClient, EchoDatagramServer
from echokit.transports.stream import EchoClientProtocol, EchoServerFactory, EchoServerProtocol


def server_on_string_transport(
    factory: EchoServerFactory | None = None, host: str = "127.0.0.1"
) -> tuple[EchoServerProtocol, StringTransport]:
    factory = factory or EchoServerFactory("tcp:0", "tcp", Clock())
    protocol = factory.buildProtocol(IPv4Address("TCP", host, 5555))
    assert isinstance(protocol, EchoServerProtocol)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5555))
    protocol.makeConnection(transport)
    return protocol, transport


class EchoServerProtocolTests(SynchronousTestCase):
    def test_writes_back_what_it_receives(self) -> None:
        """Every byte received is written back, in order, nothing added."""
        protocol, transport = server_on_string_transport()
        protocol.dataReceived(b"hello ")
        protocol.dataReceived(b"\x00\xff world")
        self.assertEqual(transport.value(), b"hello \x00\xff world")
        self.assertEqual(protocol.bytes_echoed, 14)

    def test_protocol_is_the_streaming_producer(self) -> None:
        """
        The protocol is its transport's streaming producer, for backpressure: asked to
        pause on a transport whose buffer it cannot see, it pauses reading; once the
        transport has sent everything, it reads again.
        """
        protocol, transport = server_on_string_transport()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_half_close_closes_after_the_echo(self) -> None:
        """On the peer's half-close the server unregisters the producer and closes gracefully."""
        protocol, transport = server_on_string_transport()
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"last words")

    def test_factory_counts_connections_and_bytes(self) -> None:
        """The factory counts connections opened, open now, and bytes echoed once closed."""
        protocol, _ = server_on_string_transport()
        factory = protocol.factory
        self.assertEqual((factory.stats.connections, factory.open_connections), (1, 1))
        protocol.dataReceived(b"12345")
        protocol.connectionLost(Failure(Exception("gone")))
        self.assertEqual((factory.open_connections, factory.stats.bytes), (0, 5))
        self.assertEqual(factory.stats.errors, 1)


class EchoClientProtocolTests(SynchronousTestCase):
    def connected(self) -> tuple[EchoClientProtocol, EchoServerProtocol, iosim.IOPump, list[bytes]]:
        echoed: list[bytes] = []
        factory = EchoServerFactory("test", "tcp", Clock())

        def server() -> EchoServerProtocol:
            p = EchoServerProtocol()
            p.factory = factory
            return p

        client, server_protocol, pump = iosim.connectedServerAndClient(
            server, lambda: EchoClientProtocol(echoed.append)
        )
        return client, server_protocol, pump, echoed

    def test_echo_verifies_and_waiters_fire(self) -> None:
        """wait_echoed fires once everything sent so far has come back, byte for byte."""
        client, _, pump, echoed = self.connected()
        client.send(b"ping")
        waiter = client.wait_echoed()
        self.assertNoResult(waiter)
        pump.flush()
        self.successResultOf(waiter)
        self.assertEqual(b"".join(echoed), b"ping")

    def test_finish_fires_done_when_all_came_back(self) -> None:
        """finish() then the last echoed byte fires done and closes."""
        client, _, pump, _ = self.connected()
        client.send(b"x" * 100_000)
        client.finish()
        self.assertNoResult(client.done)
        pump.flush()
        self.assertIs(self.successResultOf(client.done), client)

    def test_mismatch_fails_and_aborts(self) -> None:
        """A byte that differs fails done with EchoMismatch and aborts the connection."""
        client = EchoClientProtocol()
        transport = StringTransport()
        client.makeConnection(transport)
        client.send(b"abc")
        client.dataReceived(b"abd")
        self.failureResultOf(client.done, EchoMismatch)
        self.assertTrue(transport.disconnecting)

    def test_connection_lost_early_fails_done(self) -> None:
        """A connection that ends before every byte came back fails with what arrived."""
        client = EchoClientProtocol()
        client.makeConnection(StringTransport())
        client.send(b"abcdef")
        client.dataReceived(b"abc")
        waiter = client.wait_echoed()
        client.connectionLost(Failure(Exception("reset")))
        failure = self.failureResultOf(client.done, RuntimeFailure)
        self.assertIn("after echoing 3 of 6 bytes sent", failure.getErrorMessage())
        self.failureResultOf(waiter, RuntimeFailure)
        self.successResultOf(client.closed)


class HalfClosingTransport(StringTransport):
    """A StringTransport that can half-close, as TCP and unix transports can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class LingerTests(SynchronousTestCase):
    """
    After its half-close, the client waits (up to C{linger} seconds) for the server's
    close, so that bytes nobody sent are a mismatch, not missed.
    """

    def finished(self) -> tuple[EchoClientProtocol, Clock, HalfClosingTransport]:
        clock = Clock()
        client = EchoClientProtocol(clock=clock, linger=2.0)
        transport = HalfClosingTransport()
        client.makeConnection(transport)
        client.send(b"hi")
        client.dataReceived(b"hi")
        client.finish()
        return client, clock, transport

    def test_bytes_after_the_last_echo_are_a_mismatch(self) -> None:
        """A server that sends more after the echo is complete fails done."""
        client, _, transport = self.finished()
        self.assertTrue(transport.write_closed)
        self.assertNoResult(client.done)
        client.dataReceived(b"extra")
        failure = self.failureResultOf(client.done, EchoMismatch)
        self.assertIn("sent back 5 more byte(s) than were sent", failure.getErrorMessage())

    def test_unsolicited_bytes_with_nothing_sent(self) -> None:
        """Nothing sent, the input ended, then the server speaks: a mismatch."""
        client = EchoClientProtocol(clock=Clock(), linger=2.0)
        client.makeConnection(HalfClosingTransport())
        client.finish()
        client.dataReceived(b"banner\n")
        self.failureResultOf(client.done, EchoMismatch)

    def test_server_close_ends_the_wait(self) -> None:
        """The server's own close after the echo: done succeeds at once."""
        client, clock, _ = self.finished()
        client.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(client.done)
        self.assertFalse(clock.getDelayedCalls())

    def test_a_server_that_stays_open_costs_linger_seconds(self) -> None:
        """A server that never closes: done succeeds after linger seconds, and we close."""
        client, clock, transport = self.finished()
        clock.advance(1.9)
        self.assertNoResult(client.done)
        clock.advance(0.1)
        self.successResultOf(client.done)
        self.assertTrue(transport.disconnecting)


class FakeDatagramTransport:
    """Records datagrams written, like Twisted's UDP port would send them."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, Any]] = []

    def write(self, packet: bytes, addr: Any = None) -> None:
        self.written.append((packet, addr))

    def stopListening(self) -> None:
        pass


class EchoDatagramServerTests(SynchronousTestCase):
    def test_echoes_to_the_sender(self) -> None:
        """Each datagram goes back, intact, to the address it came from."""
        server = EchoDatagramServer("udp:0", Clock())
        transport = FakeDatagramTransport()
        server.makeConnection(transport)  # type: ignore[arg-type]
        big = bytes(range(256)) * 255
        server.datagramReceived(big, ("127.0.0.1", 40000))
        server.datagramReceived(b"", ("::1", 40001))
        self.assertEqual(transport.written, [(big, ("127.0.0.1", 40000)), (b"", ("::1", 40001))])
        self.assertEqual((server.stats.datagrams, server.stats.bytes), (2, len(big)))

    def test_privileged_source_ports_are_ignored(self) -> None:
        """Datagrams from ports below 1024 (other echo/chargen services) get no reply."""
        server = EchoDatagramServer("udp:0", Clock())
        transport = FakeDatagramTransport()
        server.makeConnection(transport)  # type: ignore[arg-type]
        server.datagramReceived(b"loop", ("127.0.0.1", 7))
        server.datagramReceived(b"loop", ("127.0.0.1", 1023))
        self.assertEqual(transport.written, [])
        self.assertEqual(server.stats.dropped, 2)

    def test_distinct_datagrams_at_once_are_all_echoed(self) -> None:
        """
        5,000 distinct datagrams from one source in the same instant (a benchmark's,
        numbered) are all echoed: the repeat guard spends nothing on datagrams that are
        not repeats, however fast they come.
        """
        server = EchoDatagramServer("udp:0", Clock())
        transport = FakeDatagramTransport()
        server.makeConnection(transport)  # type: ignore[arg-type]
        sent = [b"datagram %d" % i for i in range(5000)]
        for datagram in sent:
            server.datagramReceived(datagram, ("127.0.0.1", 40000))
        self.assertEqual([packet for packet, _ in transport.written], sent)
        self.assertEqual(server.stats.dropped, 0)


class EchoDatagramClientTests(SynchronousTestCase):
    def client(self) -> tuple[EchoDatagramClient, FakeDatagramTransport, Clock]:
        clock = Clock()
        client = EchoDatagramClient(clock, timeout=2.0, max_payload=65_507)
        transport = FakeDatagramTransport()
        client.makeConnection(transport)  # type: ignore[arg-type]
        return client, transport, clock

    def test_echo_answers_with_round_trip_time(self) -> None:
        """The echo settles the request with the time it took on the reactor's clock."""
        client, transport, clock = self.client()
        d = client.request(b"ping")
        self.assertEqual(transport.written, [(b"ping", None)])
        clock.advance(0.25)
        client.datagramReceived(b"ping", ("127.0.0.1", 9))
        self.assertEqual(self.successResultOf(d), DatagramEcho(b"ping", b"ping", 0.25))

    def test_timeout_counts_the_datagram_lost(self) -> None:
        """No echo within the timeout settles the request as lost, and counts it."""
        client, _, clock = self.client()
        d = client.request(b"ping")
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        self.assertEqual(self.successResultOf(d).echo, None)
        self.assertEqual(client.ledger.lost, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refusal_fails_the_request(self) -> None:
        """An ICMP port-unreachable (connectionRefused) fails with ConnectFailed."""
        client, _, clock = self.client()
        d = client.request(b"ping")
        client.connectionRefused()
        self.failureResultOf(d, ConnectFailed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_oversized_payload_is_refused_before_sending(self) -> None:
        """A payload larger than one datagram can carry is an input error; nothing is sent."""
        client, transport, _ = self.client()
        with self.assertRaises(InputError):
            client.request(b"x" * 65_508)
        self.assertEqual(transport.written, [])


class ServerTimeoutTests(SynchronousTestCase):
    """Idle and TLS handshake timeouts, on the reactor's clock (task.Clock here)."""

    def factory(
        self, clock: Clock, transport_name: str = "tcp", **policy: Any
    ) -> EchoServerFactory:
        return EchoServerFactory("tcp:0", transport_name, clock, ServerPolicy(**policy))

    def test_silent_connection_is_closed_after_idle_timeout(self) -> None:
        """A connection silent for idle_timeout seconds is closed gracefully."""
        clock = Clock()
        protocol, transport = server_on_string_transport(self.factory(clock, idle_timeout=10))
        clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # graceful: loseConnection, not abort
        self.assertEqual(protocol.closed_by, "idle timeout")
        self.assertEqual(protocol.factory.stats.timeouts, 1)

    def test_talking_resets_the_idle_clock(self) -> None:
        """Data received keeps the connection open for another idle_timeout."""
        clock = Clock()
        protocol, transport = server_on_string_transport(self.factory(clock, idle_timeout=10))
        for _ in range(5):
            clock.advance(8)
            protocol.dataReceived(b"still here")
        self.assertFalse(transport.disconnecting)
        clock.advance(10.1)
        self.assertTrue(transport.disconnecting)

    def test_stalled_close_is_aborted_after_the_grace(self) -> None:
        """A graceful close that has not completed within close_grace is aborted."""
        clock = Clock()
        protocol, transport = server_on_string_transport(
            self.factory(clock, idle_timeout=1, close_grace=5)
        )
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.2)
        self.assertTrue(transport.disconnected)  # StringTransport's mark of abortConnection
        self.assertEqual(protocol.closed_by, "close stalled")

    def test_closed_connection_leaves_no_timer(self) -> None:
        """Once the connection is lost no timer is left on the clock."""
        clock = Clock()
        protocol, _ = server_on_string_transport(self.factory(clock, idle_timeout=1))
        clock.advance(1)
        protocol.connectionLost(Failure(Exception("closed")))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_timer_for_every_idle_connection(self) -> None:
        """
        A listener's 100 idle connections share one timer (not a DelayedCall each: the
        memory of an idle connection), and all close at their idle timeout.
        """
        clock = Clock()
        factory = self.factory(clock, idle_timeout=10)
        connections = [server_on_string_transport(factory) for _ in range(100)]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(9.9)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.1)
        self.assertTrue(all(transport.disconnecting for _, transport in connections))
        self.assertEqual(factory.stats.timeouts, 100)

    def test_each_silent_connection_closes_within_the_resolution(self) -> None:
        """
        Connections opened 0.2 s apart, some talking once, with idle_timeout 10: each
        closes between 10 s after it was last heard from and one resolution (1 s)
        later, never before; the listener never holds more than one timer.
        """
        clock = Clock()
        factory = self.factory(clock, idle_timeout=10, close_grace=0)  # no timer but the sweep
        self.assertEqual(factory.idle_sweep.resolution, 1.0)
        last_heard: dict[int, float] = {}
        connections = []
        for i in range(40):
            connections.append(server_on_string_transport(factory))
            last_heard[i] = clock.seconds()
            clock.advance(0.2)  # all 40 open within 8 s: none closed before the loop below
            if i % 3 == 0 and i > 0:
                connections[i // 2][0].dataReceived(b"still here")
                last_heard[i // 2] = clock.seconds()
        closed_at: dict[int, float] = {}
        while len(closed_at) < len(connections) and clock.seconds() < 60:
            self.assertLessEqual(len(clock.getDelayedCalls()), 1)
            clock.advance(0.05)
            for i, (_, transport) in enumerate(connections):
                if transport.disconnecting and i not in closed_at:
                    closed_at[i] = clock.seconds()
        self.assertEqual(len(closed_at), len(connections))
        for i, at in closed_at.items():
            silent_for = at - last_heard[i]
            self.assertGreaterEqual(silent_for, 10 - 1e-9, f"connection {i}")
            self.assertLessEqual(silent_for, 11 + 0.05 + 1e-9, f"connection {i}")

    def test_closing_connections_are_not_swept(self) -> None:
        """
        A connection already closing (its peer half-closed) is not closed again, nor
        counted as timed out, when the idle timeout passes; the talking one stays open.
        """
        clock = Clock()
        factory = self.factory(clock, idle_timeout=10, close_grace=0)
        closing, _ = server_on_string_transport(factory)
        talking, talking_transport = server_on_string_transport(factory)
        closing.readConnectionLost()
        for _ in range(3):
            clock.advance(5)
            talking.dataReceived(b"here")
        self.assertEqual(factory.stats.timeouts, 0)
        self.assertIsNone(closing.closed_by)
        self.assertFalse(talking_transport.disconnecting)

    def test_a_close_that_raises_spoils_no_other_timeout(self) -> None:
        """
        If closing one idle connection raises, the error is logged, and the others
        silent at the same sweep, and later, are still closed at their timeouts.
        """
        clock = Clock()
        factory = self.factory(clock, idle_timeout=10, close_grace=0)
        connections = [server_on_string_transport(factory) for _ in range(3)]

        def broken() -> None:
            raise RuntimeError("cannot close")

        self.patch(connections[0][0], "idle_timed_out", broken)
        clock.advance(5)
        _, later_transport = server_on_string_transport(factory)
        clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([t.disconnecting for _, t in connections], [False, True, True])
        clock.advance(5)
        self.assertTrue(later_transport.disconnecting)
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])

    def test_last_connection_lost_stops_the_sweep(self) -> None:
        """When a listener's last connection is gone, no sweep is left on the clock."""
        clock = Clock()
        factory = self.factory(clock, idle_timeout=10)
        protocols = [server_on_string_transport(factory)[0] for _ in range(3)]
        clock.advance(4)
        for protocol in protocols:
            self.assertNotEqual(clock.getDelayedCalls(), [])
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
        server_on_string_transport(factory)  # a new connection sets it again
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [14.0])

    def test_tls_handshake_timeout_aborts(self) -> None:
        """A TLS connection with no completed handshake is aborted after handshake_timeout."""
        clock = Clock()
        factory = self.factory(clock, "ssl", handshake_timeout=10, idle_timeout=300)
        protocol, transport = server_on_string_transport(factory)
        clock.advance(10)
        self.assertTrue(transport.disconnected)
        self.assertEqual(protocol.closed_by, "TLS handshake timeout")

    def test_tls_handshake_completed_switches_to_idle_timer(self) -> None:
        """After the handshake the idle timeout applies, not the handshake timeout."""
        clock = Clock()
        factory = self.factory(clock, "ssl", handshake_timeout=10, idle_timeout=300)
        protocol, transport = server_on_string_transport(factory)
        clock.advance(5)
        protocol.handshakeCompleted()
        clock.advance(100)
        self.assertFalse(transport.disconnecting)
        clock.advance(200)
        self.assertTrue(transport.disconnecting)

    def test_zero_disables_timeouts(self) -> None:
        """idle_timeout=0 and handshake_timeout=0 schedule nothing."""
        clock = Clock()
        server_on_string_transport(self.factory(clock, "ssl", idle_timeout=0, handshake_timeout=0))
        self.assertEqual(clock.getDelayedCalls(), [])


class ServerLimitTests(SynchronousTestCase):
    def test_over_the_limit_is_aborted_and_counted(self) -> None:
        """A connection over max_connections is aborted at once, counted, never echoed."""
        clock = Clock()
        factory = EchoServerFactory("tcp:0", "tcp", clock, ServerPolicy(max_connections=2))
        kept = [server_on_string_transport(factory) for _ in range(2)]
        protocol, transport = server_on_string_transport(factory)
        self.assertTrue(transport.disconnected)
        self.assertFalse(protocol.admitted)
        self.assertEqual(factory.stats.refused, 1)
        self.assertEqual(factory.open_connections, 2)
        protocol.connectionLost(Failure(Exception("aborted")))
        self.assertEqual(factory.limiter.open, 2)  # a refused connection releases nothing
        kept[0][0].connectionLost(Failure(Exception("closed")))
        _, transport = server_on_string_transport(factory)
        self.assertFalse(transport.disconnected)

    def test_per_peer_limit_counts_by_address(self) -> None:
        """max_per_peer limits one IP address; another address still gets in."""
        factory = EchoServerFactory("tcp:0", "tcp", Clock(), ServerPolicy(max_per_peer=1))
        server_on_string_transport(factory, host="10.0.0.1")
        _, refused = server_on_string_transport(factory, host="10.0.0.1")
        _, other = server_on_string_transport(factory, host="10.0.0.2")
        self.assertTrue(refused.disconnected)
        self.assertFalse(other.disconnected)

    def test_limiter_is_shared_between_listeners(self) -> None:
        """max_connections counts every listener sharing one limiter."""
        limiter = ConnectionLimiter(max_connections=1)
        clock = Clock()
        first = EchoServerFactory("tcp:0", "tcp", clock, ServerPolicy(), limiter)
        second = EchoServerFactory("unix:/x", "unix", clock, ServerPolicy(), limiter)
        server_on_string_transport(first)
        _, transport = server_on_string_transport(second)
        self.assertTrue(transport.disconnected)
