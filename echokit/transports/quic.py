"""
QUIC on Twisted: aioquic's sans-IO QUIC core driven by a Twisted UDP port.

aioquic's L{QuicConnection} does no I/O: it takes datagrams in (C{receive_datagram}),
gives datagrams out (C{datagrams_to_send}) and says when it next needs the time
(C{get_timer}). L{QuicDriver} is the glue: a UDP port's datagrams go in, what comes out is
sent, and the timer is a C{reactor.callLater}. So QUIC runs on the same reactor as every
other transport, with no asyncio loop.

Server (C{quic:PORT[:interface=ADDR][:retry=yes]}): L{QuicEchoServer} is a
L{DatagramProtocol} that routes each datagram to its connection by connection ID and
creates a connection for each new client Initial. Each connection echoes:

    - every bidirectional stream, byte for byte, and the client's FIN after the echo (the
      half-close guarantee TCP gives); any number of streams at once, up to QUIC's stream
      limit (128 open per connection);
    - every DATAGRAM frame (RFC 9221), when the client negotiated them.

TLS 1.3 with echokit's certificates (or C{certKey=}/C{privateKey=}), ALPN C{echo} only: a
client offering another protocol is refused in the handshake. Unidirectional streams are
not offered (nothing could carry their echo). Hardening:

    - Backpressure by flow control: L{EchoQuicConnection} grants a client more stream and
      connection credit only as the client acknowledges the echo, so a client that never
      reads can make the server hold about one window (L{WINDOW}) per connection, however
      many streams it opens, instead of aioquic's ever-doubling windows. DATAGRAM frames
      too large to echo in one packet, or beyond L{MAX_QUEUED_DATAGRAMS} waiting, are
      dropped (and counted), as UDP may drop them.
    - No amplification: aioquic answers an unvalidated address with at most three times
      the bytes received (RFC 9000 section 8) and ignores client Initials under 1,200
      bytes; C{retry=yes} makes every client prove its address with a Retry round trip
      first. Datagrams from source ports below 1024 are dropped (as udp: does), and a
      Version Negotiation packet is never answered with another.
    - Limits and timeouts: the server's connection limits (total and per peer) count QUIC
      connections too; a handshake not done within C{handshake_timeout} is closed; a
      connection silent for C{idle_timeout} ends (QUIC's own idle timeout).
    - Graceful drain: L{QuicListeningPort.stopListening} stops accepting new connections,
      closes the ones with no stream open, lets the others finish their echo, and closes
      the socket once all have ended.

Client (C{quic:host=H:port=P[:datagram=yes]}): L{QuicClientEndpoint} opens one QUIC
connection per C{connect} and one bidirectional stream on it, and hands the protocol a
L{QuicStreamTransport} that behaves like a TCP transport (write, half-close with
C{loseWriteConnection}, producers), so echokit's stream clients run over it unchanged.
With C{datagram=yes}, L{QuicDatagramEndpoint} connects a L{DatagramProtocol} whose
C{transport.write} sends one DATAGRAM frame, so the UDP clients run over it unchanged.
The server's certificate is verified like C{ssl:} (echokit's CA, or C{trustRoots=}) unless
C{--insecure}.

This module imports aioquic: import it only when a quic: string is used
(L{echokit.transports.endpoints} does), which keeps C{echokit --help} fast.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echokit.echo import MAX_QUIC_DATAGRAM_PAYLOAD
from echokit.errors import ConnectFailed
from echokit.runtime.policy import ConnectionLimiter, EveryInterval, ServerPolicy
from echokit.transports.datagram import (
    LOWEST_SOURCE_PORT,
    READ_SIZE,
    UDPClientEndpoint,
    warn_dropped,
)

#: Every server log line is in this namespace, whichever class writes it.
_log = Logger(namespace="echokit.serve")
# aioquic logs every connection error itself (Python logging, logger "quic"), which would
# reach stderr through logging's last-resort handler: echokit says each once, its own way.
logging.getLogger("quic").addHandler(logging.NullHandler())

#: The one application protocol echokit's QUIC speaks (ALPN).
ALPN = "echo"
#: Flow-control window, per stream and per connection: what a client may have sent that
#: the server has not yet seen acknowledged as echoed.
WINDOW = 1024 * 1024
#: The largest DATAGRAM frame echokit accepts (RFC 9221 max_datagram_frame_size).
MAX_DATAGRAM_FRAME = 65_536
#: The largest payload one DATAGRAM frame carries (L{MAX_QUIC_DATAGRAM_PAYLOAD}).
MAX_DATAGRAM_PAYLOAD = MAX_QUIC_DATAGRAM_PAYLOAD
#: DATAGRAM frames waiting to be echoed on one connection beyond which more are dropped.
MAX_QUEUED_DATAGRAMS = 1024
#: Bytes a client stream may have written and not yet had acknowledged before the
#: stream pauses its producer (stdin in C{echokit connect}'s pipe mode).
SEND_HIGH_WATER = 4 * WINDOW
#: Seconds a client waits for the server's FIN after its own, when closing.
CLOSE_WAIT = 5.0


def _address(host: str, port: int) -> IAddress:
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


def _send_backlog(connection: QuicConnection, stream_id: int) -> int:
    """Bytes written to a stream and not yet acknowledged by the peer (0 once it ended)."""
    stream = connection._streams.get(stream_id)  # aioquic has no public accessor
    return len(stream.sender._buffer) if stream is not None else 0


def _open_streams(connection: QuicConnection) -> int:
    """Streams whose echo (or FIN) is not yet acknowledged."""
    return sum(1 for s in connection._streams.values() if not s.sender.is_finished)


class WindowedQuicConnection(QuicConnection):
    """
    An aioquic connection whose receive windows slide with what the application consumed.

    aioquic doubles a window whenever half of it is received, whatever the application
    does with the data: a peer can then make this side hold ever more. This class moves
    each window to (bytes consumed + L{WINDOW}) instead, so a peer can be at most one
    window ahead of the application. Subclasses say what "consumed" means.

    Overrides two private methods of aioquic (C{_write_stream_limits} and
    C{_write_connection_limits}): checked against aioquic 1.x.
    """

    window = WINDOW

    def consumed(self, stream: Any) -> int:
        """Bytes of C{stream} the application is done with."""
        raise NotImplementedError

    def consumed_total(self) -> int:
        """Bytes of every stream together the application is done with."""
        raise NotImplementedError

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if stream.max_stream_data_local:
            target = self.consumed(stream) + self.window
            if target - stream.max_stream_data_local >= self.window // 4:
                stream.max_stream_data_local = target
        # aioquic doubles the window when half of it is received: hide the received
        # offset while it writes the frame, so only the sliding window above applies.
        received = stream.receiver.highest_offset
        stream.receiver.highest_offset = 0
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            stream.receiver.highest_offset = received

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        limit = self._local_max_data
        if limit.value - limit.used < self.window // 2:
            target = self.consumed_total() + self.window
            if target - limit.value >= self.window // 4:
                limit.value = target
        used = limit.used
        limit.used = 0  # as above: no doubling
        try:
            super()._write_connection_limits(builder, space)
        finally:
            limit.used = used


class EchoQuicConnection(WindowedQuicConnection):
    """
    The server's connection: a byte is consumed once its echo is acknowledged.

    An echo server hands every byte back to the same stream, so what it holds is what it
    received and the client has not yet acknowledged receiving back: a client that stops
    reading stops being able to send.
    """

    def consumed(self, stream: Any) -> int:
        return int(stream.sender._buffer_start)  # the echo acknowledged so far

    def consumed_total(self) -> int:
        held = sum(len(s.sender._buffer) for s in self._streams.values())
        return int(self._local_max_data.used) - held


class ClientQuicConnection(WindowedQuicConnection):
    """
    A client's connection: a byte is consumed once handed to the protocol, so a paused
    transport (stdout full in C{echokit connect}'s pipe mode) stops the server's echo.

    @ivar delivered: bytes handed to the protocol, per stream.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delivered: dict[int, int] = {}

    def consumed(self, stream: Any) -> int:
        return self.delivered.get(stream.stream_id, 0)

    def consumed_total(self) -> int:
        return sum(self.delivered.values())


class QuicDriver:
    """
    Drive one L{QuicConnection} on a Twisted reactor: datagrams in, datagrams out, timer.

    Subclasses handle the connection's events in L{handle_event}.
    """

    def __init__(
        self,
        connection: QuicConnection,
        clock: IReactorTime,
        send: Callable[[bytes, Any], object],
    ) -> None:
        self.connection = connection
        self.clock = clock
        self._send = send
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._soon: IDelayedCall | None = None
        self.ended = False

    def receive(self, data: bytes, addr: Any) -> None:
        """A datagram for this connection arrived."""
        self.connection.receive_datagram(data, addr, now=self.clock.seconds())
        self.process()

    def process(self) -> None:
        """Handle every pending event, then send what the connection has to send."""
        connection = self.connection
        while (event := connection.next_event()) is not None:
            self.handle_event(event)
        self.transmit()

    def transmit(self) -> None:
        """Send the connection's datagrams and re-arm its timer."""
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        if self.ended:
            return
        for data, addr in self.connection.datagrams_to_send(now=self.clock.seconds()):
            # A full send buffer or an unreachable peer: QUIC's loss recovery resends.
            with contextlib.suppress(OSError):
                self._send(data, addr)
        at = self.connection.get_timer()
        if at != self._timer_at:
            self._cancel_timer()
            if at is not None:
                self._timer = self.clock.callLater(
                    max(0.0, at - self.clock.seconds()), self._on_timer
                )
            self._timer_at = at
        self.transmitted()

    def transmit_soon(self) -> None:
        """Send on the next reactor turn: several writes in one turn share packets."""
        if self._soon is None and not self.ended:
            self._soon = self.clock.callLater(0, self.transmit)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self.connection.handle_timer(now=max(self.clock.seconds(), 0.0))
        self.process()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def stop(self) -> None:
        """Forget the connection: cancel its timers (it has ended)."""
        self.ended = True
        self._cancel_timer()
        self._timer_at = None
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None

    def handle_event(self, event: events.QuicEvent) -> None:
        raise NotImplementedError

    def transmitted(self) -> None:
        """Called after each transmit: a hook for backpressure checks."""


# --- configuration ----------------------------------------------------------------------


def server_configuration(
    cert: Path, key: Path | None, policy: ServerPolicy | None = None
) -> QuicConfiguration:
    """
    The QUIC settings of an echokit server: its certificate, ALPN C{echo}, DATAGRAM frames
    accepted, windows of L{WINDOW}, QUIC's idle timeout from the policy.

    @raise ValueError: (from aioquic) if the certificate or key cannot be loaded.
    """
    policy = policy or ServerPolicy()
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        max_datagram_frame_size=MAX_DATAGRAM_FRAME,
        max_data=WINDOW,
        max_stream_data=WINDOW,
        idle_timeout=policy.idle_timeout or 365 * 86400.0,
    )
    configuration.load_cert_chain(str(cert), str(key) if key else None)
    return configuration


