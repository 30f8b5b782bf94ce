"""
What C{echokit connect} does: reach an echo server and check what comes back.

Three modes, for streams and UDP alike:

    - pipe (stdin is not a terminal): stream stdin to the server and every echoed byte to
      stdout; at the end of stdin, half-close and exit once everything has come back. Over
      UDP each line of stdin is one datagram.
    - interactive (stdin is a terminal): each line typed is sent, and its echo printed with
      its round-trip time.
    - message (C{--message TEXT [--count N]}): the tutorial's one-shot client.

Every mode fails with an L{EchokitError} when the echo differs, a datagram is lost, or
the connection fails; the CLI turns that into a message and an exit status. Every wait
is bounded: connecting and the TLS handshake by C{connect_timeout} (10 s unless
C{--timeout} is given), each echo by C{timeout}, and pipe mode's wait for an echo that
has stopped coming by C{idle_timeout} (60 s; C{--idle-timeout}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure
from zope.interface import implementer

from echokit.echo import MAX_UDP_PAYLOAD_IPV6
from echokit.errors import ConnectFailed, DatagramsLost, EchokitError, InputError, RuntimeFailure
from echokit.transports.certs import CERT_DIR_ENV, CertStore
from echokit.transports.datagram import DatagramEcho, EchoDatagramClient, UDPClientEndpoint
from echokit.transports.endpoints import (
    DATAGRAM_KINDS,
    TLS_KINDS,
    carries_datagrams,
    client_endpoint,
    tls_trust,
)
from echokit.transports.grammar import EndpointSpec
from echokit.transports.stream import EchoClientProtocol
from echokit.transports.tlsreasons import tls_failure_text

DEFAULT_MESSAGE = "Hello, Server!"
#: Seconds to connect, and then to complete a TLS handshake, unless --timeout is given.
CONNECT_TIMEOUT = 10.0
#: Pipe mode: seconds without any echo, while some is due, before giving up.
IDLE_TIMEOUT = 60.0
#: Identical datagrams in a row after which a lost echo may be the server's repeat guard.
REPEATS_WORTH_A_HINT = 10


@dataclass
class ClientOptions:
    """
    How C{echokit connect} reaches its server.

    @ivar timeout: seconds to wait for each echo in message, interactive and UDP modes.
    @ivar connect_timeout: seconds to connect, and seconds for the TLS handshake.
    @ivar idle_timeout: pipe mode: seconds without an echo while some is due.
    """

    certs: CertStore
    insecure: bool = False
    client_cert: tuple[Path, Path | None] | None = None
    timeout: float = 2.0
    connect_timeout: float = CONNECT_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    #: Over WebSocket, send text messages (interactive lines) instead of binary ones.
    text_messages: bool = False


@dataclass
class StreamConnection:
    """An open, verified stream to an echo server and how long it took to open."""

    protocol: EchoClientProtocol
    connect_seconds: float
    handshake_seconds: float | None = None


def _tls_problem(spec: EndpointSpec, options: ClientOptions, reason: Failure) -> ConnectFailed:
    value = reason.value
    host = str(spec.get("hostname") or spec.get("host"))
    if isinstance(value, VerificationError):
        return ConnectFailed(
            f"TLS: the server's certificate is not valid for '{host}' ({spec.text}); connect "
            "with the name it carries (hostname=NAME for ssl:), or --insecure to skip checks"
        )
    text = tls_failure_text(reason)
    if "certificate verify failed" in text:
        trust = tls_trust(spec, options.certs)
        source = str(trust) if trust else "the platform's trust store"
        return ConnectFailed(
            f"TLS: the server's certificate at {spec.text} is not trusted by {source}; if the "
            f"server uses echokit's certificates from another directory, point --cert-dir (or "
            f"${CERT_DIR_ENV}) at it; else give its CA with trustRoots= (tls:) or caCertsDir= "
            "(ssl:), or --insecure to skip checks"
        )
    if isinstance(value, SSL.Error | error.ConnectionDone | error.ConnectionLost):
        return ConnectFailed(
            f"TLS handshake with {spec.text} failed ({text}): is the server speaking TLS?"
        )
    return ConnectFailed(f"TLS handshake with {spec.text} failed: {text}")


def _over_tls(spec: EndpointSpec) -> bool:
    """Whether C{spec} connects over TLS: C{ssl:}, C{tls:} and C{wss:}."""
    return spec.kind in TLS_KINDS or spec.kind == "wss"


def connect_failed(spec: EndpointSpec, reason: Failure) -> EchokitError:
    """Turn a failed connection attempt into a one-line L{ConnectFailed}."""
    value = reason.value
    if isinstance(value, EchokitError):
        return value
    if isinstance(value, error.ConnectionRefusedError):
        return ConnectFailed(
            f"connection refused by {spec.text}: is an echo server listening there?"
        )
    if isinstance(value, error.TimeoutError | defer.CancelledError):
        return ConnectFailed(f"connecting to {spec.text} timed out")
    if isinstance(value, error.DNSLookupError):
        return ConnectFailed(f"cannot resolve the host in {spec.text}: check the name")
    if isinstance(value, FileNotFoundError) or "No such file" in reason.getErrorMessage():
        return ConnectFailed(f"no unix socket at {spec.text}: is the server running?")
    return ConnectFailed(f"cannot connect to {spec.text}: {reason.getErrorMessage()}")


def connect_timed_out(spec: EndpointSpec, seconds: float) -> ConnectFailed:
    """The one-line error for a connect that took longer than C{seconds}."""
    return ConnectFailed(
        f"connecting to {spec.text} timed out after {seconds:g} s: is the server up and "
        "accepting? (--timeout sets this bound)"
    )


def handshake_timed_out(spec: EndpointSpec, seconds: float) -> ConnectFailed:
    """The one-line error for a TLS handshake that took longer than C{seconds}."""
    return ConnectFailed(
        f"TLS handshake with {spec.text} did not complete within {seconds:g} s: is the server "
        "speaking TLS? (--timeout sets this bound)"
    )


def _within(
    reactor: Any, waiting: defer.Deferred[Any], seconds: float, error: EchokitError
) -> defer.Deferred[Any]:
    """C{waiting}, cancelled and failed with C{error} if it takes over C{seconds}."""

    def timed_out(_: object, __: float) -> None:
        raise error

    return waiting.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)


async def open_stream(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    on_echo: Callable[[bytes], Any] | None = None,
) -> StreamConnection:
    """
    Connect an L{EchoClientProtocol} to C{spec}; over TLS, wait for a verified handshake.
    The connect, and the handshake, may each take C{options.connect_timeout} seconds.

    @raise ConnectFailed: refused, timed out, unresolvable, or TLS rejected.
    """
    endpoint = client_endpoint(reactor, spec, options.certs, options.insecure, options.client_cert)
    if options.text_messages and hasattr(endpoint, "text"):
        endpoint.text = True  # a WebSocketClientEndpoint's: lines go as text messages
    protocol = EchoClientProtocol(on_echo, reactor, linger=options.timeout)
    limit = options.connect_timeout
    started = reactor.seconds()
    try:
        await _within(
            reactor, connectProtocol(endpoint, protocol), limit, connect_timed_out(spec, limit)
        )
    except Exception:
        failure = Failure()
        if _over_tls(spec) and isinstance(failure.value, SSL.Error | VerificationError):
            raise _tls_problem(spec, options, failure) from None
        raise connect_failed(spec, failure) from None
    connected = reactor.seconds()
    if spec.kind not in TLS_KINDS:
        return StreamConnection(protocol, connected - started)
    try:
        await _within(reactor, protocol.handshake, limit, handshake_timed_out(spec, limit))
    except EchokitError:
        await _abandon(protocol)
        raise
    except Exception:
        problem = _tls_problem(spec, options, Failure())
        await _abandon(protocol)
        raise problem from None
    return StreamConnection(protocol, connected - started, reactor.seconds() - connected)


async def _abandon(protocol: EchoClientProtocol) -> None:
    """Drop a connection that failed before use, and wait until it is gone."""
    protocol.done.addErrback(lambda _: None)  # its failure was reported already
    protocol.transport.abortConnection()
    await protocol.closed


async def open_datagram(
    reactor: Any, spec: EndpointSpec, options: ClientOptions
) -> EchoDatagramClient:
    """
    Open a connected UDP socket to C{spec} with an L{EchoDatagramClient} on it (for
    C{quic:...:datagram=yes}, a QUIC connection whose datagrams are DATAGRAM frames).
    """
    endpoint: Any = client_endpoint(reactor, spec, options.certs, options.insecure)
    assert isinstance(endpoint, UDPClientEndpoint) or spec.kind == "quic"
    protocol = EchoDatagramClient(reactor, options.timeout, MAX_UDP_PAYLOAD_IPV6)
    limit = options.connect_timeout
    try:
        connected: EchoDatagramClient = await _within(
            reactor, endpoint.connect(protocol), limit, connect_timed_out(spec, limit)
        )
        return connected
    except Exception:
        raise connect_failed(spec, Failure()) from None


async def close_datagrams(client: EchoDatagramClient) -> None:
    """Close a datagram client's socket (a QUIC one tells its server it is done)."""
    if not client.stopped and client.transport is not None:
        await defer.maybeDeferred(client.transport.stopListening)


