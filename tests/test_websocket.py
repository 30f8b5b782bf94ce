"""
WebSocket (ws, wss): the sans-IO echo core, echokit's server and client over real sockets,
and interop with clients and servers echokit did not write (the websockets library).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Frame, Opcode
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from echokit.errors import EndpointError
from echokit.runtime.policy import ServerPolicy
from echokit.transports import ws as ws_module
from echokit.transports.grammar import parse_client, parse_server
from echokit.transports.ws import (
    MAX_MESSAGE_SIZE,
    WebSocketClientProtocol,
    WebSocketEcho,
    WebSocketEchoFactory,
    WebSocketEchoProtocol,
    _Sent,
)
from tests.realnet import EchoSession, deferred_test, eventually, random_bytes
from tests.support import echokit_server, require_tool, run_echokit, unmet
from tests.test_transports import NO_IPV6, _StreamEchoMixin

# --- the sans-IO core ------------------------------------------------------------------


def _client_and_server(path: str = "/") -> tuple[WSConnection, WebSocketEcho]:
    """A wsproto client and a L{WebSocketEcho}, upgraded."""
    client, server = WSConnection(ConnectionType.CLIENT), WebSocketEcho(path=path)
    outcome = server.receive(client.send(Request(host="localhost", target=path)))
    assert outcome.upgraded == path and outcome.refused is None
    client.receive_data(outcome.send)
    assert [type(e) for e in client.events()] == [AcceptConnection]
    return client, server


def _events(client: WSConnection, data: bytes) -> list[object]:
    client.receive_data(data)
    return list(client.events())


class WebSocketEchoTests(TestCase):
    """The sans-IO echo: bytes in, bytes out, no sockets."""

    def test_binary_and_text_come_back_as_sent(self) -> None:
        """A binary message comes back binary, a text message text, with the same payload."""
        client, server = _client_and_server()
        outcome = server.receive(
            client.send(BytesMessage(data=b"\x00\xffbin")) + client.send(TextMessage(data="héllo"))
        )
        events = _events(client, outcome.send)
        assert [(type(e), e.data) for e in events] == [  # type: ignore[attr-defined]
            (BytesMessage, b"\x00\xffbin"),
            (TextMessage, "héllo"),
        ]
        assert outcome.echoed == 5 + len("héllo".encode())

    def test_fragmented_message_is_one_message(self) -> None:
        """A message sent in three fragments comes back as one message, whole."""
        client, server = _client_and_server()
        data = client.send(BytesMessage(data=b"ab", message_finished=False))
        data += client.send(BytesMessage(data=b"cd", message_finished=False))
        data += client.send(BytesMessage(data=b"ef", message_finished=True))
        events = _events(client, server.receive(data).send)
        payload = b"".join(e.data for e in events)  # type: ignore[attr-defined]
        assert payload == b"abcdef"
        assert [e.message_finished for e in events] == [False, False, True]  # type: ignore[attr-defined]

    def test_ping_is_answered_with_pong(self) -> None:
        """A ping gets a pong with the same payload (RFC 6455 5.5.3)."""
        client, server = _client_and_server()
        events = _events(client, server.receive(client.send(Ping(payload=b"p1"))).send)
        assert [(type(e), e.payload) for e in events] == [(Pong, b"p1")]  # type: ignore[attr-defined]

    def test_close_is_answered_and_ends(self) -> None:
        """A close gets a close with the same code, and the connection is to be closed."""
        client, server = _client_and_server()
        outcome = server.receive(client.send(CloseConnection(code=1000)))
        assert outcome.close and outcome.refused is None
        [event] = _events(client, outcome.send)
        assert isinstance(event, CloseConnection) and event.code == 1000

    def test_message_over_the_limit_closes_1009(self) -> None:
        """A message longer than the limit is refused with status 1009 (message too big)."""
        client = WSConnection(ConnectionType.CLIENT)
        server = WebSocketEcho(path="/", max_message=1000)
        client.receive_data(server.receive(client.send(Request(host="h", target="/"))).send)
        list(client.events())
        outcome = server.receive(client.send(BytesMessage(data=b"x" * 1001)))
        assert outcome.close and outcome.refused is not None
        [event] = _events(client, outcome.send)
        assert isinstance(event, CloseConnection) and event.code == 1009
        assert MAX_MESSAGE_SIZE >= 16 * 1024 * 1024

    def test_fragments_over_the_limit_together_close_1009(self) -> None:
        """The limit is on the message: fragments each under it but over it together: 1009."""
        client = WSConnection(ConnectionType.CLIENT)
        server = WebSocketEcho(path="/", max_message=1000)
        client.receive_data(server.receive(client.send(Request(host="h", target="/"))).send)
        list(client.events())
        first = server.receive(client.send(BytesMessage(data=b"x" * 600, message_finished=False)))
        assert not first.close and first.echoed == 600
        outcome = server.receive(client.send(BytesMessage(data=b"y" * 600)))
        assert outcome.close and "1,000-byte limit" in str(outcome.refused)
        events = _events(client, first.send + outcome.send)
        assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009

    def test_answers_keep_the_order_of_what_they_answer(self) -> None:
        """
        A message, a ping, a message and a close read at once: the echo, the pong, the
        echo and the close answer go back in that order (the close last: nothing echoed
        is lost to it).
        """
        client, server = _client_and_server()
        outcome = server.receive(
            client.send(BytesMessage(data=b"one"))
            + client.send(Ping(payload=b"p"))
            + client.send(TextMessage(data="two"))
            + client.send(CloseConnection(code=1000))
        )
        assert outcome.close and outcome.refused is None
        assert [(type(e), getattr(e, "data", None)) for e in _events(client, outcome.send)] == [
            (BytesMessage, b"one"),
            (Pong, None),
            (TextMessage, "two"),
            (CloseConnection, None),
        ]

    def test_binary_fragments_after_a_text_message_stay_binary(self) -> None:
        """Continuation frames belong to their own message: binary after text is not UTF-8-checked."""
        client, server = _client_and_server()
        sent = [
            client.send(TextMessage(data="text")),
            client.send(BytesMessage(data=b"\xff", message_finished=False)),
            client.send(BytesMessage(data=b"\xfe")),
        ]
        back = b"".join(server.receive(data).send for data in sent)
        events = _events(client, back)
        assert [(type(e), e.data) for e in events] == [  # type: ignore[attr-defined]
            (TextMessage, "text"),
            (BytesMessage, b"\xff"),
            (BytesMessage, b"\xfe"),
        ]

    def test_plain_http_request_gets_426(self) -> None:
        """A plain HTTP GET is answered 426 Upgrade Required, and the connection closes."""
        outcome = WebSocketEcho().receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert outcome.send.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        assert b"Sec-WebSocket-Version: 13" in outcome.send
        assert outcome.close and outcome.refused

    def test_garbage_gets_400(self) -> None:
        """Bytes that are not HTTP are answered 400 Bad Request."""
        outcome = WebSocketEcho().receive(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
        assert outcome.send.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert outcome.close

    def test_wrong_path_gets_404(self) -> None:
        """An upgrade to another path than the one served is refused with 404."""
        client = WSConnection(ConnectionType.CLIENT)
        outcome = WebSocketEcho(path="/echo").receive(
            client.send(Request(host="h", target="/other"))
        )
        assert outcome.send.startswith(b"HTTP/1.1 404 ")
        assert outcome.close and "/other" in str(outcome.refused)

    def test_invalid_utf8_text_closes_1007(self) -> None:
        """A text frame that is not UTF-8 closes with 1007, as RFC 6455 8.1 says."""
        client, server = _client_and_server()
        frame = bytearray(client.send(TextMessage(data="ab")))
        # Unmask, replace the payload with an invalid byte pair, and mask it again.
        key = frame[2:6]
        frame[6:8] = bytes(b ^ key[i] for i, b in enumerate(b"\xc3\x28"))
        outcome = server.receive(bytes(frame))
        assert outcome.close
        [event] = _events(client, outcome.send)
        assert isinstance(event, CloseConnection) and event.code == 1007


class SentLedgerTests(TestCase):
    """The client's check that every message comes back whole, in order, of its type."""

    def test_whole_messages_pass(self) -> None:
        """Fragments adding up to each message sent, in order, pass."""
        sent = _Sent()
        sent.sent(4, False)
        sent.sent(2, True)
        assert sent.fragment(3, False, False) is None
        assert sent.fragment(1, False, True) is None
        assert sent.fragment(2, True, True) is None

    def test_merged_messages_fail(self) -> None:
        """Two messages echoed as one is a difference, though the bytes are the same."""
        sent = _Sent()
        sent.sent(2, False)
        sent.sent(2, False)
        assert "came back as a message of" in str(sent.fragment(4, False, True))

    def test_type_change_fails(self) -> None:
        """A binary message echoed as text is a difference."""
        sent = _Sent()
        sent.sent(2, False)
        assert "binary message came back as text" in str(sent.fragment(2, True, True))


