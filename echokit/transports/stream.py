"""
The echo protocols for byte streams: tcp, tcp6, unix and ssl/tls.

L{EchoServerProtocol} writes back every byte it receives (RFC 862). Three things make
it more than the tutorial's one-liner:

    - Half-close: it provides L{IHalfCloseableProtocol}, so when the client shuts down
      its write side the server still echoes everything it has and only then closes.
      (A protocol that does not provide it has its connection torn down at the client's
      FIN, dropping whatever echo is still buffered.)
    - Backpressure within a budget: it is its transport's streaming producer, so when
      the client stops reading and the write buffer fills, it decides whether to stop
      reading from that client: not while the connection holds less than its echo
      buffer (4 MiB by default: a client that reads only after sending everything
      still gets its echo) and all connections together less than the process's budget
      (L{EchoBudget}); past either, it stops reading until the echo has been sent.
    - Quiet by default: connections are logged when they open and close; each message
      only with C{-v}.

L{EchoClientProtocol} sends bytes and checks, with the sans-IO L{EchoVerifier}, that
exactly the same bytes come back; it reads while it sends.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echokit.echo import EchoVerifier, looks_like_tls
from echokit.errors import EchokitError, EchoMismatch, RuntimeFailure
from echokit.runtime.memory import give_back_freed_memory
from echokit.runtime.policy import ConnectionLimiter, EchoBudget, EveryInterval, ServerPolicy
from echokit.transports.fastpath import (
    Writer,
    queued_bytes,
    read_in_large_chunks,
    read_without_ancillary_data,
    send_without_delay,
    writer_for,
)
from echokit.transports.tlsreasons import tls_failure_text

#: Every server log line is in this namespace, whichever class writes it.
_log = Logger(namespace="echokit.serve")


class StreamTransport(TypingProtocol):
    """
    What echokit's stream protocols use of their transport.

    Twisted's TCP, unix and TLS transports all provide these (C{ITCPTransport} plus
    C{IConsumer} and C{IPushProducer}); naming them here lets the type checker check
    the protocols against them.
    """

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeer(self) -> IAddress: ...
    def getHost(self) -> IAddress: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


def describe_address(address: IAddress) -> str:
    """
    A short, familiar rendering of a socket address for logs and messages.

        >>> from twisted.internet.address import IPv6Address
        >>> describe_address(IPv6Address("TCP", "::1", 16000))
        '[::1]:16000'
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return "unix peer" if type(address).__name__ == "UNIXAddress" else str(address)


def peer_credentials(transport: object) -> tuple[int, int] | None:
    """
    The user id and process id of the peer of a unix-socket transport (SO_PEERCRED,
    Linux), or C{None} where there is none (TCP, wrappers, other systems).
    """
    sock = getattr(transport, "socket", None)
    option = getattr(socket, "SO_PEERCRED", None)
    if not isinstance(sock, socket.socket) or sock.family != socket.AF_UNIX or option is None:
        return None
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    except OSError:
        return None
    return uid, pid


def peer_key(transport: StreamTransport, credentials: tuple[int, int] | None) -> str:
    """
    Who a connection is from, for per-peer limits: the IP address, or for a unix
    socket the peer's user id from its L{peer_credentials} (C{"uid 1000"}; C{"unix"}
    where it cannot be known).
    """
    host = getattr(transport.getPeer(), "host", None)
    if host is not None:
        return str(host)
    return f"uid {credentials[0]}" if credentials is not None else "unix"