def repeat_guard_hint(spec: EndpointSpec, client: EchoDatagramClient) -> str:
    """
    After many identical datagrams in a row over UDP, a lost echo may be echokit's
    server refusing to answer a source that repeats one datagram (its repeat guard):
    say so, or say nothing.
    """
    if spec.kind not in DATAGRAM_KINDS or client.repeats < REPEATS_WORTH_A_HINT:
        return ""
    return (
        f" (after {client.repeats} identical datagrams in a row: echokit's server stops "
        "answering a source that keeps repeating one datagram, its repeat guard against "
        "reflection loops, and its log says so; vary the message, or raise the server's "
        "--udp-repeat-burst)"
    )


def datagram_lost(spec: EndpointSpec, client: EchoDatagramClient, timeout: float) -> str:
    """What to say about a datagram with no echo within C{timeout}."""
    return f"no echo for the datagram within {timeout:g} s{repeat_guard_hint(spec, client)}"


def _echoed_within(
    reactor: IReactorTime, protocol: EchoClientProtocol, seconds: float, what: str
) -> defer.Deferred[Any]:
    """Wait for everything sent so far to come back, for up to C{seconds}."""

    def timed_out(_: Any, timeout: float) -> Any:
        raise RuntimeFailure(
            f"no echo for {what} within {timeout:g} s{protocol.nothing_back_hint()}"
        )

    return protocol.wait_echoed().addTimeout(seconds, reactor, onTimeoutCancel=timed_out)


