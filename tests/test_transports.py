"""
End-to-end echo over real sockets on loopback, for every transport.

echokit's server and client, in one process, over tcp (127.0.0.1), tcp6 (::1), unix
(a socket in a temporary directory), ssl (TLS with echokit's generated CA, verified) and
udp/udp6: random payloads from 1 byte to 10 MiB, half-close with 20 MiB, half-close
while the server holds echo it cannot send yet (the state where a server that closed at
the FIN would lose data), and datagrams from 1 byte to the largest UDP payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.trial.unittest import TestCase

from echokit.echo import MAX_UDP_PAYLOAD_IPV4, MAX_UDP_PAYLOAD_IPV6
from echokit.transports.endpoints import ipv6_unavailable
from tests.halfclose import Held, fill_until_server_holds_echo, read_to_end
from tests.realnet import EchoSession, deferred_test, random_bytes
from tests.support import echokit_server, port_of, require_ipv6, skip_reason

STREAM_SIZES = [1, 2, 1000, 65_536, 1 << 20, 10 << 20]
NO_IPV6 = ipv6_unavailable()
#: Skip tcp6 and udp6 tests without IPv6 loopback, except under CI, where they fail.
SKIP_IPV6 = skip_reason(NO_IPV6)


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
    async def test_20_mib_in_one_write_then_finished_loses_nothing(self) -> None:
        """
        20 MiB written in one go, then finished: half-closed (tcp, tcp6, unix), or over
        TLS, which echokit's client does not half-close, closed once all came back (TLS
        half-close is L{TLSHalfCloseTests}'): the server echoes all of it.
        """
        payload = random_bytes(20 << 20)
        echoed = await self.echo_payload(payload, chunk=len(payload))
        self.assertEqual(echoed, payload)  # type: ignore[attr-defined]

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
    if SKIP_IPV6:
        skip = SKIP_IPV6


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
        if SKIP_IPV6:
            self.skipTest(SKIP_IPV6)
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


# --- half-close while the server holds echo ---------------------------------------------

#: The client's receive buffer: fixed, so the kernel queues fill after a few MiB.
CLIENT_RCVBUF = 256 * 1024


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temporary directory with a short path (for unix socket paths and certificates)."""
    path = Path(tempfile.mkdtemp(prefix="ekhc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stream_client(connect_string: str) -> socket.socket:
    """A blocking socket connected to an echokit stream listener's C{connect_string}."""
    if connect_string.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = connect_string.split("path=", 1)[1]
    else:
        family = socket.AF_INET6 if connect_string.startswith("tcp6:") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        address = ("::1" if family == socket.AF_INET6 else "127.0.0.1", port_of(connect_string))
    sock.settimeout(10)
    sock.connect(address)
    return sock


class HalfCloseWhileServerHoldsEchoTests:
    """
    The half-close that matters: the client sends more than the kernel buffers hold,
    reading nothing, then sends its FIN while the server still holds echo in its own
    memory (L{tests.halfclose}). A server that closed at the FIN would lose that echo.
    """

    @pytest.mark.parametrize("kind", ["tcp", "tcp6", "unix"])
    def test_fin_while_server_holds_echo_loses_nothing(self, short_dir: Path, kind: str) -> None:
        """
        FIN sent while the server holds echo it cannot send yet (the client reads
        nothing until then): every byte comes back, then the server closes.
        """
        if kind == "tcp6":
            require_ipv6()
        description = {
            "tcp": "tcp:0:interface=127.0.0.1",
            "tcp6": "tcp6:0:interface=\\:\\:1",
            "unix": f"unix:{short_dir / 'hc.sock'}",
        }[kind]
        with (
            echokit_server([description], short_dir / "certs") as server,
            stream_client(server.connect_strings[0]) as sock,
        ):
            held = fill_until_server_holds_echo(sock)
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.3)  # the server reads the FIN now, with echo still queued
            echoed = read_to_end(sock)
        assert held.in_server > 0
        assert len(echoed) == len(held.sent), (
            f"{len(held.sent) - len(echoed):,} of {len(held.sent):,} bytes lost; the server "
            f"held {held.in_server:,} at the FIN"
        )
        assert echoed == held.sent


class TLSClient:
    """A stdlib TLS client on memory BIOs over a blocking socket: it decides when
    close_notify and the FIN go out, and reads nothing until told to."""

    def __init__(self, sock: socket.socket, ca: Path) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = ssl.create_default_context(cafile=str(ca))
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        for _ in range(20):
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                self.incoming.write(self.sock.recv(1 << 16))
        else:
            raise AssertionError("no TLS handshake in 20 flights")
        self.sock.sendall(self.outgoing.read())

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def close_notify(self) -> None:
        """Send close_notify (without waiting for the server's)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()
        self.sock.sendall(self.outgoing.read())

    def read_to_end(self) -> tuple[bytes, bool]:
        """All plaintext until the server closes, and whether its close_notify came."""
        self.incoming.write(read_to_end(self.sock))
        plaintext = bytearray()
        while True:
            try:
                chunk = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                return bytes(plaintext), False
            except ssl.SSLZeroReturnError:
                return bytes(plaintext), True
            if not chunk:
                return bytes(plaintext), True
            plaintext += chunk


class TLSHalfCloseTests:
    """
    Over TLS, half-close is the client's close_notify (a stdlib client's C{unwrap}), or
    a TCP FIN without one (as C{ncat --ssl} ends): either way, sent while the server
    holds echo, every byte comes back before the server's own close_notify.
    """

    @pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "fin-only"])
    def test_half_close_while_server_holds_echo(self, short_dir: Path, close_notify: bool) -> None:
        """close_notify then FIN, or FIN alone, with echo held: nothing lost."""
        certs = short_dir / "certs"
        with (
            echokit_server(["ssl:0:interface=127.0.0.1"], certs) as server,
            stream_client(server.connect_strings[0]) as sock,
        ):
            client = TLSClient(sock, certs / "ca.pem")
            held: Held = fill_until_server_holds_echo(sock, send=client.send)
            if close_notify:
                client.close_notify()
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.3)
            echoed, closed_cleanly = client.read_to_end()
        assert held.in_server > 0
        assert len(echoed) == len(held.sent), (
            f"{len(held.sent) - len(echoed):,} of {len(held.sent):,} bytes lost"
        )
        assert echoed == held.sent
        assert closed_cleanly, "the server closed without close_notify"