@implementer(IHalfCloseableProtocol, IHandshakeListener, IPushProducer)
class EchoServerProtocol(Protocol):
    """
    Write back exactly what is received; on the peer's half-close, finish and close.

    Limits and timeouts come from the factory's L{ServerPolicy}: a connection over a
    limit is aborted at once; one silent for C{idle_timeout} seconds (found by its
    factory's L{IdleSweep}), or a TLS one whose handshake has not completed within
    C{handshake_timeout}, is closed, and aborted if the close has not completed
    C{close_grace} seconds later (a peer that never reads).

    @ivar bytes_echoed: how many bytes this connection has echoed.
    """

    factory: EchoServerFactory
    transport: StreamTransport  # type: ignore[assignment]
    bytes_echoed = 0
    peer_key = ""
    _writer: Writer  # set as the connection opens (L{echokit.transports.fastpath.writer_for})
    admitted = False
    peer_finished = False
    handshake_done = False
    closed_by: str | None = None
    reading_paused = False
    #: When the peer was last heard from, while the idle timeout watches the connection
    #: (L{IdleSweep}); C{None} before (a TLS handshake) and once it is closing.
    _last_heard: float | None = None
    #: The handshake timeout, then the close grace: one connection's own timer.
    _timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        factory = self.factory
        self._writer = writer_for(self.transport)
        self.peer = describe_address(self.transport.getPeer())
        credentials = peer_credentials(self.transport)
        self.peer_key = peer_key(self.transport, credentials)
        if credentials is not None:
            self.peer = f"{self.peer} (uid {credentials[0]}, pid {credentials[1]})"
        victim = factory.limiter.shed_for(self.peer_key)
        if isinstance(victim, EchoServerProtocol):
            victim.shed_for(self)
        refused = factory.limiter.admit(self.peer_key, self)
        if refused is not None:
            factory.connection_refused(self, refused)
            self.transport.abortConnection()
            return
        self.admitted = True
        # When the transport's write buffer is over its read size it asks this protocol
        # to pause (pauseProducing), and says when it has sent everything (resumeProducing).
        self.transport.registerProducer(self, True)
        send_without_delay(self.transport)
        read_without_ancillary_data(self.transport)
        read_in_large_chunks(self.transport)
        factory.connection_opened(self, log=not factory.is_tls)
        policy = factory.policy
        if factory.is_tls and policy.handshake_timeout:
            self._timer = factory.clock.callLater(policy.handshake_timeout, self._handshake_late)
        elif policy.idle_timeout:
            factory.idle_sweep.watch(self)

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        self._cancel_timer()
        self.factory.handshake_completed(self)
        if self.factory.policy.idle_timeout:
            self.factory.idle_sweep.watch(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.bytes_echoed and not self.factory.is_tls and looks_like_tls(data):
            self.factory.tls_on_plaintext(self)
        self._writer.write(data)
        self.bytes_echoed += len(data)
        if self._last_heard is not None:
            self._last_heard = self.factory.clock.seconds()
        if self.factory.verbose:
            _log.debug(
                "{listener}: echoed {size} bytes to {peer}",
                listener=self.factory.listener,
                transport=self.factory.transport_name,
                size=len(data),
                peer=self.peer,
            )

    def readConnectionLost(self) -> None:
        """The peer sent all it will send: close once the echo is flushed."""
        self.peer_finished = True
        self.close_gracefully()

    def writeConnectionLost(self) -> None:
        """The peer will read no more: nothing left to do."""
        self.close_gracefully()

    def close_gracefully(self, why: str | None = None) -> None:
        """
        Close once everything echoed is flushed; abort if that takes over C{close_grace}.

        @param why: recorded as the reason the server closed (C{"idle timeout"}, ...).
        """
        if why is not None and self.closed_by is None:
            self.closed_by = why
        self._last_heard = None
        self._cancel_timer()
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        grace = self.factory.policy.close_grace
        if grace:
            self._timer = self.factory.clock.callLater(grace, self._abort, "close stalled")

    def shed_for(self, newcomer: EchoServerProtocol) -> None:
        """
        Every connection slot is taken and this one's address holds the most: abort
        this connection so that C{newcomer}, from an address holding fewer, is served.
        """
        self.closed_by = "shed to make room for another address"
        self._last_heard = None
        self.factory.connection_shed(self, newcomer)
        self.transport.abortConnection()

    def idle_timed_out(self) -> None:
        """The peer has been silent for the idle timeout: close (L{IdleSweep} calls this)."""
        self.factory.timed_out(self, "idle timeout")
        self.close_gracefully("idle timeout")

    def _handshake_late(self) -> None:
        self._timer = None
        # Counted here; logged once, as a failed handshake, when the connection closes.
        self.factory.stats.timeouts += 1
        self._abort("TLS handshake timeout")

    def _abort(self, why: str) -> None:
        self._timer = None
        self._last_heard = None
        if self.closed_by is None or why == "close stalled":
            self.closed_by = why
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- IPushProducer: the transport's say on reading from this peer -----------------

    def pauseProducing(self) -> None:
        """
        The transport holds more unsent echo than it reads at once: stop reading from
        this peer if the connection holds more than its echo buffer, or all together
        more than the budget; else keep reading (the peer may read only once it has sent
        everything).
        """
        held = queued_bytes(self.transport)
        if held is None or not self.factory.budget.hold(self, held):
            self._pause_reading()

    def resumeProducing(self) -> None:
        """Everything echoed has been sent: read again, and wake those the budget stopped."""
        self._release_echo()
        self._resume_reading()

    def stopProducing(self) -> None:
        """The connection is closing: nothing to do (its loss is handled in connectionLost)."""

    def _pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()

    def _resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resumeProducing()

    def _release_echo(self) -> None:
        for woken in self.factory.budget.release(self):
            assert isinstance(woken, EchoServerProtocol)
            woken._resume_reading()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self._last_heard = None
        if self.admitted:
            self._release_echo()
            self.factory.connection_closed(self, reason)


class IdleSweep:
    """
    The idle timeout of every connection of one listener, on one timer.

    Each watched connection notes when it last heard from its peer (a float); instead
    of a Twisted C{DelayedCall} per connection (with its bound method, ~0.45 KiB of each
    idle connection's memory), the listener keeps one, which runs at the earliest
    deadline, closes every connection silent for C{idle_timeout} seconds, and is set
    again for the next earliest deadline, but no sooner than C{resolution} seconds
    later, so that deadlines close together are served by one sweep. The price: a
    silent connection is closed between C{idle_timeout} and C{idle_timeout +
    resolution} seconds after it was last heard from, and each sweep reads every open
    connection's time (about a millisecond for 10,000), at most once per C{resolution}.

        >>> from twisted.internet.task import Clock
        >>> IdleSweep(Clock(), 300.0, set()).resolution
        1.0
        >>> IdleSweep(Clock(), 0.5, set()).resolution
        0.05

    @ivar resolution: C{min(idle_timeout / 10, 1)} seconds.
    """

    def __init__(
        self, clock: IReactorTime, idle_timeout: float, connections: set[EchoServerProtocol]
    ) -> None:
        """
        @param connections: the listener's open connections (the factory's set, which
            the sweep reads); those whose C{_last_heard} is not C{None} are watched.
        """
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.resolution = min(idle_timeout / 10, 1.0)
        self.connections = connections
        self._call: IDelayedCall | None = None

    def watch(self, protocol: EchoServerProtocol) -> None:
        """Start the idle timeout of C{protocol} (an open connection) from now."""
        protocol._last_heard = self.clock.seconds()
        if self._call is None:
            # Every other watched connection's deadline is before this one's, and a
            # sweep scheduled for them comes at the latest one resolution after theirs.
            self._call = self.clock.callLater(self.idle_timeout, self._sweep)

    def stop(self) -> None:
        """No connection is left: cancel the next sweep (a later watch sets it again)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _sweep(self) -> None:
        self._call = None
        now = self.clock.seconds()
        timeout = self.idle_timeout
        silent = []
        oldest: float | None = None
        for protocol in self.connections:
            heard = protocol._last_heard
            if heard is None:
                continue
            if now - heard >= timeout:
                silent.append(protocol)
            elif oldest is None or heard < oldest:
                oldest = heard
        for protocol in silent:
            # As with a timer each: a close that raises is logged and affects only its own
            # connection (no longer watched), not the others or the next sweep.
            protocol._last_heard = None
            try:
                protocol.idle_timed_out()
            except Exception:
                _log.failure("closing an idle connection from {peer}", peer=protocol.peer)
        if oldest is not None:
            delay = max(oldest + timeout - now, self.resolution)
            self._call = self.clock.callLater(delay, self._sweep)


class EchoServerFactory(Factory):
    """
    Build L{EchoServerProtocol}s for one listener, and account for their connections.

    @ivar listener: the endpoint string this factory serves, named in every log line.
    @ivar transport_name: the transport's kind (C{tcp}, C{unix}, C{ssl}, ...).
    @ivar is_tls: whether connections speak TLS (by default: C{ssl} and C{tls}).
    @ivar clock: the reactor's time, for timeouts.
    @ivar policy: limits and timeouts.
    @ivar limiter: the connection counts, shared by every listener of one server.
    @ivar budget: the unsent echo connections hold, shared likewise.
    @ivar idle_sweep: closes this listener's connections silent for C{idle_timeout}.
    @ivar verbose: log every message, not only connections.
    @ivar stats: connections, bytes and errors so far.
    """

    protocol = EchoServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        listener: str,
        transport_name: str,
        clock: IReactorTime,
        policy: ServerPolicy | None = None,
        limiter: ConnectionLimiter | None = None,
        verbose: bool = False,
        is_tls: bool | None = None,
        budget: EchoBudget | None = None,
    ) -> None:
        self.listener = listener
        self.transport_name = transport_name
        self.is_tls = transport_name in ("ssl", "tls") if is_tls is None else is_tls
        self.clock = clock
        self.policy = policy or ServerPolicy()
        self.limiter = limiter or ConnectionLimiter(
            self.policy.max_connections, self.policy.max_per_peer
        )
        self.budget = budget or EchoBudget(self.policy.echo_buffer, self.policy.max_buffered)
        self.verbose = verbose
        self.open_protocols: set[EchoServerProtocol] = set()
        self.idle_sweep = IdleSweep(clock, self.policy.idle_timeout, self.open_protocols)
        self.stats = ListenerStats()
        self._refusals = EveryInterval(10.0)
        self._sheddings = EveryInterval(10.0)
        self._trims = EveryInterval(1.0)
        self._tls_on_plaintext = EveryInterval(10.0)
        self._failed_handshakes = EveryInterval(10.0)

    @property
    def open_connections(self) -> int:
        return len(self.open_protocols)

    def connection_opened(self, protocol: EchoServerProtocol, log: bool = True) -> None:
        """
        Count a new connection in; log it now unless it is TLS (logged once its
        handshake completes, so a failed handshake makes one log line, not two).
        """
        self.stats.connections += 1
        self.open_protocols.add(protocol)
        if log:
            _log.info(
                "{transport} connection from {peer} opened on {listener}",
                transport=self.transport_name,
                peer=protocol.peer,
                listener=self.listener,
            )

    def handshake_completed(self, protocol: EchoServerProtocol) -> None:
        negotiated = getattr(
            protocol.transport, "negotiated", None
        )  # echokit.transports.tlslayer's
        version, cipher = negotiated() if negotiated is not None else ("TLS", "?")
        _log.info(
            "{transport} connection from {peer} opened on {listener} ({version}, {cipher})",
            transport=self.transport_name,
            peer=protocol.peer,
            listener=self.listener,
            version=version,
            cipher=cipher,
        )

    def _warn(self, gate: EveryInterval, more_of: str, text: str, **fields: object) -> None:
        """
        Log the warning C{text} unless C{gate} says one was logged this interval; the
        next one says how many more there were (C{"N more MORE_OF since the last
        message"}). A flood of one kind of event makes one line per interval.
        """
        suppressed = gate.ready(self.clock.seconds())
        if suppressed is None:
            return
        more = f" ({suppressed} more {more_of} since the last message)" if suppressed else ""
        _log.warn(
            text + "{more}",
            listener=self.listener,
            transport=self.transport_name,
            more=more,
            **fields,
        )

    def tls_on_plaintext(self, protocol: EchoServerProtocol) -> None:
        """A client began a TLS handshake on this plaintext listener: log once per interval."""
        self._warn(
            self._tls_on_plaintext,
            "such clients",
            "{listener}: {peer} speaks TLS to this plaintext listener; its handshake is "
            "echoed back and will fail (use an ssl: listener for TLS)",
            peer=protocol.peer,
        )

    def connection_refused(self, protocol: EchoServerProtocol, limit: str) -> None:
        """A connection over a limit was refused: count it, and log once per interval."""
        self.stats.refused += 1
        by_user = limit == "per-peer" and protocol.peer_key.startswith(("uid ", "unix"))
        self._warn(
            self._refusals,
            "refused",
            "{listener}: refused a connection from {peer}: over the {limit} connection "
            "limit{counted}",
            peer=protocol.peer,
            limit=limit,
            counted=f" (unix peers are counted by user id: {protocol.peer_key})" if by_user else "",
        )

    def connection_shed(self, protocol: EchoServerProtocol, newcomer: EchoServerProtocol) -> None:
        """
        A connection is aborted to make room for another address's: count it, and log
        once per interval.
        """
        self.stats.shed += 1
        self._warn(
            self._sheddings,
            "closed so",
            "{listener}: every connection slot is taken: closed the newest connection of "
            "{key}, which holds the most, to serve {newcomer}",
            peer=protocol.peer,
            key=protocol.peer_key,
            newcomer=newcomer.peer,
        )

    def timed_out(self, protocol: EchoServerProtocol, why: str) -> None:
        self.stats.timeouts += 1
        _log.info(
            "{transport} connection from {peer} on {listener}: {why}, closing",
            transport=self.transport_name,
            peer=protocol.peer,
            listener=self.listener,
            why=why,
        )

    def connection_closed(self, protocol: EchoServerProtocol, reason: Failure) -> None:
        self.open_protocols.discard(protocol)
        if not self.open_protocols:
            self.idle_sweep.stop()
        self.limiter.release(protocol.peer_key, protocol)
        if not self.limiter.open and self._trims.ready(self.clock.seconds()) is not None:
            # The last connection is gone: hand what the allocator kept back to the system.
            give_back_freed_memory()
        self.stats.bytes += protocol.bytes_echoed
        if self.is_tls and not protocol.handshake_done:
            self.stats.errors += 1
            self._warn(
                self._failed_handshakes,
                "failed",
                "{listener}: TLS handshake with {peer} failed: {why}",
                peer=protocol.peer,
                why=protocol.closed_by or tls_failure_text(reason),
            )
            return
        # A peer that half-closed, then closed before our close completed, is done too.
        clean = reason.check(error.ConnectionDone) is not None or protocol.peer_finished
        if not clean:
            self.stats.errors += 1
        _log.info(
            "{transport} connection from {peer} closed on {listener} after echoing "
            "{size} bytes ({why})",
            transport=self.transport_name,
            peer=protocol.peer,
            listener=self.listener,
            size=protocol.bytes_echoed,
            why=protocol.closed_by or reason.getErrorMessage(),
        )


@dataclass
class ListenerStats:
    """What one listener did: for the summary printed at shutdown."""

    connections: int = 0
    bytes: int = 0
    refused: int = 0
    shed: int = 0
    timeouts: int = 0
    errors: int = 0


@implementer(IHandshakeListener)
class EchoClientProtocol(Protocol):
    """
    Send bytes, check that the very same bytes come back, and say when they all have.

    Use L{send} to write, L{wait_echoed} to wait for everything sent so far, and
    L{finish} once there is nothing more to send: it half-closes where the transport
    can (tcp, unix) and fires L{done} once every byte has come back. Over TLS, which
    has no half-close, it simply waits for the last byte and then closes.

    After a half-close, with a C{clock} and a C{linger} of some seconds, it waits up to
    C{linger} seconds for the server to close too, so that bytes the server sends after
    the last echo (bytes nobody sent) are caught as a mismatch rather than missed.

    @ivar verifier: the sans-IO check of what came back.
    @ivar done: fires with this protocol when everything came back after L{finish}, or
        fails with an L{EchokitError} (the echo differed, or the connection ended early).
    @ivar closed: fires when the connection has closed, however it ended.
    @ivar handshake: fires when the TLS handshake completes (never for plain streams).
    @ivar input_unfinished: set by a caller whose input has not all been sent yet, so
        that a close by the server says that some input was left unsent.
    """

    transport: StreamTransport  # type: ignore[assignment]

    def __init__(
        self,
        on_echo: Callable[[bytes], Any] | None = None,
        clock: IReactorTime | None = None,
        linger: float = 0.0,
    ) -> None:
        self.verifier = EchoVerifier()
        self.on_echo = on_echo
        self.clock = clock
        self.linger = linger
        self.done: defer.Deferred[EchoClientProtocol] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.handshake: defer.Deferred[None] = defer.Deferred()
        self.input_unfinished = False
        self._finishing = False
        self._half_closed = False
        self._linger_timer: IDelayedCall | None = None
        self._closed = False
        self._waiters: list[tuple[int, defer.Deferred[None]]] = []
        self.lost_reason: Failure | None = None

    @property
    def is_tls(self) -> bool:
        return ISSLTransport.providedBy(self.transport)

    def connectionMade(self) -> None:
        send_without_delay(self.transport)

    def handshakeCompleted(self) -> None:
        self.handshake.callback(None)

    def send(self, data: bytes) -> None:
        """Write C{data} and remember it until its echo comes back."""
        self.verifier.sent(data)
        self.transport.write(data)

    def wait_echoed(self) -> defer.Deferred[None]:
        """A Deferred that fires when every byte sent so far has come back."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self.verifier.complete:
            waiter.callback(None)
        elif self._closed:
            waiter.errback(self._early_end())
        else:
            self._waiters.append((self.verifier.bytes_sent, waiter))
        return waiter

    def finish(self) -> None:
        """Nothing more will be sent: half-close if possible, then wait for the rest."""
        if self._finishing or self._closed:
            return
        self._finishing = True
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if not self.is_tls and half_close is not None:
            half_close()
            self._half_closed = True
        self._maybe_done()

    def abort(self, error: EchokitError) -> None:
        """Give up: fail L{done} (and every waiter) with C{error}, and drop the connection."""
        self._fail(error)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self.verifier.received(data)
        except EchoMismatch as mismatch:
            if self.verifier.bytes_received == 0 and looks_like_tls(data) and not self.is_tls:
                self._fail(
                    EchoMismatch(
                        "the server answered with TLS instead of an echo: it is a TLS port, "
                        "connect with ssl: or tls:"
                    )
                )
            else:
                self._fail(mismatch)
            self.transport.abortConnection()
            return
        if self.on_echo is not None:
            self.on_echo(data)
        received = self.verifier.bytes_received
        ready = [w for w in self._waiters if w[0] <= received]
        if ready:
            self._waiters = [w for w in self._waiters if w[0] > received]
            for _, waiter in ready:
                waiter.callback(None)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not (self._finishing and self.verifier.complete) or self.done.called:
            return
        if self._half_closed and self.clock is not None and self.linger > 0:
            # Wait for the server's own close: anything it sends meanwhile is extra.
            if self._linger_timer is None:
                self._linger_timer = self.clock.callLater(self.linger, self._lingered)
            return
        self.done.callback(self)
        self.transport.loseConnection()

    def _lingered(self) -> None:
        """The server kept the connection open after the last echo: that is fine too."""
        self._linger_timer = None
        if not self.done.called:
            self.done.callback(self)
            self.transport.loseConnection()

    def nothing_back_hint(self) -> str:
        """A hint for when nothing at all came back on a plaintext connection."""
        if self.verifier.bytes_received or self.is_tls or getattr(self.transport, "quic", False):
            return ""
        return "; nothing came back: if this is a TLS port, connect with ssl: or tls:"

    def _early_end(self) -> EchokitError:
        v = self.verifier
        why = tls_failure_text(self.lost_reason) if self.lost_reason else "closed"
        why = why.rstrip(".")
        hint = self.nothing_back_hint()
        if "certificate required" in why or "alert unknown ca" in why or "bad certificate" in why:
            hint = "; the server requires a client certificate it trusts: use --client-cert"
        if not v.bytes_sent:
            echoed = "before anything was sent"
        elif v.complete:
            echoed = f"after echoing all {v.bytes_sent} bytes sent"
        else:
            echoed = f"after echoing {v.bytes_received} of {v.bytes_sent} bytes sent"
        unsent = f"; input after byte {v.bytes_sent} was not sent" if self.input_unfinished else ""
        return RuntimeFailure(f"the server closed the connection ({why}) {echoed}{unsent}{hint}")

    def _fail(self, error: EchokitError) -> None:
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(error)
        if not self.done.called:
            self.done.errback(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self.lost_reason = reason
        if self._linger_timer is not None and self._linger_timer.active():
            self._linger_timer.cancel()
        self._linger_timer = None
        if not self.handshake.called:
            self.handshake.errback(reason)
            self.handshake.addErrback(lambda _: None)
        if not self.verifier.complete or not self._finishing:
            self._fail(self._early_end())
        elif not self.done.called:
            self.done.callback(self)
        self.closed.callback(None)
