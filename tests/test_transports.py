"""
End-to-end echo over real sockets on loopback, for every transport.

echokit's server and client, in one process, over tcp (127.0.0.1), tcp6 (::1), unix
(a socket in a temporary directory), ssl (TLS with echokit's generated CA, verified) and
udp/udp6: random payloads from 1 byte to 10 MiB, half-close with 20 MiB, and datagrams
from 1 byte to the largest UDP payload.
"""

from __future__ import annotations

import hashlib
import os

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from echokit.echo import MAX_UDP_PAYLOAD_IPV4, MAX_UDP_PAYLOAD_IPV6
from echokit.transports.endpoints import ipv6_unavailable
from tests.realnet import EchoSession, deferred_test, random_bytes

STREAM_SIZES = [1, 2, 1000, 65_536, 1 << 20, 10 << 20]
NO_IPV6 = ipv6_unavailable()


class _StreamEchoMixin:
    """The same checks for every stream transport; subclasses name the server string."""

    description: str

    def server_string(self) -> str:
        return self.description

    async def echo_payload(self, payload: bytes, chunk: int = 1 << 16) -> bytes:
        session = EchoSession(self)
        [listener] = await session.serve(self.server_string())
        echoed: list[bytes] = []
        connection = await session.stream(listener, echoed.append)
        protocol = connection.protocol
        for start in range(0, len(payload), chunk):
            protocol.send(payload[start : start + chunk])
        protocol.finish()
        await protocol.done
        await protocol.closed
        return b"".join(echoed)

    @deferred_test
    async def test_random_payloads_echo_exactly(self) -> None:
        """Random payloads of 1 byte to 10 MiB come back byte for byte."""
        for size in STREAM_SIZES:
            payload = random_bytes(size)
            echoed = await self.echo_payload(payload)
            self.assertEqual(len(echoed), size)  # type: ignore[attr-defined]
            self.assertEqual(  # type: ignore[attr-defined]
                hashlib.sha256(echoed).digest(), hashlib.sha256(payload).digest()
            )

    @deferred_test
    async def test_half_close_with_20_mib_loses_nothing(self) -> None:
        """20 MiB written in one go then half-closed: the server echoes all before closing."""
        payload = random_bytes(20 << 20)
        echoed = await self.echo_payload(payload, chunk=len(payload))
        self.assertEqual(echoed, payload)  # type: ignore[attr-defined]

    @deferred_test
    async def test_half_close_before_reading_loses_nothing(self) -> None:
        """
        A client that sends 20 MiB and half-closes before reading any echo gets it all.

        The client reads nothing for a while, so the echo backs up in the server's
        buffers and the server sees the half-close while it still has echo to send:
        a server that closed at once would lose that.
        """
        session = EchoSession(self)
        [listener] = await session.serve(self.server_string())
        echoed: list[bytes] = []
        connection = await session.stream(listener, echoed.append)
        protocol = connection.protocol
        protocol.transport.pauseProducing()
        payload = random_bytes(20 << 20)
        protocol.send(payload)
        protocol.finish()
        await task.deferLater(reactor, 0.3, lambda: None)
        protocol.transport.resumeProducing()
        await protocol.done
        self.assertEqual(b"".join(echoed), payload)  # type: ignore[attr-defined]

    @deferred_test
    async def test_many_small_messages_in_order(self) -> None:
        """A thousand small writes come back in order, one round trip each."""
        session = EchoSession(self)
        [listener] = await session.serve(self.server_string())
        echoed: list[bytes] = []
        connection = await session.stream(listener, echoed.append)
        protocol = connection.protocol
        for i in range(1000):
            protocol.send(b"%d," % i)
            await protocol.wait_echoed()
        protocol.finish()
        await protocol.done
        self.assertEqual(  # type: ignore[attr-defined]
            b"".join(echoed), b"".join(b"%d," % i for i in range(1000))
        )


class TCPEchoTests(_StreamEchoMixin, TestCase):
    description = "tcp:0:interface=127.0.0.1"


class TCP6EchoTests(_StreamEchoMixin, TestCase):
    description = "tcp6:0:interface=\\:\\:1"
    if NO_IPV6:
        skip = NO_IPV6


class UNIXEchoTests(_StreamEchoMixin, TestCase):
    def server_string(self) -> str:
        return f"unix:{os.path.join(self.mktemp())}.sock"


class SSLEchoTests(_StreamEchoMixin, TestCase):
    """Over TLS the client verifies echokit's CA and the name localhost."""

    description = "ssl:0:interface=127.0.0.1"

    @deferred_test
    async def test_handshake_is_verified_tls12_or_newer(self) -> None:
        """The client completes a verified handshake at TLS 1.2 or newer."""
        session = EchoSession(self)
        [listener] = await session.serve(self.description)
        connection = await session.stream(listener)
        self.assertIsNotNone(connection.handshake_seconds)
        protocol = connection.protocol
        version = protocol.transport.getHandle().get_protocol_version_name()  # type: ignore[attr-defined]
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        protocol.finish()
        await protocol.done


class UDPEchoTests(TestCase):
    """Datagrams of every size echo intact, over IPv4 and IPv6."""

    async def echo_sizes(self, description: str, largest: int) -> None:
        session = EchoSession(self)
        [listener] = await session.serve(description)
        client = await session.datagram(listener)
        for size in [1, 100, 1472, 8192, 8193, 32_768, largest]:
            payload = random_bytes(size)
            result = await client.request(payload)
            self.assertEqual(result.echo, payload, f"{size}-byte datagram")
        self.assertEqual(client.ledger.lost, 0)

    @deferred_test
    async def test_ipv4_datagrams_up_to_65507_bytes(self) -> None:
        """1 byte to 65,507 bytes over udp (127.0.0.1): none truncated at 8,192."""
        await self.echo_sizes("udp:0", MAX_UDP_PAYLOAD_IPV4)

    @deferred_test
    async def test_ipv6_datagrams_up_to_65527_bytes(self) -> None:
        """1 byte to 65,527 bytes over udp6 (::1)."""
        if NO_IPV6:
            self.skipTest(NO_IPV6)
        await self.echo_sizes("udp6:0", MAX_UDP_PAYLOAD_IPV6)

    @deferred_test
    async def test_empty_datagram_is_echoed(self) -> None:
        """An empty datagram is a datagram: it comes back empty."""
        session = EchoSession(self)
        [listener] = await session.serve("udp:0")
        client = await session.datagram(listener)
        result = await client.request(b"")
        self.assertEqual(result.echo, b"")

    @deferred_test
    async def test_udp_binds_loopback_by_default(self) -> None:
        """udp:PORT without interface= listens on 127.0.0.1 only, not on every address."""
        session = EchoSession(self)
        [listener] = await session.serve("udp:0")
        self.assertEqual(listener.port.getHost().host, "127.0.0.1")  # type: ignore[attr-defined]