def client_configuration(
    server_name: str, trust: Path | None, insecure: bool, datagrams: bool
) -> QuicConfiguration:
    """
    The QUIC settings of an echokit client: ALPN C{echo}; the server's certificate checked
    against C{trust} (a CA file or directory; the platform's store if C{None}) and
    C{server_name}, unless C{insecure}.
    """
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        server_name=server_name,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME if datagrams else None,
        idle_timeout=60.0,
    )
    if insecure:
        configuration.verify_mode = ssl.CERT_NONE
    elif trust is not None:
        if trust.is_dir():
            configuration.load_verify_locations(capath=str(trust))
        else:
            configuration.load_verify_locations(cafile=str(trust))
    return configuration


# --- the server -----------------------------------------------------------------------


@dataclass
class QuicStats:
    """What one QUIC listener did: for the summary printed at shutdown."""

    connections: int = 0
    streams: int = 0
    bytes: int = 0
    datagrams: int = 0
    refused: int = 0
    timeouts: int = 0
    errors: int = 0
    dropped: int = 0


class ServerConnection(QuicDriver):
    """One client's QUIC connection on an L{QuicEchoServer}: echoes its streams and datagrams."""

    def __init__(self, server: QuicEchoServer, connection: QuicConnection, addr: Any) -> None:
        super().__init__(connection, server.clock, server.send)
        self.server = server
        self.peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        self.peer_host = str(addr[0])
        self.handshake_done = False
        self.admitted = False
        self.closed_by: str | None = None
        self.closing = False
        self.bytes_echoed = 0
        self.datagrams_echoed = 0
        self.streams: set[int] = set()
        self._handshake_timer: IDelayedCall | None = None
        timeout = server.policy.handshake_timeout
        if timeout:
            self._handshake_timer = server.clock.callLater(timeout, self._handshake_late)

    @property
    def transport(self) -> ServerConnection:
        """What L{echokit.server.serve.drain} aborts: the connection itself."""
        return self

    def abortConnection(self) -> None:
        """Close now (the drain ran out): the client is told, nothing more is echoed."""
        self.close(QuicErrorCode.NO_ERROR, self.closed_by or "server closing")

    def close(self, code: int, why: str) -> None:
        """Close the connection (once: aioquic ignores a second close)."""
        if not self.ended and not self.closing:
            self.closing = True
            self.server.closing(self)
            # A transport-level close (with a frame type): its reason reaches a client
            # still in its handshake, where an application close would arrive blank.
            self.connection.close(
                error_code=code, frame_type=QuicFrameType.PADDING, reason_phrase=why
            )
            self.transmit()

    def handle_event(self, event: events.QuicEvent) -> None:
        connection = self.connection
        if isinstance(event, events.StreamDataReceived):
            if event.stream_id not in self.streams:
                self.streams.add(event.stream_id)
                self.server.stats.streams += 1
            connection.send_stream_data(event.stream_id, event.data, event.end_stream)
            self.bytes_echoed += len(event.data)
            if self.server.verbose:
                self.server.log_echo(self, len(event.data), f"stream {event.stream_id}")
        elif isinstance(event, events.DatagramFrameReceived):
            if len(event.data) > MAX_DATAGRAM_PAYLOAD or (
                len(connection._datagrams_pending) >= MAX_QUEUED_DATAGRAMS
            ):
                # Too large to echo in one packet (it would block every later one), or
                # more waiting than congestion control lets out: dropped, as UDP may.
                self.server.stats.dropped += 1
                return
            connection.send_datagram_frame(event.data)
            self.datagrams_echoed += 1
            if self.server.verbose:
                self.server.log_echo(self, len(event.data), "datagram")
        elif isinstance(event, events.StreamReset | events.StopSendingReceived):
            # The client gave up on the stream (or on its echo): so does the server.
            # (Nothing to reset if the echo was already finished.)
            with contextlib.suppress(AssertionError, ValueError):
                connection.reset_stream(event.stream_id, event.error_code)
        elif isinstance(event, events.HandshakeCompleted):
            self.handshake_done = True
            self._cancel_handshake_timer()
            self.server.connection_opened(self, event.alpn_protocol)
        elif isinstance(event, events.ConnectionIdIssued):
            self.server.route(event.connection_id, self)
        elif isinstance(event, events.ConnectionIdRetired):
            self.server.unroute(event.connection_id)
        elif isinstance(event, events.ConnectionTerminated):
            self._cancel_handshake_timer()
            self.stop()
            self.server.connection_closed(self, event)

    def transmitted(self) -> None:
        if self.server.accepting or self.ended or self.closing:
            return
        if not _open_streams(self.connection):
            # Draining: nothing left to echo here.
            self.close(QuicErrorCode.NO_ERROR, "server shutting down")

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        if not self.handshake_done:
            self.server.stats.timeouts += 1
            self.closed_by = "handshake timeout"
            self.close(QuicErrorCode.CONNECTION_REFUSED, "handshake timeout")

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None