class WebSocketTimeoutTests(TestCase):
    """The upgrade must complete within the handshake timeout (a task.Clock, no real time)."""

    def _connect(self, policy: ServerPolicy) -> tuple[Clock, StringTransport, WebSocketEchoFactory]:
        clock = Clock()
        factory = WebSocketEchoFactory("ws:0", "ws", clock, policy, path="/")
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        return clock, transport, factory

    def test_no_upgrade_in_time_aborts(self) -> None:
        """A connection that sends nothing is aborted when the handshake timeout passes."""
        clock, transport, factory = self._connect(ServerPolicy(handshake_timeout=10))
        clock.advance(9.9)
        assert not transport.disconnecting
        clock.advance(0.2)
        assert transport.disconnecting
        assert factory.stats.timeouts == 1

    def test_upgrade_in_time_stays_open(self) -> None:
        """A connection upgraded in time outlives the handshake timeout."""
        clock, transport, factory = self._connect(ServerPolicy(handshake_timeout=10))
        protocol = factory.open_protocols.copy().pop()
        client = WSConnection(ConnectionType.CLIENT)
        protocol.dataReceived(client.send(Request(host="h", target="/")))
        assert transport.value().startswith(b"HTTP/1.1 101 ")
        clock.advance(60)
        assert not transport.disconnecting


#: A server connection, the transport it writes to, and the wsproto client at the other end.
_Upgraded = tuple[WebSocketEchoProtocol, StringTransport, WSConnection]


def _echoed_whole(*sent: tuple[StringTransport, WSConnection, bytes]) -> None:
    """Each transport carries, for its client, the echo of the one message it sent, whole."""
    for wire, client, payload in sent:
        [echo] = _events(client, wire.value())
        assert isinstance(echo, BytesMessage) and echo.data == payload