def _rtt_line(echo: bytes, rtt: float) -> bytes:
    return echo.rstrip(b"\r\n") + f"  ({rtt * 1000:.3f} ms)\n".encode()


# --- message mode -------------------------------------------------------------------


async def send_messages(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    message: bytes,
    count: int,
    out: BinaryIO,
) -> None:
    """Send C{message} C{count} times, one at a time, printing each echo and its RTT."""
    if carries_datagrams(spec):
        client = await open_datagram(reactor, spec, options)
        try:
            for _ in range(count):
                result: DatagramEcho = await client.request(message)
                if result.echo is None:
                    raise DatagramsLost(datagram_lost(spec, client, options.timeout))
                assert result.rtt is not None
                out.write(_rtt_line(result.echo, result.rtt))
                out.flush()
        finally:
            await close_datagrams(client)
        return
    remaining = count

    async def next_message() -> bytes | None:
        nonlocal remaining
        remaining -= 1
        return message if remaining >= 0 else None

    def show(line: bytes) -> None:
        out.write(line)
        out.flush()

    await _round_trips(reactor, spec, options, next_message, show, "the message")


async def _round_trips(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    next_message: Callable[[], Awaitable[bytes | None]],
    show: Callable[[bytes], object],
    what: str,
    on_failure: Callable[[Failure], object] | None = None,
) -> None:
    """
    Over a stream: send each message C{next_message} gives (until C{None}), one at a
    time, and C{show} its echo with the round-trip time; then half-close and wait.

    @param on_failure: called at once if the connection fails (the server closes it,
        say) while C{next_message} is still waiting.
    """
    echoed: list[bytes] = []
    connection = await open_stream(reactor, spec, options, echoed.append)
    protocol = connection.protocol
    if on_failure is not None:
        report = on_failure

        def failed(failure: Failure) -> Failure:
            report(failure)
            return failure

        protocol.done.addErrback(failed)
    try:
        while (message := await next_message()) is not None:
            started = reactor.seconds()
            protocol.send(message)
            await _echoed_within(reactor, protocol, options.timeout, what)
            show(_rtt_line(b"".join(echoed), reactor.seconds() - started))
            echoed.clear()
        protocol.finish()
        await protocol.done
    finally:
        protocol.done.addErrback(lambda _: None)  # its failure, if any, was raised already
        protocol.transport.loseConnection()
        await protocol.closed


