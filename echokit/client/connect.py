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
the connection fails; the CLI turns that into a message and an exit status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from echokit.errors import ConnectFailed, DatagramsLost, EchokitError, RuntimeFailure
from echokit.transports.certs import CertStore
from echokit.transports.datagram import DatagramEcho, EchoDatagramClient, UDPClientEndpoint
from echokit.transports.endpoints import (
    TLS_KINDS,
    carries_datagrams,
    client_endpoint,
    tls_trust,
)
from echokit.transports.grammar import EndpointSpec
from echokit.transports.stream import EchoClientProtocol
from echokit.transports.tls import tls_failure_text

DEFAULT_MESSAGE = "Hello, Server!"


@dataclass
class ClientOptions:
    """
    How C{echokit connect} reaches its server.

    @ivar timeout: seconds to wait for each echo in message, interactive and UDP modes.
    """

    certs: CertStore
    insecure: bool = False
    client_cert: tuple[Path, Path | None] | None = None
    timeout: float = 2.0


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
            f"TLS: the server's certificate at {spec.text} is not trusted by {source}; give its "
            "CA with trustRoots= (tls:) or caCertsDir= (ssl:), or --insecure to skip checks"
        )
    if isinstance(value, SSL.Error | error.ConnectionDone | error.ConnectionLost):
        return ConnectFailed(
            f"TLS handshake with {spec.text} failed ({text}): is the server speaking TLS?"
        )
    return ConnectFailed(f"TLS handshake with {spec.text} failed: {text}")


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


async def open_stream(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    on_echo: Callable[[bytes], Any] | None = None,
) -> StreamConnection:
    """
    Connect an L{EchoClientProtocol} to C{spec}; over TLS, wait for a verified handshake.

    @raise ConnectFailed: refused, timed out, unresolvable, or TLS rejected.
    """
    endpoint = client_endpoint(reactor, spec, options.certs, options.insecure, options.client_cert)
    protocol = EchoClientProtocol(on_echo)
    started = reactor.seconds()
    try:
        await connectProtocol(endpoint, protocol)
    except Exception:
        raise connect_failed(spec, Failure()) from None
    connected = reactor.seconds()
    if spec.kind not in TLS_KINDS:
        return StreamConnection(protocol, connected - started)
    try:
        await protocol.handshake
    except Exception:
        raise _tls_problem(spec, options, Failure()) from None
    return StreamConnection(protocol, connected - started, reactor.seconds() - connected)


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
    try:
        connected: EchoDatagramClient = await endpoint.connect(protocol)
        return connected
    except Exception:
        raise connect_failed(spec, Failure()) from None


async def close_datagrams(client: EchoDatagramClient) -> None:
    """Close a datagram client's socket (a QUIC one tells its server it is done)."""
    if not client.stopped and client.transport is not None:
        await defer.maybeDeferred(client.transport.stopListening)


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
                    raise DatagramsLost(f"no echo for the datagram within {options.timeout:g} s")
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
) -> None:
    """
    Over a stream: send each message C{next_message} gives (until C{None}), one at a
    time, and C{show} its echo with the round-trip time; then half-close and wait.
    """
    echoed: list[bytes] = []
    connection = await open_stream(reactor, spec, options, echoed.append)
    protocol = connection.protocol
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


async def pipe_stream(reactor: Any, spec: EndpointSpec, options: ClientOptions) -> None:
    """Stream stdin to the server and the echo to stdout; half-close at stdin's end."""
    stdio: StandardIO | None = None

    def echo_to_stdout(data: bytes) -> None:
        assert stdio is not None
        stdio.write(data)

    connection = await open_stream(reactor, spec, options, echo_to_stdout)
    protocol = connection.protocol

    def stdin_ended() -> None:
        protocol.transport.unregisterProducer()
        protocol.finish()

    bridge = _StdioBridge(protocol.send, stdin_ended)
    stdio = StandardIO(bridge, reactor=reactor)
    # Backpressure both ways: a full socket pauses stdin; a full stdout pauses the socket.
    protocol.transport.registerProducer(stdio, True)
    stdio.registerProducer(protocol.transport, True)
    try:
        await protocol.done
    finally:
        if bridge.stdout_lost:
            protocol.transport.abortConnection()
        await protocol.closed
        stdio.unregisterProducer()
        await _close_stdio(stdio, bridge)


# --- interactive and line-by-line modes ---------------------------------------------


@dataclass
class _Lines:
    """Complete lines typed so far, and whether the terminal has ended (Ctrl-D)."""

    pending: list[bytes] = field(default_factory=list)
    ended: bool = False
    partial: bytearray = field(default_factory=bytearray)
    wake: list[defer.Deferred[None]] = field(default_factory=list)
    #: Paused while many lines wait, so a large stdin is not read into memory at once.
    producer: IPushProducer | None = None
    paused: bool = False

    def feed(self, data: bytes) -> None:
        self.partial.extend(data)
        *complete, rest = bytes(self.partial).split(b"\n")
        self.pending.extend(line + b"\n" for line in complete)
        self.partial[:] = rest
        if self.producer is not None and not self.paused and len(self.pending) > 64:
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
        while not self.pending:
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
    lines = _Lines()
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
            f"{lost} of {sent} datagram(s) got no echo within {options.timeout:g} s from {spec.text}"
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
                        stdio.write(f"(no echo within {options.timeout:g} s)\n".encode())
                    else:
                        stdio.write(_rtt_line(result.echo, result.rtt))
            finally:
                await close_datagrams(client)
            return
        await _round_trips(reactor, spec, options, lines.next, stdio.write, "the line")
    finally:
        await _close_stdio(stdio, bridge)
