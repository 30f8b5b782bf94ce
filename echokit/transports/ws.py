"""
WebSocket echo (RFC 6455), C{ws:} and C{wss:}: sans-IO WebSocket cores under Twisted protocols.

Both ends run the websockets library's sans-IO core (C{websockets.server.ServerProtocol}
and C{websockets.client.ClientProtocol}, which mask and unmask in C): it measured a third
of wsproto's cost per 64-byte message. This module needs the C{ws} extra
(C{pip install 'echokit[ws]'}, which brings websockets); nothing imports it until a
C{ws:} or C{wss:} string is used, so C{echokit --help} and the other transports never pay
for it (see L{echokit.transports.endpoints.websocket_module}).

Three pieces, in the style of h11:

    - L{WebSocketEcho}, sans-IO: bytes in, bytes out. It answers the HTTP upgrade (or
      refuses a request that is not one with C{426 Upgrade Required}, or C{400}), echoes
      every message as one message of the same type (binary or text), frame by frame:
      each frame as soon as it is whole, so a message sent in fragments comes back in as
      many; answers pings with pongs and a close with a close, after the echoes of what
      came before it.
    - L{WebSocketEchoProtocol}, the server: L{EchoServerProtocol} (its limits, idle and
      handshake timeouts, backpressure, drain and counts) with L{WebSocketEcho} between
      the bytes read and the bytes written. The upgrade, like a TLS handshake, must be
      done within the policy's C{handshake_timeout}.
    - L{WebSocketClientProtocol}, the client: it upgrades a stream connection, then
      looks like a stream transport to the protocol it carries (C{EchoClientProtocol},
      the bench loops): each C{write} is one binary (or, with C{text}, text) message,
      each message's payload is delivered with C{dataReceived}, C{loseWriteConnection}
      sends a close once every message has come back (WebSocket has no half-close), and
      every message must come back whole: the same size and type, in order. Each echo
      may come back in several frames (a server may fragment its echo): it is still one
      message.

Limits: a message may be up to L{MAX_MESSAGE_SIZE} bytes (64 MiB); a longer one closes
the connection with status 1009 (message too big), as soon as a frame header says so.
The server holds a frame until it is whole (websockets' parser reads whole frames), so
one connection holds at most one message's worth of frame besides its unsent echo, and
the frames of all connections share the listener's budget (L{WebSocketEchoProtocol}).
"""

from __future__ import annotations

import codecs
import contextlib
import http
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage, InvalidStatus, PayloadTooBig
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request as HTTPRequest
from websockets.http11 import Response as HTTPResponse
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI
from zope.interface import implementer

from echokit.errors import ConnectFailed, EchoMismatch
from echokit.runtime.policy import EchoBudget, EveryInterval
from echokit.transports.fastpath import READ_SIZE, queued_bytes, send_without_delay
from echokit.transports.stream import EchoServerFactory, EchoServerProtocol

#: The largest message echoed (bytes; a text message's UTF-8 bytes). Larger: close 1009.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: Seconds a client waits for the server's close once it sent its own, before aborting.
CLOSE_TIMEOUT = 5.0

_log = Logger(namespace="echokit.serve")
BINARY, TEXT, CONT = Opcode.BINARY, Opcode.TEXT, Opcode.CONT
PING, CLOSE = Opcode.PING, Opcode.CLOSE


# --- the sans-IO server core -----------------------------------------------------------


@dataclass
class Outcome:
    """
    What one call of L{WebSocketEcho.receive} asks of its caller.

    @ivar send: bytes to write to the peer, in order.
    @ivar upgraded: the path the client asked for, if the upgrade was accepted now.
    @ivar refused: why the request was refused (not a WebSocket upgrade, wrong path, bad
        frames), if it was; the connection should close once C{send} is written.
    @ivar close: whether to close the connection once C{send} is written.
    @ivar echoed: message payload bytes echoed by this call.
    """

    send: bytes = b""
    upgraded: str | None = None
    refused: str | None = None
    close: bool = False
    echoed: int = 0