class QuicEchoServer(DatagramProtocol):
    """
    A QUIC echo server on one UDP port: routes datagrams to connections, makes new ones.

    @ivar open_protocols: connections open, not yet closing (what a drain waits for).
    @ivar stats: connections, streams, bytes, datagrams, refusals, timeouts and errors.
    """

    noisy = False

    def __init__(
        self,
        listener: str,
        clock: IReactorTime,
        configuration: QuicConfiguration,
        policy: ServerPolicy | None = None,
        limiter: ConnectionLimiter | None = None,
        verbose: bool = False,
        retry: bool = False,
        connection_class: type[QuicConnection] = EchoQuicConnection,
    ) -> None:
        self.listener = listener
        self.clock = clock
        self.configuration = configuration
        self.policy = policy or ServerPolicy()
        self.limiter = limiter or ConnectionLimiter(
            self.policy.max_connections, self.policy.max_per_peer
        )
        self.verbose = verbose
        self.retry = QuicRetryTokenHandler() if retry else None
        #: Retry packets sent (each asks a new client to prove its address).
        self.retries = 0
        self.connection_class = connection_class
        self.stats = QuicStats()
        self.open_protocols: set[ServerConnection] = set()
        #: Connections closing: they answer late packets with CONNECTION_CLOSE for a while.
        self.closing_protocols: set[ServerConnection] = set()
        self.accepting = True
        self._routes: dict[bytes, ServerConnection] = {}
        self._drops = EveryInterval(10.0)
        self._refusals = EveryInterval(10.0)
        self.ended: defer.Deferred[None] = defer.Deferred()

    def startProtocol(self) -> None:
        sock = getattr(self.transport, "socket", None)
        self.send: Callable[[bytes, Any], object] = (
            sock.sendto if isinstance(sock, socket.socket) else self.transport.write  # type: ignore[union-attr]
        )

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if addr[1] < LOWEST_SOURCE_PORT:
            self._drop(addr, "its source port is below 1024")
            return
        try:
            header = pull_quic_header(
                Buffer(data=datagram), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            self._drop(addr, "it is not a QUIC packet (a udp: or plaintext client?)")
            return
        connection = self._routes.get(header.destination_cid)
        if connection is not None:
            connection.receive(datagram, addr)
            return
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return  # never answered: two servers would bounce them forever
        if header.version is not None and header.version not in (
            self.configuration.supported_versions
        ):
            if self.accepting and len(datagram) >= SMALLEST_MAX_DATAGRAM_SIZE:
                self.send(
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,
                        destination_cid=header.source_cid,
                        supported_versions=self.configuration.supported_versions,
                    ),
                    addr,
                )
            return
        if header.packet_type != QuicPacketType.INITIAL or len(datagram) < (
            SMALLEST_MAX_DATAGRAM_SIZE
        ):
            self._drop(
                addr,
                "it is not a QUIC Initial nor for a connection this server knows "
                "(a udp: or plaintext client?)",
            )
            return
        if not self.accepting:
            return
        original_cid, retry_cid = header.destination_cid, None
        if self.retry is not None:
            if not header.token:
                source_cid = os.urandom(8)
                token = self.retry.create_token(
                    address=addr,
                    original_destination_connection_id=header.destination_cid,
                    retry_source_connection_id=source_cid,
                    now=self.clock.seconds(),
                )
                assert header.version is not None  # an Initial has one
                self.retries += 1
                self.send(
                    encode_quic_retry(
                        version=header.version,
                        source_cid=source_cid,
                        destination_cid=header.source_cid,
                        original_destination_cid=header.destination_cid,
                        retry_token=token,
                    ),
                    addr,
                )
                return
            try:
                original_cid = self.retry.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=self.clock.seconds(),
                )
            except ValueError:
                self._drop(addr, "its Retry token is not valid")
                return
            retry_cid = header.destination_cid
        quic = self.connection_class(
            configuration=self.configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
        )
        # No unidirectional streams: an echo could not go back on one.
        quic._local_max_streams_uni.value = quic._local_max_streams_uni.sent = 0
        connection = ServerConnection(self, quic, addr)
        self._routes[header.destination_cid] = connection
        self._routes[quic.host_cid] = connection
        self.open_protocols.add(connection)
        refused = self.limiter.admit(connection.peer_host)
        if refused is None:
            connection.admitted = True
            self.stats.connections += 1
            connection.receive(datagram, addr)
        else:
            # Read the Initial (for its keys) but answer only with CONNECTION_CLOSE: the
            # handshake never starts, and the client reads the reason.
            quic.receive_datagram(datagram, addr, now=self.clock.seconds())
            self.stats.refused += 1
            connection.closed_by = f"over the {refused} connection limit"
            connection.close(QuicErrorCode.CONNECTION_REFUSED, connection.closed_by)
            suppressed = self._refusals.ready(self.clock.seconds())
            if suppressed is not None:
                _log.warn(
                    "{listener}: refused a connection from {peer}: over the {limit} "
                    "connection limit{more}",
                    listener=self.listener,
                    transport="quic",
                    peer=connection.peer,
                    limit=refused,
                    more=f" ({suppressed} more refused since the last message)"
                    if suppressed
                    else "",
                )

    def closing(self, connection: ServerConnection) -> None:
        """C{connection} has sent its CONNECTION_CLOSE: no longer open."""
        self.open_protocols.discard(connection)
        self.closing_protocols.add(connection)

    def _maybe_ended(self) -> None:
        if self.accepting or self.open_protocols or self.closing_protocols:
            return
        if not self.ended.called:
            self.ended.callback(None)

    def route(self, cid: bytes, connection: ServerConnection) -> None:
        self._routes[cid] = connection

    def unroute(self, cid: bytes) -> None:
        self._routes.pop(cid, None)

    def log_echo(self, connection: ServerConnection, size: int, where: str) -> None:
        _log.debug(
            "{listener}: echoed {size} bytes to {peer} ({where})",
            listener=self.listener,
            transport="quic",
            size=size,
            peer=connection.peer,
            where=where,
        )

    def connection_opened(self, connection: ServerConnection, alpn: str | None) -> None:
        if connection.admitted:
            _log.info(
                "quic connection from {peer} opened on {listener} (TLSv1.3, ALPN {alpn})",
                transport="quic",
                peer=connection.peer,
                listener=self.listener,
                alpn=alpn,
            )

    def connection_closed(
        self, connection: ServerConnection, event: events.ConnectionTerminated
    ) -> None:
        self.open_protocols.discard(connection)
        self.closing_protocols.discard(connection)
        for cid in [c for c, known in self._routes.items() if known is connection]:
            del self._routes[cid]
        if connection.admitted:
            self.limiter.release(connection.peer_host)
        self.stats.bytes += connection.bytes_echoed
        self.stats.datagrams += connection.datagrams_echoed
        why = connection.closed_by or event.reason_phrase or _error_name(event.error_code)
        if event.reason_phrase == "Idle timeout" and connection.closed_by is None:
            self.stats.timeouts += 1  # aioquic's words: QUIC's idle timeout ran out
        if not connection.handshake_done:
            if connection.admitted:
                self.stats.errors += 1
                _log.warn(
                    "{listener}: QUIC handshake with {peer} failed: {why}",
                    listener=self.listener,
                    transport="quic",
                    peer=connection.peer,
                    why=why,
                )
        else:
            if event.error_code != QuicErrorCode.NO_ERROR and connection.closed_by is None:
                self.stats.errors += 1
            _log.info(
                "quic connection from {peer} closed on {listener} after echoing {size} bytes "
                "on {streams} stream(s) and {datagrams} datagram(s) ({why})",
                transport="quic",
                peer=connection.peer,
                listener=self.listener,
                size=connection.bytes_echoed,
                streams=len(connection.streams),
                datagrams=connection.datagrams_echoed,
                why=why,
            )
        self._maybe_ended()

    def stop_accepting(self) -> None:
        """Take no new connection; close those with nothing left to echo."""
        self.accepting = False
        for connection in list(self.open_protocols):
            connection.transmitted()
        self._maybe_ended()

    def _drop(self, addr: Any, why: str) -> None:
        self.stats.dropped += 1
        warn_dropped(self._drops, self.clock.seconds(), self.listener, "quic", addr, why)