class FrameBudgetTests(TestCase):
    """Frames still arriving are held whole: together they share the listener's budget."""

    def _upgraded(self, factory: WebSocketEchoFactory) -> _Upgraded:
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, WebSocketEchoProtocol)
        transport = StringTransport()
        protocol.makeConnection(transport)
        client = WSConnection(ConnectionType.CLIENT)
        protocol.dataReceived(client.send(Request(host="h", target="/")))
        client.receive_data(transport.value())
        assert [type(e) for e in client.events()] == [AcceptConnection]
        transport.clear()
        return protocol, transport, client

    def _two_upgraded(self) -> tuple[WebSocketEchoFactory, _Upgraded, _Upgraded]:
        """A listener whose frames' budget is 1 MiB, and two connections, upgraded."""
        factory = WebSocketEchoFactory(
            "ws:0", "ws", Clock(), ServerPolicy(max_buffered=1 << 20), path="/"
        )
        return factory, self._upgraded(factory), self._upgraded(factory)

    def test_past_the_budget_one_frame_at_a_time(self) -> None:
        """
        Two 2 MiB frames arriving on two connections, 1 MiB budget: the first over it reads
        on, the other stops reading until that frame is whole, then both are echoed whole.
        """
        factory, (a, a_wire, a_client), (b, b_wire, b_client) = self._two_upgraded()
        payloads = random_bytes(2 << 20), random_bytes(2 << 20)
        a_frame = a_client.send(BytesMessage(data=payloads[0]))
        b_frame = b_client.send(BytesMessage(data=payloads[1]))
        a.dataReceived(a_frame[: 600 << 10])
        b.dataReceived(b_frame[: 600 << 10])  # over 1 MiB together: b reads on
        a.dataReceived(a_frame[600 << 10 : 1200 << 10])
        assert (a_wire.producerState, b_wire.producerState) == ("paused", "producing")
        b.dataReceived(b_frame[600 << 10 :])  # b's frame is whole and echoed: a reads again
        assert a_wire.producerState == "producing"
        a.dataReceived(a_frame[1200 << 10 :])
        _echoed_whole((a_wire, a_client, payloads[0]), (b_wire, b_client, payloads[1]))
        assert factory.frames.held == 0

    def test_stopped_for_its_unsent_echo_it_reads_again_once_that_is_sent(self) -> None:
        """
        A's 600 KiB frame is whole, and its echo unsent, just after B's 2 MiB frame took
        the 1 MiB budget over: A stops reading for its echo's share. Once that echo is
        sent (the transport's C{resumeProducing}), A holds nothing and reads again, while
        B's frame is still arriving.
        """
        # Bytes written and not yet taken by the peer: a StringTransport's value, as a
        # TCP transport's queue would count them (StringTransport sends nothing itself).
        self.patch(ws_module, "queued_bytes", lambda transport: len(transport.value()))
        factory, (a, a_wire, a_client), (b, b_wire, _) = self._two_upgraded()
        payload = random_bytes(600 << 10)
        a_frame = a_client.send(BytesMessage(data=payload))
        a.dataReceived(a_frame[: 300 << 10])
        b.dataReceived(Frame(Opcode.BINARY, random_bytes(2 << 20)).serialize(mask=True)[:900_000])
        a.dataReceived(a_frame[300 << 10 :])  # whole: echoed, but the echo is not sent yet
        assert (a_wire.producerState, b_wire.producerState) == ("paused", "producing")
        echo = a_wire.value()
        a_wire.clear()
        a.resumeProducing()  # the transport has sent everything
        assert a_wire.producerState == "producing"
        assert a not in factory.frames.waiting and factory.frames.held == b.session.unparsed
        [message] = _events(a_client, echo)
        assert isinstance(message, BytesMessage) and message.data == payload

    def test_a_short_unsent_echo_keeps_no_share_nobody_frees(self) -> None:
        """
        B's 1.2 MiB frame takes the 1 MiB budget over (B reads on, A stops). B's frame
        is whole and the kernel takes all of its echo but 100 KiB, less than the
        transport holds before it pauses B (so no C{resumeProducing} will say when it is
        gone), and B's client then goes quiet: A reads again at once, not when B next
        sends or closes.
        """
        unsent: dict[object, int] = {}  # what the kernel did not take, per transport
        self.patch(ws_module, "queued_bytes", lambda transport: unsent.get(transport, 0))
        factory, (a, a_wire, a_client), (b, b_wire, b_client) = self._two_upgraded()
        payloads = random_bytes(600 << 10), random_bytes(1200 << 10)
        a_frame = a_client.send(BytesMessage(data=payloads[0]))
        b_frame = b_client.send(BytesMessage(data=payloads[1]))
        b.dataReceived(b_frame[: 1100 << 10])  # over 1 MiB: b reads on
        a.dataReceived(a_frame[: 300 << 10])
        assert (a_wire.producerState, b_wire.producerState) == ("paused", "producing")
        unsent[b_wire] = 100 << 10
        b.dataReceived(b_frame[1100 << 10 :])  # whole and echoed, 100 KiB of it unsent
        assert a_wire.producerState == "producing"
        assert factory.frames.held == a.session.unparsed  # B holds nothing any more
        a.dataReceived(a_frame[300 << 10 :])
        _echoed_whole((a_wire, a_client, payloads[0]), (b_wire, b_client, payloads[1]))