# --- pipe mode ------------------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class _StdioBridge(Protocol):
    """
    The stdin/stdout side of pipe mode: stdin's bytes go to C{send}; its end to C{end}.

    Providing L{IHalfCloseableProtocol} keeps stdout open after stdin ends.
    """

    def __init__(self, send: Callable[[bytes], Any], end: Callable[[], Any]) -> None:
        self.send = send
        self.end = end
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.stdout_lost = False

    def dataReceived(self, data: bytes) -> None:
        self.send(data)

    def readConnectionLost(self) -> None:
        self.end()

    def writeConnectionLost(self) -> None:
        self.stdout_lost = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)


async def _close_stdio(stdio: StandardIO, bridge: _StdioBridge) -> None:
    stdio.loseConnection()
    await bridge.closed


class _IdleWatch:
    """
    Pipe mode's bound on silence: fail the connection when some echo is due and none
    has come for C{seconds} (a server that accepts and never reads, or stops echoing).
    """

    def __init__(self, reactor: Any, protocol: EchoClientProtocol, seconds: float) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.seconds = seconds
        self.heard = reactor.seconds()
        self.timer = reactor.callLater(seconds, self.check)

    def sent(self) -> None:
        """Bytes were just sent: if none were due before, the clock starts now."""
        if self.protocol.verifier.complete:
            self.heard = self.reactor.seconds()

    def echoed(self) -> None:
        self.heard = self.reactor.seconds()

    def check(self) -> None:
        verifier = self.protocol.verifier
        silent = self.reactor.seconds() - self.heard
        if verifier.complete or silent < self.seconds:
            self.timer = self.reactor.callLater(max(self.seconds - silent, 0.05), self.check)
            return
        self.timer = None
        self.protocol.abort(
            RuntimeFailure(
                f"no echo for {self.seconds:g} s: {verifier.pending} of {verifier.bytes_sent} "
                "bytes sent have not come back (the server stopped reading or echoing; "
                f"--idle-timeout sets this bound, default {IDLE_TIMEOUT:g} s)"
            )
        )

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


async def pipe_stream(reactor: Any, spec: EndpointSpec, options: ClientOptions) -> None:
    """
    Stream stdin to the server and the echo to stdout; half-close at stdin's end. Fail
    if the echo stops for C{options.idle_timeout} seconds while some is due.
    """
    stdio: StandardIO | None = None
    watch: _IdleWatch | None = None

    def echo_to_stdout(data: bytes) -> None:
        assert stdio is not None and watch is not None
        watch.echoed()
        stdio.write(data)

    connection = await open_stream(reactor, spec, options, echo_to_stdout)
    protocol = connection.protocol
    protocol.input_unfinished = True
    watch = _IdleWatch(reactor, protocol, options.idle_timeout)

    def send(data: bytes) -> None:
        assert watch is not None
        watch.sent()
        protocol.send(data)

    def stdin_ended() -> None:
        protocol.input_unfinished = False
        protocol.transport.unregisterProducer()
        protocol.finish()

    bridge = _StdioBridge(send, stdin_ended)
    stdio = StandardIO(bridge, reactor=reactor)
    # Backpressure both ways: a full socket pauses stdin; a full stdout pauses the socket.
    protocol.transport.registerProducer(stdio, True)
    stdio.registerProducer(protocol.transport, True)
    try:
        await protocol.done
    finally:
        watch.stop()
        if bridge.stdout_lost:
            protocol.transport.abortConnection()
        await protocol.closed
        stdio.unregisterProducer()
        await _close_stdio(stdio, bridge)


# --- interactive and line-by-line modes ---------------------------------------------