def _error_name(code: int) -> str:
    if code >= 0x100 and code < 0x200:
        return f"TLS alert {code - 0x100}"
    try:
        return QuicErrorCode(code).name
    except ValueError:
        return f"error {code:#x}"


@implementer(IListeningPort)
class QuicListeningPort:
    """
    The UDP port of a L{QuicEchoServer}, stopped gracefully.

    L{stopListening} stops accepting at once, and returns a Deferred that fires when every
    connection has ended and the socket is closed.
    """

    def __init__(self, port: IListeningPort, server: QuicEchoServer) -> None:
        self.port = port
        self.server = server

    def startListening(self) -> None:
        self.port.startListening()

    def getHost(self) -> IAddress:
        return self.port.getHost()

    def stopListening(self) -> defer.Deferred[None]:
        self.server.stop_accepting()
        ended: defer.Deferred[None] = defer.Deferred()

        def close(_: object) -> Any:
            return self.port.stopListening()

        self.server.ended.addCallback(close).chainDeferred(ended)
        return ended


class QuicServerEndpoint:
    """
    Listen for QUIC connections (C{quic:PORT}), the way a Twisted server endpoint listens.

    L{make_server} builds its L{QuicEchoServer}; C{listen} takes it and returns a
    L{QuicListeningPort}.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        interface: str,
        cert: Path,
        key: Path | None,
        retry: bool = False,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.cert = cert
        self.key = key
        self.retry = retry

    def make_server(
        self,
        listener: str,
        policy: ServerPolicy | None = None,
        limiter: ConnectionLimiter | None = None,
        verbose: bool = False,
    ) -> QuicEchoServer:
        """The echo server for this endpoint, with the server's limits and timeouts."""
        configuration = server_configuration(self.cert, self.key, policy)
        return QuicEchoServer(
            listener, self.reactor, configuration, policy, limiter, verbose, self.retry
        )

    async def _listen(self, server: QuicEchoServer) -> IListeningPort:
        port = self.reactor.listenUDP(
            self.port, server, interface=self.interface, maxPacketSize=READ_SIZE
        )
        return QuicListeningPort(port, server)

    def listen(self, server: QuicEchoServer) -> defer.Deferred[IListeningPort]:
        return defer.ensureDeferred(self._listen(server))