class _RawWebSocket(Protocol):
    """
    A client over a real socket that sends the upgrade and one message at once (the
    message framed by websockets' L{Frame}: wsproto sends nothing before the upgrade is
    answered), and keeps the binary echoes wsproto reads.
    """

    def __init__(self, payload: bytes, held_back: int = 0) -> None:
        """
        @param held_back: the last C{held_back} bytes of the message are sent only when
            the test says (L{send_the_rest}).
        """
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.first = self.ws.send(Request(host="localhost", target="/"))
        self.first += Frame(Opcode.BINARY, payload).serialize(mask=True)
        cut = len(self.first) - held_back
        self.first, self.rest = self.first[:cut], self.first[cut:]
        self.echoed: list[bytes] = []

    def send_the_rest(self) -> None:
        self.transport.write(self.rest)  # type: ignore[union-attr]

    def connectionMade(self) -> None:
        self.transport.write(self.first)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self.echoed += [bytes(e.data) for e in self.ws.events() if isinstance(e, BytesMessage)]


class FrameBudgetRealSocketTests(TestCase):
    """The frames' budget over real sockets, with a client that holds its echo unread."""

    async def _listener(self, budget: int) -> tuple[WebSocketEchoFactory, IStreamClientEndpoint]:
        """A ws: listener on loopback with this frames' budget, and an endpoint to reach it."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        session = EchoSession(self)
        session.policy = ServerPolicy(max_buffered=budget)
        [listener] = await session.serve("ws:0:interface=127.0.0.1")
        factory = listener.server
        assert isinstance(factory, WebSocketEchoFactory)
        port = listener.port.getHost().port  # type: ignore[attr-defined]
        return factory, TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    @deferred_test
    async def test_unread_large_echo_holds_the_budget_until_it_is_read(self) -> None:
        """
        A reads nothing after sending a 16 MiB message: its unsent echo holds the 1 MiB
        budget, so B's 2 MiB message waits; once A reads its echo, B gets its echo whole.
        """
        factory, endpoint = await self._listener(1 << 20)
        clients: list[tuple[_RawWebSocket, bytes]] = []
        for size in (16 << 20, 2 << 20):
            payload = random_bytes(size)
            client = await endpoint.connect(Factory.forProtocol(partial(_RawWebSocket, payload)))
            assert isinstance(client, _RawWebSocket) and client.transport is not None
            if not clients:  # A: reads nothing until told
                client.transport.pauseProducing()  # type: ignore[attr-defined]
                await eventually(lambda: factory.frames.held > 1 << 20)
            clients.append((client, payload))
        (a, _), (b, b_payload) = clients
        await eventually(lambda: len(factory.frames.waiting) == 1)  # B stopped reading
        assert b.echoed == []
        a.transport.resumeProducing()  # type: ignore[union-attr]  # (and reads its echo)
        await eventually(lambda: b"".join(b.echoed) == b_payload, seconds=15)
        assert factory.frames.held == 0
        for client, _ in clients:
            client.transport.loseConnection()  # type: ignore[union-attr]

    @deferred_test
    async def test_stopped_for_its_unsent_echo_it_reads_again_once_that_is_sent(self) -> None:
        """
        A's 16 MiB frame arrives but for its last byte, under the 17 MiB budget; B's
        8 MiB partial frame takes the budget over (B reads on). A, reading nothing, sends
        its last byte: its echo, unsent, stops A. Once A reads its echo, A is served
        again (a message of 64 bytes comes back) while B's frame is still unfinished.
        """
        factory, endpoint = await self._listener(17 << 20)

        async def client(size: int, held_back: int) -> _RawWebSocket:
            made = _RawWebSocket(random_bytes(size), held_back)
            connected = await endpoint.connect(Factory.forProtocol(lambda: made))
            assert connected is made and made.transport is not None
            return made

        a = await client(16 << 20, 1)
        # All of A's frame is held but its last byte (websockets has parsed its header).
        await eventually(lambda: factory.frames.held == (16 << 20) - 1, seconds=15)
        b = await client(16 << 20, 8 << 20)
        await eventually(lambda: factory.frames.exempt is not None, seconds=15)
        a.transport.pauseProducing()  # type: ignore[union-attr]  # A reads nothing now
        a.send_the_rest()
        await eventually(lambda: len(factory.frames.waiting) == 1, seconds=15)  # A stopped
        a.transport.resumeProducing()  # type: ignore[union-attr]
        await eventually(lambda: len(b"".join(a.echoed)) == 16 << 20, seconds=15)
        small = random_bytes(64)
        a.transport.write(Frame(Opcode.BINARY, small).serialize(mask=True))  # type: ignore[union-attr]
        await eventually(lambda: a.echoed[-1:] == [small], seconds=15)
        assert b.echoed == [] and factory.frames.exempt is not None  # B's frame still held
        for each in (a, b):
            each.transport.loseConnection()  # type: ignore[union-attr]


# --- echokit's server and client over real sockets --------------------------------------


class WSEchoTests(_StreamEchoMixin, TestCase):
    """ws:PORT: WebSocket over TCP; each write one binary message (up to 20 MiB)."""

    description = "ws:0:interface=127.0.0.1"


class WSGeneralFormTests(TestCase):
    """The general form wraps a stream string: ws:tcp6:, ws:unix:, ws:ssl: (announced wss:)."""

    async def _echo_through(self, description: str, announced: str) -> None:
        session = EchoSession(self)
        [listener] = await session.serve(description)
        self.assertTrue(listener.connect_string.startswith(announced), listener.connect_string)
        echoed: list[bytes] = []
        connection = await session.stream(listener, echoed.append)
        payload = random_bytes(3 << 20)
        for start in range(0, len(payload), 1 << 16):
            connection.protocol.send(payload[start : start + (1 << 16)])
        connection.protocol.finish()
        await connection.protocol.done
        self.assertEqual(b"".join(echoed), payload)

    @deferred_test
    async def test_tcp6(self) -> None:
        """ws:tcp6:...:path=/echo listens on ::1 and is reached at that path."""
        if NO_IPV6:
            raise SkipTest(NO_IPV6)
        await self._echo_through("ws:tcp6:0:interface=\\:\\:1:path=/echo", "ws:host=\\:\\:1:port=")

    @deferred_test
    async def test_unix(self) -> None:
        """ws:unix:PATH is reached by the announced ws:unix:PATH."""
        await self._echo_through(f"ws:unix:{self.mktemp()}.sock", "ws:unix:")

    @deferred_test
    async def test_ssl(self) -> None:
        """ws:ssl:PORT is WebSocket over TLS, announced (and verified) as wss:."""
        await self._echo_through("ws:ssl:0:interface=127.0.0.1", "wss:host=localhost:port=")


class WSSEchoTests(_StreamEchoMixin, TestCase):
    """wss:PORT: WebSocket over TLS, the client verifying echokit's CA."""

    description = "wss:0:interface=127.0.0.1"

    @deferred_test
    async def test_verified_tls_under_the_websocket(self) -> None:
        """The wss connection is TLS 1.2 or newer, and the announced string says wss."""
        session = EchoSession(self)
        [listener] = await session.serve(self.description)
        self.assertTrue(listener.connect_string.startswith("wss:host=localhost:port="))
        connection = await session.stream(listener)
        handle = connection.protocol.transport.getHandle()  # type: ignore[attr-defined]
        self.assertIn(handle.get_protocol_version_name(), ("TLSv1.2", "TLSv1.3"))
        connection.protocol.finish()
        await connection.protocol.done