def _http_refusal(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 answer refusing a request that is not a WebSocket upgrade."""
    body = f"{detail}\n".encode()
    headers = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 426:
        headers += ["Upgrade: websocket", "Sec-WebSocket-Version: 13"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


@dataclass
class WebSocketEcho:
    """
    The echo side of one WebSocket connection, without I/O.

        >>> echo = WebSocketEcho(path="/")
        >>> outcome = echo.receive(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        >>> outcome.refused, outcome.send.split(b"\\r\\n")[0]
        ('not a WebSocket upgrade (missing Connection header)', b'HTTP/1.1 426 Upgrade Required')

    The websockets library's L{ServerProtocol} parses the upgrade and the frames, checks
    them (masking, opcodes, control frames, the size of a message across its fragments)
    and answers pings and closes itself; this class echoes each data frame as a frame of
    the same kind, checks that text is UTF-8 (RFC 6455 8.1: websockets' sans-IO layer
    leaves that to its callers), and keeps everything it sends in the order of the frames
    that caused it: an echo never follows the close that came after its message.

    @ivar path: the only path served (C{None}: any path).
    @ivar max_message: the largest message echoed, in bytes.
    """

    path: str | None = "/"
    max_message: int = MAX_MESSAGE_SIZE
    _ws: ServerProtocol = field(init=False)
    _text: bool = False
    _utf8: codecs.IncrementalDecoder | None = None
    _closing: bool = False

    def __post_init__(self) -> None:
        self._ws = ServerProtocol(max_size=self.max_message)

    @property
    def open(self) -> bool:
        """Whether the upgrade is done and no close has been sent or received."""
        return self._ws.state is State.OPEN

    @property
    def unparsed(self) -> int:
        """Bytes read and not yet echoed: the part of a frame still arriving."""
        return len(self._ws.reader.buffer)

    def receive(self, data: bytes) -> Outcome:
        """Take bytes from the peer; say what to send back and what happened."""
        outcome = Outcome()
        if self._closing:
            return outcome
        ws = self._ws
        ws.receive_data(data)
        # What websockets wrote while parsing (pongs, the answer to a close, the close
        # that fails the connection, the end of the stream), in the order of its frames.
        replies = ws.data_to_send()
        events = ws.events_received()
        if not replies and len(events) == 1:  # the common case: one data frame
            frame = events[0]
            if isinstance(frame, Frame) and frame.opcode is BINARY:
                self._text = False
                outcome.send = frame.serialize(mask=False)  # the same frame, unmasked
                outcome.echoed = len(frame.data)
                return outcome
        out: list[bytes] = []
        answered = 0
        for event in events:
            if not isinstance(event, Frame):  # the upgrade request (a server gets no Response)
                if isinstance(event, HTTPRequest) and not self._upgrade(event, out, outcome):
                    return outcome
                continue
            opcode = event.opcode
            if opcode is BINARY or opcode is TEXT or opcode is CONT:
                if opcode is not CONT:
                    self._text = opcode is TEXT
                if self._text and not self._valid_utf8(event):
                    self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message", out)
                    outcome.refused = "closed: a text message that is not UTF-8 (status 1007)"
                    break
                out.append(event.serialize(mask=False))
                outcome.echoed += len(event.data)
            elif opcode is PING:
                out.append(replies[answered])
                answered += 1
            elif opcode is CLOSE:
                code = ws.close_rcvd.code if ws.close_rcvd is not None else CloseCode.NO_STATUS_RCVD
                if code not in (1000, 1001, 1005):
                    reason = ws.close_rcvd.reason if ws.close_rcvd is not None else ""
                    outcome.refused = f"closed with status {code} ({reason or 'no reason'})"
        else:
            out += replies[answered:]  # after a close, or a failure: the rest, in order
            if ws.parser_exc is not None:
                outcome.refused = self._failure(ws.parser_exc)
            elif ws.handshake_exc is not None and outcome.upgraded is None:
                # Not HTTP (answered 400 here), or a request line or headers too long
                # (websockets' own 414 or 431, in C{out}).
                return self._refuse(outcome, ws.handshake_exc, answer=b"".join(out))
        if b"" in out:  # websockets' end of stream: close once the rest is written
            outcome.close = self._closing = True
        outcome.send = b"".join(out)
        return outcome

    def _upgrade(self, request: HTTPRequest, out: list[bytes], outcome: Outcome) -> bool:
        """Accept or refuse the upgrade; C{False} if refused (C{outcome} says why)."""
        target = request.path.split("?", 1)[0]
        if self.path is not None and target != self.path:
            outcome.send = _http_refusal(
                404, "Not Found", f"no WebSocket echo at {target}: try {self.path}"
            )
            outcome.refused = f"asked for path {target}, served at {self.path}"
            outcome.close = self._closing = True
            return False
        response = self._ws.accept(request)
        if response.status_code != 101:
            assert self._ws.handshake_exc is not None
            self._refuse(outcome, self._ws.handshake_exc, response.status_code)
            return False
        self._ws.send_response(response)
        out += self._ws.data_to_send()
        outcome.upgraded = request.path
        return True

    def _valid_utf8(self, frame: Frame) -> bool:
        """Whether a text frame's payload continues its message as UTF-8."""
        if self._utf8 is None:
            self._utf8 = codecs.getincrementaldecoder("utf-8")()
        try:
            self._utf8.decode(frame.data, frame.fin)
        except UnicodeDecodeError:
            return False
        if frame.fin:
            self._utf8.reset()
        return True

    def _fail(self, code: CloseCode, reason: str, out: list[bytes]) -> None:
        """Close with C{code} now (the rest of what was read is not answered)."""
        if self._ws.state is State.OPEN:
            self._ws.fail(code, reason)
            out += self._ws.data_to_send()
        else:  # a close later in the same read was answered already: this one counts
            payload = Close(code, reason).serialize()
            out += [Frame(CLOSE, payload).serialize(mask=False), b""]

    def _failure(self, exc: Exception) -> str:
        if isinstance(exc, PayloadTooBig):
            return f"a message over the {self.max_message:,}-byte limit"
        return str(exc) or type(exc).__name__

    def _refuse(
        self, outcome: Outcome, exc: Exception, status: int = 400, answer: bytes = b""
    ) -> Outcome:
        """Answer a request that is not a WebSocket upgrade (or send C{answer}), and close."""
        if isinstance(exc, InvalidMessage):
            outcome.send = _http_refusal(400, "Bad Request", "not an HTTP request")
            outcome.refused = "not an HTTP request"
        elif answer:
            outcome.send = answer
            outcome.refused = f"not a WebSocket upgrade ({exc})"
        else:
            phrase = http.HTTPStatus(status).phrase
            detail = f"this is a WebSocket echo server: {exc}"
            outcome.send = _http_refusal(status, phrase, detail)
            outcome.refused = f"not a WebSocket upgrade ({exc})"
        outcome.close = self._closing = True
        return outcome


# --- the Twisted server --------------------------------------------------------------


class WebSocketEchoProtocol(EchoServerProtocol):
    """
    L{EchoServerProtocol}, speaking WebSocket: see the module docstring.

    A frame is echoed once whole, so a frame still arriving is held in memory too, up to
    the message limit, and its echo is written whole: a frame still arriving, and then
    its unsent echo until it is sent, are counted in the factory's L{frames} budget, and
    once all together are over it, only one connection reads on (until its frame is
    whole) while the others stop reading, as the unsent echo's budget does.
    """

    factory: WebSocketEchoFactory
    upgraded = False
    _upgrade_timer: Any = None
    _holding_frame = False

    def connectionMade(self) -> None:
        self.session = WebSocketEcho(self.factory.path)
        super().connectionMade()
        if self.admitted and self.factory.policy.handshake_timeout:
            self._upgrade_timer = self.factory.clock.callLater(
                self.factory.policy.handshake_timeout, self._upgrade_late
            )

    def dataReceived(self, data: bytes) -> None:
        outcome = self.session.receive(data)
        if outcome.send:
            self._writer.write(outcome.send)
        self.bytes_echoed += outcome.echoed
        if self._last_heard is not None:
            self._last_heard = self.factory.clock.seconds()
        if outcome.upgraded is not None:
            self.upgraded = True
            self._cancel_upgrade_timer()
            self.factory.upgraded(self, outcome.upgraded)
        if outcome.refused is not None:
            self.factory.refused_request(self, outcome.refused, self.upgraded)
        if outcome.close:
            self.peer_finished = True
            self.close_gracefully(outcome.refused)
        elif self._holding_frame or self.session.unparsed:
            self._hold_frame()

    def _hold_frame(self) -> None:
        """
        Count the frame still arriving and the unsent echo in the frames' budget (until
        both are gone); stop reading if over.

        The unsent echo counts once it is over L{READ_SIZE}, the most a transport holds
        before it pauses this producer: it then says when it has sent it all
        (L{resumeProducing}), which frees the share. A smaller remainder, as for the
        stream echo's budget, is not counted: nothing would say when it is gone, and
        the share (and with it the budget's one reader) would stay until this peer
        sent again or closed.
        """
        queued = queued_bytes(self.transport) or 0
        held = self.session.unparsed + (queued if queued > READ_SIZE else 0)
        if not held:
            self._holding_frame = False
            self._release_frame()
        else:
            self._holding_frame = True
            if not self.factory.frames.hold(self, held):
                self._pause_reading()  # until the budget names this one (L{_release_frame})

    def _release_frame(self) -> None:
        for woken in self.factory.frames.release(self):
            assert isinstance(woken, WebSocketEchoProtocol)
            woken._resume_reading()

    def resumeProducing(self) -> None:
        """
        Everything echoed has been sent: a large echo's share of the budget is free
        (before reading resumes: a connection stopped for that share reads again).
        """
        if self._holding_frame:
            self._hold_frame()
        super().resumeProducing()

    def _resume_reading(self) -> None:
        if self not in self.factory.frames.waiting:  # (others' frames come first)
            super()._resume_reading()

    def _upgrade_late(self) -> None:
        self._upgrade_timer = None
        self.factory.timed_out(self, "WebSocket handshake timeout")
        self._abort("WebSocket handshake timeout")

    def _cancel_upgrade_timer(self) -> None:
        if self._upgrade_timer is not None and self._upgrade_timer.active():
            self._upgrade_timer.cancel()
        self._upgrade_timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_upgrade_timer()
        self._release_frame()
        super().connectionLost(reason)


class WebSocketEchoFactory(EchoServerFactory):
    """
    L{EchoServerFactory} for WebSocket listeners: connections are logged once upgraded.

    @ivar path: the path served (C{/} unless the string says C{path=}).
    @ivar frames: the frames still arriving on this listener's connections, against the
        policy's C{max_buffered} together (a frame alone may be up to the message limit).
    """

    protocol = WebSocketEchoProtocol

    def __init__(self, *args: Any, path: str = "/", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = path
        self.frames = EchoBudget(0, self.policy.max_buffered)
        self._bad_requests = EveryInterval(10.0)

    def connection_opened(self, protocol: EchoServerProtocol, log: bool = True) -> None:
        super().connection_opened(protocol, log=False)

    def handshake_completed(self, protocol: EchoServerProtocol) -> None:
        pass  # logged once upgraded, with the TLS version (L{upgraded})

    def upgraded(self, protocol: WebSocketEchoProtocol, target: str) -> None:
        negotiated = getattr(protocol.transport, "negotiated", None)
        tls = " ({}, {})".format(*negotiated()) if negotiated is not None else ""
        _log.info(
            "{transport} connection from {peer} opened on {listener}, path {path}{tls}",
            transport=self.transport_name,
            peer=protocol.peer,
            listener=self.listener,
            path=target,
            tls=tls,
        )

    def refused_request(self, protocol: WebSocketEchoProtocol, why: str, upgraded: bool) -> None:
        """A request that is not a WebSocket upgrade, or bad frames: one line per 10 s."""
        self.stats.errors += 1
        suppressed = self._bad_requests.ready(self.clock.seconds())
        if suppressed is None:
            return
        what = "closed a WebSocket connection from" if upgraded else "refused a request from"
        _log.warn(
            "{listener}: {what} {peer}: {why}{more}",
            listener=self.listener,
            transport=self.transport_name,
            what=what,
            peer=protocol.peer,
            why=why,
            more=f" ({suppressed} more since the last message)" if suppressed else "",
        )


# --- the client ----------------------------------------------------------------------


class _Sent:
    """The messages sent and not yet echoed: their sizes and types, in order."""

    def __init__(self) -> None:
        self.pending: deque[tuple[int, bool]] = deque()
        self.received = 0

    def sent(self, size: int, text: bool) -> None:
        self.pending.append((size, text))

    def fragment(self, size: int, text: bool, finished: bool) -> str | None:
        """Account for an echoed fragment; a problem with the echo, or C{None}."""
        self.received += size
        if not self.pending:
            return "a message came back that was never sent"
        expected, expected_text = self.pending[0]
        if text != expected_text:
            kinds = ("binary", "text")
            return f"a {kinds[expected_text]} message came back as {kinds[text]}"
        if self.received > expected or (finished and self.received != expected):
            return (
                f"a {expected:,}-byte message came back as a message of "
                f"{'at least ' if not finished else ''}{self.received:,} bytes"
            )
        if finished:
            self.pending.popleft()
            self.received = 0
        return None


class WebSocketClientProtocol(Protocol):
    """
    Upgrade a stream connection to WebSocket, then carry C{inner} over it as if over a
    stream (see the module docstring).

    @ivar upgraded: fires with the inner protocol once the server accepted the upgrade,
        or fails with L{ConnectFailed} (refused) or the connection's failure.
    @ivar text: send each write as a text message (if it is UTF-8), not a binary one.
    """

    def __init__(
        self, factory: IProtocolFactory, clock: IReactorTime, host: str, path: str
    ) -> None:
        self.factory = factory
        self.clock = clock
        self.host = host
        self.path = path
        self.text = False
        self.inner: IProtocol | None = None
        self.upgraded: defer.Deferred[IProtocol] = defer.Deferred()
        target = WebSocketURI(secure=False, host="localhost", port=80, path=path, query="")
        self._ws = ClientProtocol(target, max_size=MAX_MESSAGE_SIZE)
        self._sent = _Sent()
        self._problem: Exception | None = None
        self._close_timer: Any = None
        self._close_when_echoed = False
        self._text = False
        self.disconnecting = False

    # What the inner protocol sees as its transport.

    def write(self, data: bytes) -> None:
        if self._ws.state is not State.OPEN:
            return  # closing: like a stream after loseConnection, further writes are dropped
        text = False
        if self.text:
            with contextlib.suppress(UnicodeDecodeError):  # not UTF-8: sent as binary
                data.decode()
                text = True
        self._sent.sent(len(data), text)
        if text:
            self._ws.send_text(data)
        else:
            self._ws.send_binary(data)
        self._flush()

    def _flush(self) -> None:
        """Write what websockets has to send (its end-of-stream marker is left to L{_close_after})."""
        for data in self._ws.data_to_send():
            if data:
                self.transport.write(data)  # type: ignore[union-attr]

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """
        Nothing more will be sent: close once every message sent has come back.

        (Not at once: a server may answer a close at once, with echoes still unsent;
        the websockets library's server does.)
        """
        self._close_when_echoed = True
        if not self._sent.pending:
            self._send_close(1000)

    def loseConnection(self) -> None:
        self.disconnecting = True
        if self._ws.state is State.OPEN:
            self._send_close(1000)
        elif self._ws.close_sent is None or self._ws.close_rcvd is not None:
            # (not while our close waits for the server's)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]

    def getPeer(self) -> IAddress:
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        return self.transport.getHost()  # type: ignore[union-attr]

    def getHandle(self) -> Any:
        return self.transport.getHandle()  # type: ignore[union-attr]

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    # The connection underneath.

    def connectionMade(self) -> None:
        send_without_delay(self.transport)
        request = self._ws.connect()
        del request.headers["Host"]
        request.headers["Host"] = self.host
        self._ws.send_request(request)
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        try:
            for event in ws.events_received():
                if isinstance(event, Frame):
                    opcode = event.opcode
                    if opcode is BINARY or opcode is TEXT or opcode is CONT:
                        self._echoed(event)
                    elif opcode is CLOSE:
                        self._closed_by_server()
                elif isinstance(event, HTTPResponse) and ws.handshake_exc is None:
                    self._accepted()
            if ws.handshake_exc is not None:
                raise self._refusal(ws.handshake_exc)
            if ws.parser_exc is not None:
                raise ConnectFailed(f"the server broke the WebSocket protocol: {ws.parser_exc}")
        except (ConnectFailed, EchoMismatch) as e:
            self._problem = e
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._flush()  # pongs, the answer to the server's close

    def _refusal(self, exc: Exception) -> ConnectFailed:
        """What the server's refusal of the upgrade means, for the user."""
        if isinstance(exc, InvalidStatus):
            return ConnectFailed(
                f"the server refused the WebSocket upgrade to {self.path} with HTTP "
                f"{exc.response.status_code}: is it a WebSocket server, and is the path right?"
            )
        return ConnectFailed(f"the server did not answer as a WebSocket server ({exc}): is it one?")

    def _accepted(self) -> None:
        self.inner = self.factory.buildProtocol(self.transport.getPeer())  # type: ignore[union-attr]
        if self.inner is None:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.inner.makeConnection(self)  # type: ignore[arg-type]
        self.upgraded.callback(self.inner)

    def _echoed(self, frame: Frame) -> None:
        if self.inner is None:
            return
        if frame.opcode is not CONT:
            self._text = frame.opcode is TEXT
        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
        problem = self._sent.fragment(len(data), self._text, frame.fin)
        if problem is not None:
            raise EchoMismatch(f"the WebSocket echo differs: {problem}")
        self.inner.dataReceived(data)
        if self._close_when_echoed and not self._sent.pending:
            self._send_close(1000)

    def _closed_by_server(self) -> None:
        """The server's close (websockets answers it, if it was not the answer to ours)."""
        close = self._ws.close_rcvd
        code = close.code if close is not None else CloseCode.NO_STATUS_RCVD
        if code not in (1000, 1001, 1005):
            reason = close.reason if close is not None else ""
            self._problem = ConnectFailed(
                f"the server closed the WebSocket with status {code}"
                + (f" ({reason})" if reason else "")
            )
        # The server closes the TCP connection; do it ourselves if it does not soon.
        self._close_after(CLOSE_TIMEOUT)

    def _send_close(self, code: int) -> None:
        if self._ws.state is State.OPEN:
            self._ws.send_close(code)
            self._flush()
            self._close_after(CLOSE_TIMEOUT)

    def _close_after(self, seconds: float) -> None:
        if self._close_timer is None:
            self._close_timer = self.clock.callLater(seconds, self._close_stalled)

    def _close_stalled(self) -> None:
        self._close_timer = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        if self._problem is not None:
            reason = Failure(self._problem)
        elif self._ws.state is State.OPEN and reason.check(error.ConnectionDone):
            reason = Failure(error.ConnectionLost("the server closed without a WebSocket close"))
        if self.inner is not None:
            self.inner.connectionLost(reason)
        elif not self.upgraded.called:
            self.upgraded.errback(reason)


class _UpgradingFactory(Factory):
    """Builds the one L{WebSocketClientProtocol} of a connect."""

    noisy = False

    def __init__(self, protocol: WebSocketClientProtocol) -> None:
        self.ws = protocol

    def buildProtocol(self, addr: IAddress | None) -> WebSocketClientProtocol:
        return self.ws


@implementer(IStreamClientEndpoint)
class WebSocketClientEndpoint:
    """
    Connect over C{wrapped} (TCP or TLS), upgrade to WebSocket at C{path}, and fire with
    the factory's protocol, carried by a L{WebSocketClientProtocol}.
    """

    def __init__(
        self,
        wrapped: IStreamClientEndpoint,
        clock: IReactorTime,
        host: str,
        path: str = "/",
        text: bool = False,
    ) -> None:
        self.wrapped = wrapped
        self.clock = clock
        self.host = host
        self.path = path
        self.text = text

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        protocol = WebSocketClientProtocol(factory, self.clock, self.host, self.path)
        protocol.text = self.text
        await self.wrapped.connect(_UpgradingFactory(protocol))
        return await protocol.upgraded

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        return defer.ensureDeferred(self._connect(protocolFactory))


def host_header(host: str, port: int, tls: bool) -> str:
    """
    The C{Host} header for C{host} and C{port}.

        >>> host_header("::1", 8080, False), host_header("example.com", 443, True)
        ('[::1]:8080', 'example.com')
    """
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if tls else 80) else f"{shown}:{port}"