@dataclass
class _Lines:
    """
    Complete lines typed (or piped) so far, and whether the input has ended (Ctrl-D).

    Each byte is looked at once (time linear in the input); with a C{limit}, a line
    longer than C{limit} bytes is refused as soon as it is, without waiting for its end.
    """

    pending: list[bytes] = field(default_factory=list)
    ended: bool = False
    partial: bytearray = field(default_factory=bytearray)
    wake: list[defer.Deferred[None]] = field(default_factory=list)
    #: Paused while many lines wait, so a large stdin is not read into memory at once.
    producer: IPushProducer | None = None
    paused: bool = False
    limit: int | None = None
    #: Why no more lines will come: the next L{next} raises it.
    error: BaseException | None = None

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        buffer = self.partial
        scan = len(buffer)
        buffer.extend(data)
        start = 0
        while (newline := buffer.find(b"\n", scan)) != -1:
            self._complete(bytes(buffer[start : newline + 1]))
            start = scan = newline + 1
        del buffer[:start]
        if self.limit is not None and len(buffer) > self.limit:
            self._refuse(f"a line of more than {len(buffer)} bytes")
        if self.producer is not None and not self.paused and len(self.pending) > 64:
            self.paused = True
            self.producer.pauseProducing()
        self._wake()

    def _complete(self, line: bytes) -> None:
        if self.limit is not None and len(line) > self.limit and self.error is None:
            self._refuse(f"a {len(line)}-byte line")
        self.pending.append(line)

    def _refuse(self, what: str) -> None:
        self.fail(
            InputError(
                f"{what} does not fit in one UDP datagram: the limit is {self.limit} bytes "
                "(each line of stdin is sent as one datagram)"
            )
        )

    def fail(self, error: BaseException | None) -> None:
        """No more lines: the next L{next} raises C{error}."""
        if self.error is None:
            self.error = error or RuntimeFailure("the input was abandoned")
        if self.producer is not None and not self.paused:
            self.paused = True
            self.producer.pauseProducing()
        self._wake()

    def end(self) -> None:
        if self.partial:
            self.pending.append(bytes(self.partial))
            self.partial.clear()
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        # Take the waiters first: a woken reader that finds no complete line yet adds
        # a new waiter, which must wait for more input, not be woken again at once.
        waiters, self.wake = self.wake, []
        for waiter in waiters:
            waiter.callback(None)

    async def next(self) -> bytes | None:
        while not self.pending or self.error is not None:
            if self.error is not None:
                raise self.error
            if self.ended:
                return None
            waiter = defer.Deferred[None]()
            self.wake.append(waiter)
            await waiter
        if self.producer is not None and self.paused and len(self.pending) < 16:
            self.paused = False
            self.producer.resumeProducing()
        return self.pending.pop(0)


async def pipe_datagrams(reactor: Any, spec: EndpointSpec, options: ClientOptions) -> None:
    """Send each line of stdin as one datagram, one at a time; echoes go to stdout."""
    client = await open_datagram(reactor, spec, options)
    lines = _Lines(limit=client.max_payload)
    bridge = _StdioBridge(lines.feed, lines.end)
    stdio = StandardIO(bridge, reactor=reactor)
    lines.producer = stdio
    sent = 0
    try:
        while (line := await lines.next()) is not None:
            sent += 1
            result: DatagramEcho = await client.request(line)
            if result.echo is not None:
                stdio.write(result.echo)
    finally:
        await close_datagrams(client)
        await _close_stdio(stdio, bridge)
    lost = client.ledger.lost
    if lost:
        raise DatagramsLost(
            f"{lost} of {sent} datagram(s) got no echo within {options.timeout:g} s from "
            f"{spec.text}{repeat_guard_hint(spec, client)}"
        )


async def interactive(reactor: Any, spec: EndpointSpec, options: ClientOptions) -> None:
    """Send each typed line and print its echo with the round-trip time."""
    lines = _Lines()
    bridge = _StdioBridge(lines.feed, lines.end)
    stdio = StandardIO(bridge, reactor=reactor)
    stdio.write(f"connected to {spec.text}: type a line to send it, Ctrl-D to quit\n".encode())
    try:
        if carries_datagrams(spec):
            client = await open_datagram(reactor, spec, options)
            try:
                while (line := await lines.next()) is not None:
                    result: DatagramEcho = await client.request(line)
                    if result.echo is None or result.rtt is None:
                        lost = datagram_lost(spec, client, options.timeout)
                        stdio.write(f"({lost})\n".encode())
                    else:
                        stdio.write(_rtt_line(result.echo, result.rtt))
            finally:
                await close_datagrams(client)
            return
        options = replace(options, text_messages=True)  # WebSocket: each line a text message
        # A server that closes while nothing is typed is noticed at once, not at the next line.
        await _round_trips(
            reactor,
            spec,
            options,
            lines.next,
            stdio.write,
            "the line",
            lambda failure: lines.fail(failure.value),
        )
    finally:
        await _close_stdio(stdio, bridge)