# --- grammar and bad input ----------------------------------------------------------------


class WebSocketGrammarTests(TestCase):
    """The ws/wss endpoint strings, and the errors for bad ones."""

    def test_forms(self) -> None:
        """Short forms, general forms and pasted URLs parse to what they say."""
        assert parse_server("ws:16080:path=/e").values == {"port": 16080, "path": "/e"}
        inner = parse_server("ws:unix:/tmp/ws.sock").values["inner"]
        assert (inner.kind, inner.values) == ("unix", {"address": "/tmp/ws.sock"})  # type: ignore[attr-defined]
        url = parse_client("wss://localhost:8443/echo?x=1")
        assert (url.kind, url.values) == (
            "wss",
            {"host": "localhost", "port": 8443, "path": "/echo?x=1"},
        )
        assert parse_client("ws://127.0.0.1").values["port"] == 80

    def test_bad_strings(self) -> None:
        """Unknown keywords, a path without '/', datagram inner strings: one-line errors."""
        cases = [
            (parse_server, "ws:16080:color=red", "unknown keyword 'color'"),
            (parse_server, "ws:16080:path=echo", "does not start with '/'"),
            (parse_client, "ws:host=a:port=1:path=echo", "does not start with '/'"),
            (parse_server, "ws:udp:16000", "not over udp"),
            (parse_server, "wss:tcp6:16000", "write ws:ssl:PORT"),
            (parse_client, "ws://:80/", "names no host"),
            (parse_client, "ws:unix:path=/tmp/x", "socket's path bare"),
        ]
        for parse, text, expected in cases:
            with pytest.raises(EndpointError, match=expected.replace("(", r"\(")):
                parse(text)


# --- echokit serve and connect, as processes, with the websockets library ------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """One C{echokit serve ws:... wss:...}; its log must end with no traceback."""
    cert_dir = tmp_path_factory.mktemp("ws-certs")
    with echokit_server(
        ["ws:0:interface=127.0.0.1", "wss:0:interface=127.0.0.1:path=/echo"], cert_dir
    ) as server:
        yield dict(zip(["ws", "wss"], server.connect_strings, strict=True)), cert_dir
        log = server.stop()
    assert "Traceback" not in log and "Unhandled" not in log, log


def _url(connect_string: str) -> str:
    spec = parse_client(connect_string)
    path = spec.values.get("path", "/")
    return f"{spec.kind}://{spec.values['host']}:{spec.values['port']}{path}"


def _as_bytes(message: bytes | str) -> bytes:
    return message.encode() if isinstance(message, str) else message


async def _exchange(
    url: str, context: ssl.SSLContext | None, payloads: list[bytes | str]
) -> tuple[list[bytes | str], int | None]:
    """
    The websockets library's asyncio client: send each message while reading its echo (an
    echo server stops reading from a client that does not read), then a ping, then close.
    """
    from websockets.asyncio.client import connect

    echoes: list[bytes | str] = []
    async with connect(url, ssl=context, max_size=None, max_queue=None, compression=None) as client:
        for payload in payloads:
            sending = asyncio.ensure_future(client.send(payload))
            try:
                echoes.append(await asyncio.wait_for(client.recv(), 60))
            except BaseException:
                # Collect the send's own failure, or asyncio logs it with a traceback
                # whenever the task is garbage-collected (once inside pytest's ast.parse,
                # which Python 3.11 then fails with "AST constructor recursion depth
                # mismatch").
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await sending
                raise
            await sending
        pong = await client.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
    return echoes, client.close_code