# --- the client -----------------------------------------------------------------------


def _connect_problem(text: str, event: events.ConnectionTerminated) -> ConnectFailed:
    """A one-line reason for a QUIC handshake that failed."""
    why = event.reason_phrase or _error_name(event.error_code)
    if "ALPN" in why or event.error_code == 0x100 + 120:  # TLS no_application_protocol
        return ConnectFailed(
            f"QUIC handshake with {text} failed: the server does not speak ALPN '{ALPN}' "
            f"({why}): is it an echokit quic: server?"
        )
    if "certificate" in why.lower() or "hostname" in why.lower():
        return ConnectFailed(
            f"QUIC: the server's certificate at {text} was rejected ({why}); give its CA "
            "with trustRoots=, or --insecure to skip checks"
        )
    if "limit" in why:
        return ConnectFailed(f"the QUIC server at {text} refused the connection: {why}")
    return ConnectFailed(f"QUIC handshake with {text} failed: {why}")


class ClientConnection(QuicDriver, DatagramProtocol):
    """
    A client's QUIC connection on its own connected UDP port.

    @ivar ready: fires with this object once the handshake is done, or fails with
        L{ConnectFailed}.
    """

    noisy = False

    def __init__(
        self,
        reactor: Any,
        configuration: QuicConfiguration,
        text: str,
        connection_class: type[QuicConnection] | None = None,
    ) -> None:
        connection = (connection_class or ClientQuicConnection)(configuration=configuration)
        QuicDriver.__init__(self, connection, reactor, self._write)
        self.reactor = reactor
        self.text = text
        self.ready: defer.Deferred[ClientConnection] = defer.Deferred()
        self.handlers: list[Callable[[events.QuicEvent], object]] = []
        self.after_transmit: list[Callable[[], object]] = []
        self.terminated: defer.Deferred[None] = defer.Deferred()
        self._port: Any = None
        self._connected = False
        self.peer: tuple[str, int] = ("", 0)

    def _write(self, data: bytes, addr: Any) -> None:
        self.transport.write(data)  # type: ignore[union-attr,call-arg]  # a connected port

    def start(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.connection.connect(peer, now=self.clock.seconds())
        self.transmit()

    def startProtocol(self) -> None:
        self._port = self.transport

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receive(datagram, self.peer)

    def connectionRefused(self) -> None:
        self._fail(
            ConnectFailed(
                f"no QUIC server at {self.text} (ICMP port unreachable): is an echokit "
                "quic: server listening there?"
            )
        )

    def stopProtocol(self) -> None:
        sock = getattr(self._port, "socket", None)
        pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock is not None else 0
        if pending == errno.ECONNREFUSED:
            self.connectionRefused()
        self._fail(ConnectFailed(f"the QUIC connection to {self.text} was closed"))

    def handle_event(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self._connected = True  # ready fires once the Finished has been sent
        if isinstance(event, events.ConnectionTerminated) and not self.ready.called:
            self.ready.errback(_connect_problem(self.text, event))
        for handler in list(self.handlers):
            handler(event)
        if isinstance(event, events.ConnectionTerminated):
            self.finish()

    def transmitted(self) -> None:
        if self._connected and not self.ready.called:
            self.ready.callback(self)
        for callback in list(self.after_transmit):
            callback()

    def _fail(self, problem: ConnectFailed) -> None:
        """The socket failed (refused, closed): end the connection with C{problem}."""
        if not self.ready.called:
            self.ready.errback(problem)
        ended = events.ConnectionTerminated(QuicErrorCode.INTERNAL_ERROR, None, str(problem))
        for handler in list(self.handlers):
            handler(ended)
        self.handlers.clear()

    def close(self, code: int = QuicErrorCode.NO_ERROR, why: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE to the server) and the UDP port."""
        if not self.ended:
            self.connection.close(error_code=code, reason_phrase=why)
            self.transmit()
        self.finish()

    def finish(self) -> None:
        if self.ended:
            return
        self.stop()
        self.handlers.clear()
        self.after_transmit.clear()
        if self._port is not None:
            port, self._port = self._port, None
            defer.maybeDeferred(port.stopListening).chainDeferred(self.terminated)


async def _open(
    reactor: Any,
    host: str,
    port: int,
    configuration: QuicConfiguration,
    text: str,
    timeout: float,
) -> ClientConnection:
    """Open a QUIC connection and wait, up to C{timeout} seconds, for its handshake."""
    address = await UDPClientEndpoint(reactor, host, port)._resolve()
    client = ClientConnection(reactor, configuration, text)
    udp = reactor.listenUDP(
        0, client, interface="::" if ":" in address else "0.0.0.0", maxPacketSize=READ_SIZE
    )
    udp.connect(address, port)
    client.start((address, port))

    def late(_: object, seconds: float) -> None:
        client.finish()
        raise ConnectFailed(
            f"no QUIC handshake from {text} within {seconds:g} s: is an echokit quic: "
            "server there? (a udp: echo server sends the packets back unanswered)"
        )

    ready = client.ready.addTimeout(timeout, reactor, onTimeoutCancel=late)
    try:
        connected = await ready
    except BaseException:  # failed, timed out, or cancelled (a caller's own timeout)
        client.finish()
        raise
    assert connected is not None
    return connected


@implementer(IPushProducer)
class QuicStreamTransport:
    """
    One bidirectional QUIC stream, as a Twisted stream transport.

    C{write} sends on the stream; C{loseWriteConnection} sends its FIN (the half-close);
    C{loseConnection} sends the FIN if not yet sent and closes the QUIC connection once
    the server's FIN has come back (or after L{CLOSE_WAIT} seconds); C{abortConnection}
    closes at once. The protocol's C{connectionLost} follows the connection's end.
    A registered producer is paused while more than L{SEND_HIGH_WATER} bytes wait for
    acknowledgement. Pausing this transport holds received data back from the protocol,
    and a L{ClientQuicConnection} extends the server no credit for it: the server can be
    at most one window (L{WINDOW}) ahead of a paused client.
    """

    disconnecting = False
    #: Encrypted, but not an ISSLTransport: half-close works, unlike over TLS.
    quic = True

    def __init__(self, client: ClientConnection, protocol: Protocol) -> None:
        self.client = client
        self.protocol = protocol
        self.stream_id = client.connection.get_next_available_stream_id()
        self.fin_sent = False
        self.fin_received = False
        self.lost = False
        self._producer: IPushProducer | None = None
        self._producer_paused = False
        self._paused = False
        self._held: list[bytes] = []
        self._close_timer: IDelayedCall | None = None
        client.handlers.append(self._event)
        client.after_transmit.append(self._transmitted)

    # ITransport

    def write(self, data: bytes) -> None:
        if self.fin_sent or self.lost:
            return
        self.client.connection.send_stream_data(self.stream_id, bytes(data))
        self.client.transmit_soon()
        producer = self._producer
        backlog = _send_backlog(self.client.connection, self.stream_id)
        if producer is not None and not self._producer_paused and backlog > SEND_HIGH_WATER:
            self._producer_paused = True
            producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        if self.fin_sent or self.lost:
            return
        self.fin_sent = True
        self.client.connection.send_stream_data(self.stream_id, b"", end_stream=True)
        self.client.transmit_soon()

    def loseConnection(self) -> None:
        if self.lost:
            return
        self.disconnecting = True
        self.loseWriteConnection()
        if self.fin_received:
            self._close(error.ConnectionDone())
        elif self._close_timer is None:
            self._close_timer = self.client.clock.callLater(
                CLOSE_WAIT, self._close, error.ConnectionDone()
            )

    def abortConnection(self) -> None:
        self._close(error.ConnectionAborted(), QuicErrorCode.NO_ERROR)

    def getPeer(self) -> IAddress:
        return _address(*self.client.peer)

    def getHost(self) -> IAddress:
        port = self.client._port
        return port.getHost() if port is not None else _address("0.0.0.0", 0)  # type: ignore[no-any-return,unused-ignore]

    # IConsumer

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        held, self._held = self._held, []
        for data in held:
            if self.lost:
                return
            self._deliver(data)
        self._maybe_end()
        self.client.transmit_soon()  # the credit the delivered bytes free

    def stopProducing(self) -> None:
        self.abortConnection()

    # events

    def _event(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived) and event.stream_id == self.stream_id:
            if event.data:
                if self._paused:
                    self._held.append(event.data)
                else:
                    self._deliver(event.data)
            if event.end_stream:
                self.fin_received = True
                self._maybe_end()
        elif isinstance(event, events.StreamReset) and event.stream_id == self.stream_id:
            self._close(error.ConnectionLost(f"the server reset the stream ({event.error_code})"))
        elif isinstance(event, events.ConnectionTerminated):
            why = event.reason_phrase or _error_name(event.error_code)
            if event.error_code == QuicErrorCode.NO_ERROR and self.fin_received:
                self._lost(error.ConnectionDone())
            else:
                self._lost(error.ConnectionLost(f"the QUIC connection ended: {why}"))

    def _deliver(self, data: bytes) -> None:
        """Hand C{data} to the protocol, and count it consumed (for flow control)."""
        delivered = getattr(self.client.connection, "delivered", None)
        if delivered is not None:
            delivered[self.stream_id] = delivered.get(self.stream_id, 0) + len(data)
        self.protocol.dataReceived(data)

    def _maybe_end(self) -> None:
        if self.fin_received and not self._held and not self.lost:
            # The server's FIN: everything it will send has come; nothing more to wait for.
            self._close(error.ConnectionDone())

    def _transmitted(self) -> None:
        producer = self._producer
        if producer is None or not self._producer_paused:
            return
        if _send_backlog(self.client.connection, self.stream_id) < SEND_HIGH_WATER // 2:
            self._producer_paused = False
            producer.resumeProducing()

    def _close(self, reason: Exception, code: int = QuicErrorCode.NO_ERROR) -> None:
        if self.lost:
            return
        self.client.close(code)
        self._lost(reason)

    def _lost(self, reason: Exception) -> None:
        if self.lost:
            return
        self.lost = True
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        self.client.finish()
        self.protocol.connectionLost(Failure(reason))


class _QuicClientBase:
    """
    Where a QUIC client connects and how: the two client endpoints below share it.

    @param configuration: makes a fresh aioquic configuration for each connection.
    @param timeout: seconds the connection and its handshake may take.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        configuration: Callable[[], QuicConfiguration],
        text: str,
        timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.configuration = configuration
        self.text = text
        self.timeout = timeout

    async def _open(self) -> ClientConnection:
        """Open a new QUIC connection to C{host}:C{port} and wait for its handshake."""
        return await _open(
            self.reactor, self.host, self.port, self.configuration(), self.text, self.timeout
        )


@implementer(IStreamClientEndpoint)
class QuicClientEndpoint(_QuicClientBase):
    """
    A QUIC connection with one bidirectional stream, as a Twisted stream client endpoint.

    Each C{connect} opens its own connection (its own UDP port), waits for the handshake
    (up to C{timeout} seconds) and connects the factory's protocol to a
    L{QuicStreamTransport}.
    """

    async def _connect(self, factory: IProtocolFactory) -> Any:
        client = await self._open()
        protocol = factory.buildProtocol(_address(*client.peer))
        if protocol is None:
            client.close()
            raise ConnectFailed(f"{self.text}: the client refused its connection")
        protocol.makeConnection(QuicStreamTransport(client, protocol))  # type: ignore[arg-type]
        return protocol

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(factory))


class QuicDatagramTransport:
    """A QUIC connection as a connected UDP port: C{write} sends one DATAGRAM frame."""

    def __init__(self, client: ClientConnection, protocol: DatagramProtocol) -> None:
        self.client = client
        self.protocol = protocol
        client.handlers.append(self._event)

    def write(self, packet: bytes, addr: Any = None) -> None:
        self.client.connection.send_datagram_frame(bytes(packet))
        self.client.transmit_soon()

    def stopListening(self) -> defer.Deferred[None]:
        self.client.close()
        return self.client.terminated

    def getHost(self) -> IAddress:
        port = self.client._port
        return port.getHost() if port is not None else _address("0.0.0.0", 0)  # type: ignore[no-any-return,unused-ignore]

    def _event(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.DatagramFrameReceived):
            self.protocol.datagramReceived(event.data, self.client.peer)
        elif isinstance(event, events.ConnectionTerminated):
            self.protocol.doStop()


class QuicDatagramEndpoint(_QuicClientBase):
    """
    A QUIC connection that carries DATAGRAM frames, as a connected UDP client endpoint.

    C{connect(protocol)} opens the connection and starts C{protocol} on a
    L{QuicDatagramTransport}; a protocol with a C{max_payload} is held to what one frame
    carries (L{MAX_DATAGRAM_PAYLOAD}).
    """

    async def _connect(self, protocol: DatagramProtocol) -> DatagramProtocol:
        client = await self._open()
        if client.connection._remote_max_datagram_frame_size is None:
            client.close()
            raise ConnectFailed(
                f"the QUIC server at {self.text} does not accept DATAGRAM frames (RFC 9221)"
            )
        if hasattr(protocol, "max_payload"):
            protocol.max_payload = min(protocol.max_payload, MAX_DATAGRAM_PAYLOAD)
        protocol.makeConnection(QuicDatagramTransport(client, protocol))  # type: ignore[arg-type]
        return protocol

    def connect(self, protocol: DatagramProtocol) -> defer.Deferred[DatagramProtocol]:
        return defer.ensureDeferred(self._connect(protocol))