class WebsocketsClientTests:
    """The websockets library's client against C{echokit serve}."""

    @pytest.mark.parametrize("kind", ["ws", "wss"])
    def test_messages_echo_with_their_type(
        self, served: tuple[dict[str, str], Path], kind: str
    ) -> None:
        """Binary and text messages of 0 B to 16 MiB come back whole and of the same type."""
        strings, cert_dir = served
        context = None
        if kind == "wss":
            context = ssl.create_default_context(cafile=str(cert_dir / "ca.pem"))
        sizes = [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20]
        payloads: list[bytes | str] = [random_bytes(size) for size in sizes]
        payloads.append("héllo wörld")
        echoes, close_code = asyncio.run(_exchange(_url(strings[kind]), context, payloads))
        assert close_code == 1000
        for payload, echo in zip(payloads, echoes, strict=True):
            assert type(echo) is type(payload)
            assert (
                hashlib.sha256(_as_bytes(echo)).digest()
                == hashlib.sha256(_as_bytes(payload)).digest()
            ), len(payload)

    def test_oversized_message_closes_1009(self, served: tuple[dict[str, str], Path]) -> None:
        """A message over the limit closes the connection with 1009; the server serves on."""
        strings, _ = served
        with pytest.raises(ConnectionClosedError) as closed:
            asyncio.run(_exchange(_url(strings["ws"]), None, [b"x" * (MAX_MESSAGE_SIZE + 1)]))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        echoes, _ = asyncio.run(_exchange(_url(strings["ws"]), None, [b"still here"]))
        assert echoes == [b"still here"]

    def test_plain_http_gets_426_and_one_log_line(self, tmp_path: Path) -> None:
        """Plain HTTP requests to a ws port are answered 426, logged once per 10 s."""
        with echokit_server(["ws:0:interface=127.0.0.1"], tmp_path) as server:
            port = int(server.connect_strings[0].rsplit("port=", 1)[1])
            answers = []
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    answer = b""
                    while chunk := sock.recv(4096):
                        answer += chunk
                    answers.append(answer)
            log = server.stop()
        assert all(a.startswith(b"HTTP/1.1 426 Upgrade Required\r\n") for a in answers), answers
        assert log.count("refused a request from") == 1, log
        assert "Traceback" not in log


def _websockets_echo_server(
    ready: threading.Event, port: list[int], stop: asyncio.Event, kinds: list[type] | None = None
) -> None:
    """
    A websockets echo server (not echokit's), in its own thread and event loop, that
    echoes each message 20 ms late: a client that sent its close with the last message
    would lose that message's echo (this server answers a close at once). The type of
    every message it gets (C{bytes} or C{str}) goes to C{kinds}.
    """
    from websockets.asyncio.server import serve

    async def echo(connection: object) -> None:
        async for message in connection:  # type: ignore[attr-defined]
            if kinds is not None:
                kinds.append(type(message))
            await asyncio.sleep(0.02)
            await connection.send(message)  # type: ignore[attr-defined]

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
            port.append(next(iter(server.sockets)).getsockname()[1])
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    asyncio.run(main())


#: Where Debian's node-ws installs Node's `ws` library (Debian's own nodejs searches there;
#: other builds of node need it on NODE_PATH).
NODE_LIBRARIES = Path("/usr/share/nodejs")


class NodeWsClientTests:
    """
    Node's `ws` library (the one wscat is built on), a client independent of the
    websockets library whose sans-IO core echokit's server uses, against C{echokit serve}.
    """

    @pytest.mark.parametrize("kind", ["ws", "wss"])
    def test_messages_ping_and_close(self, served: tuple[dict[str, str], Path], kind: str) -> None:
        """
        Binary messages of 0 B to 16 MiB and a text message come back whole and of the
        same type; a ping gets its pong; a close 1000 is answered with 1000. Over wss the
        client checks echokit's certificate and host name against echokit's CA.
        """
        node = require_tool("node")
        if not (NODE_LIBRARIES / "ws").is_dir():
            unmet("Node's ws library is not installed (apt-get install node-ws)")
        strings, cert_dir = served
        ca = str(cert_dir / "ca.pem") if kind == "wss" else "-"
        sizes = [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20]
        done = subprocess.run(
            [node, str(Path(__file__).with_name("ws_node_client.js")), _url(strings[kind]), ca]
            + [str(size) for size in sizes],
            env=dict(os.environ, NODE_PATH=str(NODE_LIBRARIES)),
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        result = json.loads(done.stdout)
        assert len(result["messages"]) == len(sizes) + 1
        for message in result["messages"]:
            assert message["echo_type"] == message["sent_type"], message
            assert message["echo"] == message["sent"], message
        assert [m["sent_type"] for m in result["messages"]] == ["binary"] * len(sizes) + ["text"]
        assert result["pong"] == "are you there"
        assert result["close"] == 1000


class ConnectToForeignServerTests:
    """C{echokit connect} against the websockets library's echo server."""

    def test_typed_line_goes_as_text(self) -> None:
        """At a terminal, a typed line is sent as a text message and its echo shown."""
        import pty
        import select

        ready, stop = threading.Event(), asyncio.Event()
        port: list[int] = []
        kinds: list[type] = []
        args = (ready, port, stop, kinds)
        thread = threading.Thread(target=_websockets_echo_server, args=args)
        thread.start()
        master, slave = pty.openpty()
        try:
            assert ready.wait(10)
            process = subprocess.Popen(
                [sys.executable, "-m", "echokit", "connect", f"ws://127.0.0.1:{port[0]}/"],
                stdin=slave,
                stdout=slave,
                stderr=subprocess.PIPE,
            )
            os.close(slave)
            seen = b""
            os.write(master, "héllo\n".encode())
            while "héllo  (".encode() not in seen:
                assert select.select([master], [], [], 15)[0], seen
                seen += os.read(master, 4096)
            os.write(master, b"\x04")
            assert process.wait(timeout=15) == 0
            assert process.stderr is not None and process.stderr.read() == b""
        finally:
            os.close(master)
            stop.set()
            thread.join(10)
        assert kinds == [str]

    def test_pipe_and_url(self) -> None:
        """Piped stdin goes as binary messages and is checked byte for byte; a URL works."""
        ready, stop = threading.Event(), asyncio.Event()
        port: list[int] = []
        thread = threading.Thread(target=_websockets_echo_server, args=(ready, port, stop))
        thread.start()
        try:
            assert ready.wait(10)
            payload = os.urandom(1 << 20)
            result = run_echokit(["connect", f"ws://127.0.0.1:{port[0]}/"], stdin=payload)
            assert result.returncode == 0, result.stderr
            assert result.stdout == payload
            message = run_echokit(
                ["connect", f"ws:host=127.0.0.1:port={port[0]}", "--message", "hi"]
            )
            assert message.returncode == 0 and message.stdout.startswith(b"hi  ("), message
        finally:
            stop.set()
            thread.join(10)


class ConnectCommandTests:
    """C{echokit connect} over ws and wss, and its errors."""

    @pytest.mark.parametrize("kind", ["ws", "wss"])
    def test_pipe_mode(self, served: tuple[dict[str, str], Path], kind: str) -> None:
        """Piped stdin over the announced string comes back byte for byte, exit 0."""
        strings, cert_dir = served
        payload = os.urandom(2 << 20)
        result = run_echokit(["connect", strings[kind]], cert_dir=cert_dir, stdin=payload)
        assert result.returncode == 0, result.stderr
        assert result.stdout == payload

    def test_wss_verifies_the_certificate(
        self, served: tuple[dict[str, str], Path], tmp_path: Path
    ) -> None:
        """wss against a CA the client does not trust fails with a one-line TLS error."""
        strings, _ = served
        other = tmp_path / "other"
        assert run_echokit(["certs", "--dir", str(other)], cert_dir=other).returncode == 0
        result = run_echokit(["connect", strings["wss"], "--message", "x"], cert_dir=other)
        assert result.returncode == 1
        err = result.stderr.decode()
        assert "not trusted" in err and "Traceback" not in err, err
        insecure = run_echokit(
            ["connect", strings["wss"], "--message", "x", "--insecure"], cert_dir=other
        )
        assert insecure.returncode == 0, insecure.stderr

    def test_wrong_path_is_one_line(self, served: tuple[dict[str, str], Path]) -> None:
        """Connecting to a path the server does not serve says so, exit 1."""
        strings, cert_dir = served
        result = run_echokit(
            ["connect", strings["ws"] + ":path=/nope", "--message", "x"], cert_dir=cert_dir
        )
        assert result.returncode == 1
        assert "refused the WebSocket upgrade to /nope with HTTP 404" in result.stderr.decode()

    def test_ws_client_on_a_tcp_echo_port(self, tmp_path: Path) -> None:
        """A ws client on a plain echo port gets a clear error, not a hang."""
        with echokit_server(["tcp:0:interface=127.0.0.1"], tmp_path) as server:
            port = server.connect_strings[0].rsplit("port=", 1)[1]
            result = run_echokit(
                ["connect", f"ws:host=127.0.0.1:port={port}", "--message", "x"], timeout=30
            )
        assert result.returncode == 1
        assert "did not answer as a WebSocket server" in result.stderr.decode(), result.stderr

    def test_missing_extra_is_a_hint(self) -> None:
        """Without websockets, a ws: string fails with the pip command that installs it."""
        code = (
            "import sys; sys.modules['websockets'] = None; "
            "from echokit.cli import entry; sys.argv = ['echokit', 'serve', 'ws:0']; entry()"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
        )
        assert result.returncode == 2, result.stderr
        err = result.stderr.decode()
        assert "pip install 'echokit[ws]'" in err and "Traceback" not in err, err


class TwistdWebSocketTests:
    """C{twistd -n echokit --listen ws:... --listen wss:...}: the plugin serves WebSocket too."""

    def test_twistd_serves_ws_and_wss(self, tmp_path: Path) -> None:
        """Both listeners are announced, echo for the websockets library's client, and stop."""
        from tests.test_deploy import child_env, running, twistd

        env = child_env(tmp_path / "certs", checkout=True)
        argv = twistd(
            "echokit",
            "--listen",
            "ws:0:interface=127.0.0.1",
            "--listen",
            "wss:0:interface=127.0.0.1",
        )
        with running(argv, tmp_path, env) as child:
            ws, wss = child.wait_announced(2)
            assert ws.startswith("ws:host=127.0.0.1:port="), child.text()
            assert wss.startswith("wss:host=localhost:port="), child.text()
            context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
            for string, tls in ((ws, None), (wss, context)):
                echoes, code = asyncio.run(_exchange(_url(string), tls, [b"\x00twistd", "text"]))
                assert echoes == [b"\x00twistd", "text"] and code == 1000
            child.stop(signal.SIGTERM)
        assert "Traceback" not in child.text(), child.text()


def test_ws_behind_a_proxy_header(tmp_path: Path) -> None:
    """ws:haproxy:tcp:...: the PROXY header first, then the upgrade; the log names the client."""
    with echokit_server(["ws:haproxy:tcp:0:interface=127.0.0.1"], tmp_path) as server:
        port = int(server.connect_strings[0].rsplit("port=", 1)[1])
        client = WSConnection(ConnectionType.CLIENT)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            header = b"PROXY TCP4 192.0.2.10 127.0.0.1 5555 80\r\n"
            sock.sendall(header + client.send(Request(host="x", target="/")))
            client.receive_data(sock.recv(4096))
            assert [type(e) for e in client.events()] == [AcceptConnection]
            sock.sendall(client.send(BytesMessage(data=b"proxied")))
            events: list[object] = []
            while not events:
                client.receive_data(sock.recv(4096))
                events = list(client.events())
            assert [(type(e), e.data) for e in events] == [(BytesMessage, b"proxied")]  # type: ignore[attr-defined]
        log = server.stop()
    assert "ws connection from 192.0.2.10:5555 opened" in log, log


def _upgraded_client(
    text: bool, inner: type[Protocol] = Protocol
) -> tuple[WebSocketClientProtocol, StringTransport, WSConnection]:
    """echokit's client, upgraded by a wsproto server in memory."""
    client = WebSocketClientProtocol(Factory.forProtocol(inner), Clock(), "h", "/")
    client.text = text
    transport = StringTransport()
    client.makeConnection(transport)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(transport.value())
    assert [type(e) for e in server.events()] == [Request]
    transport.clear()
    client.dataReceived(server.send(AcceptConnection()))
    assert client.upgraded.called
    return client, transport, server


class ClientMessageTypeTests(TestCase):
    """What echokit's client puts on the wire: binary messages, or text for typed lines."""

    def test_lines_go_as_text(self) -> None:
        """With text on (interactive mode), a UTF-8 line is one text message."""
        client, transport, server = _upgraded_client(text=True)
        client.write("héllo\n".encode())
        assert transport.value()[0] == 0x81  # FIN, opcode 1: text
        server.receive_data(transport.value())
        [event] = server.events()
        assert isinstance(event, TextMessage) and event.data == "héllo\n"

    def test_bytes_go_as_binary(self) -> None:
        """By default (pipe mode), and for bytes that are not UTF-8, a write is binary."""
        for text in (False, True):
            client, transport, server = _upgraded_client(text=text)
            client.write(b"\xff\x00data")
            assert transport.value()[0] == 0x82  # FIN, opcode 2: binary
            server.receive_data(transport.value())
            [event] = server.events()
            assert isinstance(event, BytesMessage) and event.data == b"\xff\x00data"


class _Received(Protocol):
    """An inner protocol that keeps what it is given and why its connection ended."""

    def connectionMade(self) -> None:
        self.received: list[bytes] = []
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason


class ClientAnswerTests(TestCase):
    """echokit's client against a wsproto server in memory: pings, fragments, closes."""

    def test_ping_gets_a_pong_and_fragments_are_one_echo(self) -> None:
        """A ping is answered with a pong; an echo in two frames is one message, delivered."""
        client, transport, server = _upgraded_client(text=False, inner=_Received)
        client.write(b"abcd")
        transport.clear()
        client.dataReceived(
            server.send(Ping(payload=b"p"))
            + server.send(BytesMessage(data=b"ab", message_finished=False))
            + server.send(BytesMessage(data=b"cd"))
        )
        server.receive_data(transport.value())
        assert [(type(e), e.payload) for e in server.events()] == [(Pong, b"p")]  # type: ignore[attr-defined]
        inner = client.inner
        assert isinstance(inner, _Received) and inner.received == [b"ab", b"cd"]
        assert not transport.disconnecting

    def test_echo_of_another_type_aborts(self) -> None:
        """A binary message echoed as text is a mismatch: the connection is aborted."""
        client, transport, server = _upgraded_client(text=False, inner=_Received)
        client.write(b"abcd")
        client.dataReceived(server.send(TextMessage(data="abcd")))
        assert transport.disconnecting
        client.connectionLost(Failure(ConnectionDone()))
        inner = client.inner
        assert isinstance(inner, _Received) and inner.reason is not None
        assert "binary message came back as text" in str(inner.reason.value)

    def test_close_with_an_error_status_is_answered_and_reported(self) -> None:
        """The server's close 1011 gets a close back, and ends the run with its status."""
        client, transport, server = _upgraded_client(text=False, inner=_Received)
        transport.clear()
        client.dataReceived(server.send(CloseConnection(code=1011, reason="boom")))
        server.receive_data(transport.value())
        [answer] = server.events()
        assert isinstance(answer, CloseConnection) and answer.code == 1011
        client.connectionLost(Failure(ConnectionDone()))
        inner = client.inner
        assert isinstance(inner, _Received) and inner.reason is not None
        assert "closed the WebSocket with status 1011 (boom)" in str(inner.reason.value)
