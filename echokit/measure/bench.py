"""
What C{echokit bench} and C{echokit compare} measure, per endpoint.

For each client endpoint string, in order:

    1. connect time: the median of several connects (TCP, or unix); for TLS the
       handshake is timed separately;
    2. round-trip latency with one message in flight, into a L{LatencyHistogram}:
       p50, p90, p99, p99.9 and max;
    3. throughput with C{connections} clients in flight at once, each sending its next
       message as soon as the last came back: messages/s and MB/s.

With a C{rate} (C{--rate}), steps 2 and 3 are replaced by one fixed-rate (open-loop)
phase, L{echokit.measure.openloop}. A L{CpuMeter} given to L{bench_endpoint} measures the
client's and the server's CPU over the throughput (or fixed-rate) phase.

Every message is numbered and checksummed (L{echokit.measure.integrity}), and every echo is
audited: lost, duplicated, reordered and corrupted messages are counted (over a stream
all must be zero; over UDP loss is real).

Latency is measured by a small blocking client in a worker thread (for messages up to
64 KiB), so that the reactor's per-event overhead does not inflate the numbers; the
connects and the throughput phase use Twisted clients on the reactor. See
benchmarks/README.md, "Honest numbers", for how this client's overhead was measured
against a native one.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import ssl
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import twisted
from twisted.internet import defer, task, threads
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.python.failure import Failure

from echokit.client.connect import (
    ClientOptions,
    close_datagrams,
    connect_failed,
    connect_timed_out,
    handshake_timed_out,
    open_datagram,
    open_stream,
)
from echokit.errors import EchokitError, InputError, RuntimeFailure
from echokit.measure import openloop
from echokit.measure.cpu import CpuMeter, CpuUse
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.integrity import MessageChecker, MessageMaker
from echokit.measure.intervals import Source, counts_since_last

# Re-exported: what bench measures is described in results (importable without Twisted).
from echokit.measure.results import LOSSY_TRANSPORTS as LOSSY_TRANSPORTS
from echokit.measure.results import BenchSettings as BenchSettings
from echokit.measure.results import EndpointResult as EndpointResult
from echokit.measure.results import percentiles_us as _percentiles_us
from echokit.transports.datagram import READ_SIZE, UDPClientEndpoint
from echokit.transports.endpoints import (
    DATAGRAM_KINDS,
    TLS_KINDS,
    carries_datagrams,
    client_endpoint,
    tls_trust,
)
from echokit.transports.fastpath import send_without_delay
from echokit.transports.grammar import EndpointSpec

#: Above this size, latency is measured on the reactor too (a blocking client could
#: deadlock against a server that stops reading while its echo is not read).
BLOCKING_PROBE_MAX = 64 * 1024
#: Transports the blocking latency client speaks; the others' latency is measured on the
#: reactor (QUIC: aioquic on echokit's Twisted client).
BLOCKING_KINDS = frozenset({"tcp", "tcp6", "unix", "ssl", "tls", "udp"})
#: Connects timed for the connect-time median.
CONNECTS = 5

Progress = Callable[[float], None]
#: Told of each live source of latencies as it starts (L{echokit.measure.intervals}).
Watch = Callable[[Source], None]


def environment(reactor: Any) -> dict[str, str]:
    """What shaped the numbers besides the endpoints: reactor, Python, Twisted, machine."""
    return {
        "reactor": f"{type(reactor).__module__}.{type(reactor).__name__}",
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        # The machine's CPUs, not this process's: compare may have pinned it to one.
        "machine": f"{platform.machine()}, {os.cpu_count() or 1} CPUs",
    }


# --- the blocking latency probe ---------------------------------------------------------


def _kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """
    Make C{sock} blocking with its timeouts in the kernel (SO_RCVTIMEO, SO_SNDTIMEO).

    Python's own C{settimeout} polls before every send and receive: one more system
    call per message, which measured as a third of this client's overhead on unix
    sockets. A receive that times out raises C{BlockingIOError} instead.
    """
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class EchoLost(RuntimeFailure):
    """Over a stream, bytes stopped coming back: the server dropped them, or stalled."""


def _echo_lost(missing: int, size: int, message: int, seconds: float) -> EchoLost:
    return EchoLost(
        f"echo lost: {missing} byte(s) of message {message} ({size} bytes) never came back "
        f"within {seconds:g} s (the server dropped them, or stopped echoing; --timeout sets "
        "this bound)"
    )


def _blocking_socket(
    spec: EndpointSpec, options: ClientOptions
) -> tuple[socket.socket, str, str | None, str | None]:
    """
    Connect a blocking socket for C{spec}: (socket, family, TLS version, TLS cipher).
    Connecting, and the TLS handshake, may each take C{options.connect_timeout}; then
    a receive waits C{options.timeout} (a lost datagram, or a stalled stream).
    """
    kind = spec.kind
    limit = options.connect_timeout
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(limit)
        try:
            sock.connect(str(spec.get("path")))
        except TimeoutError:
            sock.close()
            raise connect_timed_out(spec, limit) from None
        _kernel_timeouts(sock, options.timeout)
        return sock, "unix", None, None
    host, port = str(spec.get("host")), int(str(spec.get("port")))
    family = {"tcp": socket.AF_INET, "tcp6": socket.AF_INET6, "udp6": socket.AF_INET6}.get(
        kind, socket.AF_UNSPEC
    )
    socktype = socket.SOCK_DGRAM if kind in DATAGRAM_KINDS else socket.SOCK_STREAM
    infos = socket.getaddrinfo(host, port, family, socktype)
    if kind in DATAGRAM_KINDS:
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
    last: OSError | None = None
    for af, st, proto, _, address in infos:
        sock = socket.socket(af, st, proto)
        sock.settimeout(limit)
        try:
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise connect_timed_out(spec, limit) from None
        except OSError as e:
            sock.close()
            last = e
            continue
        if kind not in TLS_KINDS:
            _kernel_timeouts(sock, options.timeout)
        name = "IPv6" if af == socket.AF_INET6 else "IPv4"
        if st == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kind not in TLS_KINDS:
            return sock, name, None, None
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if options.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            trust = tls_trust(spec, options.certs)
            if trust is not None:
                context = ssl.create_default_context(
                    cafile=str(trust) if trust.is_file() else None,
                    capath=str(trust) if trust.is_dir() else None,
                )
                context.minimum_version = ssl.TLSVersion.TLSv1_2
        if options.client_cert is not None:
            cert, key = options.client_cert
            context.load_cert_chain(str(cert), str(key) if key else None)
        try:
            wrapped = context.wrap_socket(sock, server_hostname=str(spec.get("hostname") or host))
        except TimeoutError:
            sock.close()
            raise handshake_timed_out(spec, limit) from None
        wrapped.settimeout(options.timeout)
        cipher = wrapped.cipher()
        return wrapped, name, wrapped.version(), cipher[0] if cipher else None
    raise last or OSError(f"cannot resolve {host}")


class BlockingProbe:
    """
    One message in flight over a blocking socket, for L{EndpointResult}'s latency.

    Its methods block: call them in a worker thread. L{open} connects (and does a TLS
    handshake); L{run} measures for a while, as often as wanted, over the same
    connection and into the same histogram; L{close} closes it and adds the audit of
    every message sent. C{echokit compare} runs several probes in turn, a short run
    each (L{echokit.measure.interleave}); C{echokit bench} one run per endpoint.

    @ivar lost: set when a stream's echo stopped short (L{run} raised it): the stream
        is out of step, nothing more can be measured over it.
    """

    def __init__(
        self,
        spec: EndpointSpec,
        options: ClientOptions,
        settings: BenchSettings,
        result: EndpointResult,
    ) -> None:
        self.spec, self.options, self.settings, self.result = spec, options, settings, result
        self.maker, self.checker = MessageMaker(settings.size), MessageChecker(settings.size)
        self.sent = 0
        self.lost: EchoLost | None = None
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Connect; fill C{result}'s family (and TLS version and cipher)."""
        sock, family, version, cipher = _blocking_socket(self.spec, self.options)
        self._sock = sock
        self.result.family = family
        if version:
            self.result.tls_version, self.result.tls_cipher = version, cipher

    def run(self, seconds: float, count: int | None, progress: Progress) -> None:
        """
        Measure C{count} round trips (if given), else for C{seconds}.

        @raise EchoLost: when a stream's echo stops short of a whole message for
            C{options.timeout} seconds.
        """
        sock, size, timeout = self._sock, self.settings.size, self.options.timeout
        assert sock is not None and self.lost is None, "run() before open(), or after a loss"
        maker, checker, histogram = self.maker, self.checker, self.result.histogram
        buffer = bytearray(size)
        view = memoryview(buffer)
        datagram = self.spec.kind in DATAGRAM_KINDS
        deadline = time.monotonic() + seconds
        sent, limit = 0, count
        clock = time.perf_counter_ns
        try:
            while (sent < limit) if limit is not None else (time.monotonic() < deadline):
                message = maker.make(self.sent + sent)
                sent += 1
                started = clock()
                sock.sendall(message)
                if datagram:
                    try:
                        got = sock.recv_into(buffer)
                    except (TimeoutError, BlockingIOError):
                        continue  # lost: the checker sees the gap in sequence numbers
                    elapsed = clock() - started
                    checker.feed_datagram(bytes(view[:got]))
                else:
                    got = 0
                    while got < size:
                        try:
                            n = sock.recv_into(view[got:])
                        except (TimeoutError, BlockingIOError):
                            self.lost = _echo_lost(size - got, size, self.sent + sent - 1, timeout)
                            raise self.lost from None
                        if not n:
                            raise ConnectionError("the server closed the connection")
                        got += n
                    elapsed = clock() - started
                    checker.feed_datagram(bytes(buffer))
                histogram.record(elapsed)
                if sent % 256 == 0:
                    progress(
                        sent / limit
                        if limit
                        else 1 - max(0.0, deadline - time.monotonic()) / seconds
                    )
        finally:
            self.sent += sent

    def close(self) -> None:
        """Close the connection; add the audit of every message sent to C{result}."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.checker.close(self.sent)  # a datagram that timed out at the very end is lost too
        self.result.add_audit(self.checker, self.sent)
        self.result.latency_client = "blocking socket, worker thread"


def _blocking_latency(
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    result: EndpointResult,
    progress: Progress,
) -> None:
    """
    One L{BlockingProbe} run of the whole phase; fills C{result}'s latency fields.

    @raise EchoLost: when a stream's echo stops short of a whole message for
        C{options.timeout} seconds (after the counts are added to C{result}).
    """
    probe = BlockingProbe(spec, options, settings, result)
    probe.open()
    try:
        probe.run(settings.duration, settings.count, progress)
    finally:
        probe.close()


# --- reactor clients ------------------------------------------------------------------


class _StreamLoop(Protocol):
    """A closed-loop stream client: send a message, wait for its echo, send the next."""

    def __init__(self, maker: MessageMaker, clock: Any, running: bool = True) -> None:
        """
        @param running: send as soon as connected; C{False}: wait for L{resume}.
        """
        self.maker = maker
        self.checker = MessageChecker(maker.size)
        self.clock = clock
        self.sent = 0
        self.running = running
        self.histogram: LatencyHistogram | None = None
        self._started = 0
        #: Messages still to send before stopping by itself (L{resume}'s count), if any.
        self._remaining: int | None = None
        #: When a byte last came back (or the connection opened): for stall detection.
        self.heard_at = time.monotonic()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        send_without_delay(self.transport)
        self.heard_at = time.monotonic()
        if self.running:
            self._send()

    def resume(self, count: int | None = None) -> None:
        """Send again, one message in flight; stop by itself after C{count} (if given)."""
        self.running, self._remaining = True, count
        self.heard_at = time.monotonic()
        self._send()

    def stalled(self, seconds: float) -> EchoLost | None:
        """Loss, if no byte of the message in flight came back for C{seconds}."""
        if not self.running or time.monotonic() - self.heard_at < seconds:
            return None
        size = self.maker.size
        return _echo_lost(size - self.checker.partial, size, self.sent - 1, seconds)

    def _send(self) -> None:
        if self._remaining is not None:
            if not self._remaining:
                self.running = False
                return
            self._remaining -= 1
        self._started = time.perf_counter_ns()
        self.transport.write(self.maker.make(self.sent))  # type: ignore[union-attr]
        self.sent += 1

    def dataReceived(self, data: bytes) -> None:
        self.heard_at = time.monotonic()
        if self.checker.feed_stream(data):
            if self.histogram is not None:
                self.histogram.record(time.perf_counter_ns() - self._started)
            if self.running:
                self._send()

    def stop(self) -> None:
        self.running = False

    def settled(self) -> bool:
        """Whether every message sent has come back (whole or corrupted)."""
        return self.checker.received + self.checker.corrupted >= self.sent

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class _DatagramLoop(DatagramProtocol):
    """A closed-loop UDP client: one datagram in flight; no echo in time counts as lost."""

    def __init__(self, maker: MessageMaker, timeout: float) -> None:
        self.maker = maker
        self.checker = MessageChecker(maker.size)
        self.timeout = timeout
        self.sent = 0
        self.running = False
        self._sent_at = 0.0
        self._sent_ns = 0
        self.noisy = False
        self.histogram: LatencyHistogram | None = None
        #: Datagrams still to send before stopping by itself (L{start}'s count), if any.
        self._remaining: int | None = None
        self._answered = False

    def start(self, count: int | None = None) -> None:
        """Send, one datagram in flight; stop by itself after C{count} (if given)."""
        self.running, self._remaining = True, count
        self._send()

    def stop(self) -> None:
        self.running = False

    def settled(self) -> bool:
        """Whether the last datagram sent came back or timed out (then it is lost)."""
        return self._answered or time.monotonic() - self._sent_at > self.timeout

    def _send(self) -> None:
        if self._remaining is not None:
            if not self._remaining:
                self.running = False
                return
            self._remaining -= 1
        self._answered = False
        self._sent_at = time.monotonic()
        self._sent_ns = time.perf_counter_ns()
        # An error sending is a datagram lost: the checker sees the gap when the next arrives.
        with contextlib.suppress(OSError):
            self.transport.write(self.maker.make(self.sent))  # type: ignore[union-attr,call-arg]
        self.sent += 1

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        seq = self.checker.feed_datagram(datagram)
        if seq == self.sent - 1:  # the one in flight
            self._answered = True
            if self.histogram is not None:
                self.histogram.record(time.perf_counter_ns() - self._sent_ns)
        if self.running:
            self._send()

    def check_timeout(self) -> None:
        if self.running and time.monotonic() - self._sent_at > self.timeout:
            self._send()

    def connectionRefused(self) -> None:
        if self.running:
            self._send()


async def _sleep(reactor: Any, seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def _timed_phase(
    reactor: Any,
    settings: BenchSettings,
    progress: Progress,
    done: Callable[[], int],
    stalled: Callable[[], EchokitError | None] = lambda: None,
) -> float:
    """
    Wait for the phase to end (duration or count); return the seconds it took.

    @raise EchokitError: what C{stalled} returns, as soon as it returns one.
    """
    started = time.monotonic()
    while True:
        if (stall := stalled()) is not None:
            raise stall
        elapsed = time.monotonic() - started
        if settings.count is not None:
            if done() >= settings.count:
                return elapsed
            progress(min(1.0, done() / settings.count))
        else:
            if elapsed >= settings.duration:
                return elapsed
            progress(elapsed / settings.duration)
        await _sleep(reactor, 0.02)


async def _measured(
    reactor: Any,
    settings: BenchSettings,
    progress: Progress,
    checkers: list[MessageChecker],
    result: EndpointResult,
    meter: CpuMeter | None = None,
    stalled: Callable[[], EchokitError | None] = lambda: None,
) -> tuple[float, int]:
    """Run a measuring phase; return its seconds and the messages echoed intact in it."""
    base = sum(c.received for c in checkers)

    def completed() -> int:
        return sum(c.received for c in checkers) - base

    if meter is not None:
        meter.start()
    elapsed = await _timed_phase(reactor, settings, progress, completed, stalled)
    if meter is not None:
        result.add_cpu(meter.stop(), completed())
    return elapsed, completed()


async def _stream_throughput(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    result: EndpointResult,
    progress: Progress,
    meter: CpuMeter | None = None,
) -> None:
    """Closed-loop streams: C{settings.connections} clients, one message in flight each."""
    endpoint = client_endpoint(reactor, spec, options.certs, options.insecure, options.client_cert)
    maker = MessageMaker(settings.size)
    loops = [_StreamLoop(maker, reactor) for _ in range(settings.connections)]
    for loop in loops:
        await _connect(reactor, endpoint, loop, spec, options.connect_timeout)
    if settings.warmup:
        await _sleep(reactor, settings.warmup)
    checkers = [x.checker for x in loops]

    def stalled() -> EchokitError | None:
        return next(filter(None, (loop.stalled(options.timeout) for loop in loops)), None)

    lost: EchokitError | None = None
    try:
        elapsed, messages = await _measured(
            reactor, settings, progress, checkers, result, meter, stalled
        )
    except EchoLost as e:
        lost = e
    for loop in loops:
        loop.stop()
    # Let the messages still in flight come back (bounded) before closing.
    for _ in range(0 if lost else 200):
        if all(loop.checker.received + loop.checker.corrupted >= loop.sent for loop in loops):
            break
        await _sleep(reactor, 0.01)
    for loop in loops:
        if loop.transport is not None:
            loop.transport.loseConnection()
    await defer.DeferredList([loop.closed for loop in loops])
    for loop in loops:
        loop.checker.close(loop.sent)
        result.add_audit(loop.checker, loop.sent)
    if lost is not None:
        raise lost
    result.messages_per_s = messages / elapsed
    result.mb_per_s = messages * settings.size / elapsed / 1e6


async def _connect(
    reactor: Any, endpoint: Any, protocol: Protocol, spec: EndpointSpec, limit: float
) -> None:
    """Connect C{protocol} through C{endpoint} within C{limit} seconds, or raise why not."""
    connecting = endpoint.connect(_factory_for(protocol))

    def timed_out(_: object, __: float) -> None:
        raise connect_timed_out(spec, limit)

    try:
        await connecting.addTimeout(limit, reactor, onTimeoutCancel=timed_out)
    except Exception:
        raise connect_failed(spec, Failure()) from None


class ReactorProbe:
    """
    One message in flight over one Twisted connection, for L{EndpointResult}'s latency,
    a run at a time: the counterpart of L{BlockingProbe} for the endpoints it cannot
    speak (ws, wss, QUIC streams and datagrams; stream messages over
    L{BLOCKING_PROBE_MAX}), so that C{echokit compare}'s rounds take turns with them
    too (L{echokit.measure.interleave}). Its methods run on the reactor.

    @ivar lost: set when a stream's echo stopped short (L{run} raised it). A datagram
        that gets no echo within C{options.timeout} is counted lost and the next sent.
    """

    def __init__(
        self,
        reactor: Any,
        spec: EndpointSpec,
        options: ClientOptions,
        settings: BenchSettings,
        result: EndpointResult,
    ) -> None:
        self.reactor, self.spec, self.options, self.result = reactor, spec, options, result
        maker = MessageMaker(settings.size)
        self.loop: _StreamLoop | _DatagramLoop
        if carries_datagrams(spec):
            self.loop = _DatagramLoop(maker, options.timeout)
        else:
            self.loop = _StreamLoop(maker, reactor, running=False)
        self.loop.histogram = result.histogram
        self.lost: EchoLost | None = None
        self._connected = False
        self._watchdog = task.LoopingCall(self._resend_lost)
        self._watchdog.clock = reactor

    def _resend_lost(self) -> None:
        if isinstance(self.loop, _DatagramLoop):
            self.loop.check_timeout()

    async def open(self) -> None:
        """Connect (nothing is sent until L{run})."""
        options, loop = self.options, self.loop
        endpoint: Any = client_endpoint(
            self.reactor, self.spec, options.certs, options.insecure, options.client_cert
        )
        if isinstance(loop, _StreamLoop):
            await _connect(self.reactor, endpoint, loop, self.spec, options.connect_timeout)
        else:  # quic:...:datagram=yes (udp has the blocking probe)
            try:
                await endpoint.connect(loop)
            except Exception:
                raise connect_failed(self.spec, Failure()) from None
            self._watchdog.start(0.05, now=False)
        self._connected = True

    async def run(self, seconds: float, count: int | None, progress: Progress) -> None:
        """
        Measure C{count} round trips (if given), else for C{seconds}; return once the
        last message's echo is back (or, for a datagram, counted lost).

        @raise EchoLost: when a stream's echo stops short for C{options.timeout} seconds.
        """
        assert self._connected and self.lost is None, "run() before open(), or after a loss"
        loop, reactor = self.loop, self.reactor
        started = reactor.seconds()
        loop.start(count) if isinstance(loop, _DatagramLoop) else loop.resume(count)
        while loop.running or not loop.settled():
            elapsed = reactor.seconds() - started
            if count is None and elapsed >= seconds:
                loop.stop()  # the message in flight still comes back, or times out
            if isinstance(loop, _StreamLoop):
                self._check_stream(loop)
            progress(min(1.0, elapsed / seconds) if count is None else 0.0)
            await _sleep(reactor, 0.001 if not loop.running else 0.01)

    def _check_stream(self, loop: _StreamLoop) -> None:
        if loop.closed.called:
            raise ConnectionError("the server closed the connection")
        timeout = self.options.timeout
        if time.monotonic() - loop.heard_at >= timeout:
            size = loop.maker.size
            self.lost = _echo_lost(size - loop.checker.partial, size, loop.sent - 1, timeout)
            raise self.lost

    async def close(self) -> None:
        """Close the connection; add the audit of every message sent to C{result}."""
        loop = self.loop
        loop.stop()
        if self._watchdog.running:
            self._watchdog.stop()
        if self._connected:
            self._connected = False
            if isinstance(loop, _StreamLoop):
                if loop.transport is not None:
                    loop.transport.loseConnection()
                await loop.closed
            elif loop.transport is not None:
                await defer.maybeDeferred(loop.transport.stopListening)
        loop.checker.close(loop.sent)
        self.result.add_audit(loop.checker, loop.sent)
        self.result.latency_client = "Twisted client on the reactor"


def _factory_for(protocol: Protocol) -> Any:
    from twisted.internet.protocol import Factory

    class OneShot(Factory):
        noisy = False

        def buildProtocol(self, addr: Any) -> Protocol:
            return protocol

    return OneShot()


async def _datagram_throughput(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    result: EndpointResult,
    progress: Progress,
    meter: CpuMeter | None = None,
) -> None:
    """Closed-loop datagrams: C{settings.connections} clients, one in flight each."""
    endpoint: Any = client_endpoint(reactor, spec, options.certs, options.insecure)
    maker = MessageMaker(settings.size)
    loops = [_DatagramLoop(maker, settings.timeout) for _ in range(settings.connections)]
    ports = []
    if isinstance(endpoint, UDPClientEndpoint):
        address = await endpoint._resolve()
        for loop in loops:
            port = reactor.listenUDP(
                0, loop, interface="::" if ":" in address else "0.0.0.0", maxPacketSize=READ_SIZE
            )
            port.connect(address, endpoint.port)
            ports.append(port)
    else:  # quic:...:datagram=yes: one QUIC connection per client
        for loop in loops:
            try:
                await endpoint.connect(loop)
            except Exception:
                raise connect_failed(spec, Failure()) from None
            ports.append(loop.transport)

    def check_timeouts() -> None:
        for loop in loops:
            loop.check_timeout()

    watchdog = task.LoopingCall(check_timeouts)
    watchdog.clock = reactor
    for loop in loops:
        loop.start()
    watchdog.start(0.05, now=False)
    try:
        if settings.warmup:
            await _sleep(reactor, settings.warmup)
        checkers = [x.checker for x in loops]
        elapsed, messages = await _measured(reactor, settings, progress, checkers, result, meter)
        for loop in loops:
            loop.running = False
        await _sleep(reactor, settings.timeout)  # echoes of the last datagrams still count
    finally:
        watchdog.stop()
        for port in ports:
            await defer.maybeDeferred(port.stopListening)
    for loop in loops:
        loop.checker.close(loop.sent)  # after the timeout: what has not come back is lost
        result.add_audit(loop.checker, loop.sent)
    result.messages_per_s = messages / elapsed
    result.mb_per_s = messages * settings.size / elapsed / 1e6


async def _fixed_rate(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    rate: float,
    result: EndpointResult,
    progress: Progress,
    meter: CpuMeter | None,
    watch: Watch | None = None,
) -> None:
    """The fixed-rate phase (L{openloop.run_fixed_rate}) wired to this endpoint's result."""
    connect_stream = open_udp = None
    if spec.kind == "quic" and carries_datagrams(spec):
        raise InputError(
            f"{spec.text}: --rate does not drive QUIC datagrams yet; measure quic streams "
            "(without datagram=yes) or udp at a fixed rate"
        )
    if spec.kind in DATAGRAM_KINDS:
        endpoint = client_endpoint(reactor, spec, options.certs)
        assert isinstance(endpoint, UDPClientEndpoint)
        address = await endpoint._resolve()

        def open_udp(protocol: DatagramProtocol) -> Any:
            interface = "::" if ":" in address else "0.0.0.0"
            port = reactor.listenUDP(0, protocol, interface=interface, maxPacketSize=READ_SIZE)
            port.connect(address, endpoint.port)
            return port

    else:
        stream = client_endpoint(
            reactor, spec, options.certs, options.insecure, options.client_cert
        )

        async def connect_stream(factory: Any) -> Any:
            try:
                return await stream.connect(factory)
            except Exception:
                raise connect_failed(spec, Failure()) from None

    cpu: list[CpuUse | EchokitError] = []

    def window_ends() -> None:
        assert meter is not None
        try:
            cpu.append(meter.stop())
        except EchokitError as e:  # the server process ended
            cpu.append(e)

    live = openloop.OpenLoopRun(rate)
    if watch is not None:
        watch(counts_since_last(lambda: {v * 1000 + 500: c for v, c in live.corrected.items()}))
    run = await openloop.run_fixed_rate(
        reactor,
        connect_stream,
        open_udp,
        rate,
        settings.connections,
        settings.size,
        settings.warmup,
        settings.duration,
        settings.timeout,
        progress,
        None if meter is None else (meter.track, meter.start, window_ends),
        live,
    )
    result.latency_client = "fixed-rate sender on the reactor"
    result.histogram_raw = openloop.histogram_of(run.raw)
    result.send_lag_us = _percentiles_us(openloop.histogram_of(run.send_lag), ("p50", "p99", "max"))
    result.histogram = openloop.histogram_of(run.corrected)
    result.client_bound = run.client_bound
    for checker in run.checkers:
        result.add_audit(checker, 0)
    result.sent += run.sent
    if run.window_seconds > 0:
        result.messages_per_s = run.received_in_window / run.window_seconds
        result.mb_per_s = result.messages_per_s * settings.size / 1e6
    for use in cpu:
        if isinstance(use, EchokitError):
            raise use
        result.add_cpu(use, run.received_in_window)
    if not carries_datagrams(spec) and run.unanswered:
        result.error = (
            f"{spec.text}: {run.unanswered} messages not echoed {openloop.DRAIN_SECONDS:g} s "
            f"after the last send: the server is slower than {run.label} "
            "or stopped echoing"
        )


async def _connect_times(
    reactor: Any, spec: EndpointSpec, options: ClientOptions, result: EndpointResult
) -> None:
    connects, handshakes = [], []
    for _ in range(CONNECTS):
        connection = await open_stream(reactor, spec, options)
        connects.append(connection.connect_seconds)
        if connection.handshake_seconds is not None:
            handshakes.append(connection.handshake_seconds)
            handle = connection.protocol.transport.getHandle()  # type: ignore[attr-defined]
            result.tls_version = handle.get_protocol_version_name()
            result.tls_cipher = handle.get_cipher_name()
        protocol = connection.protocol
        protocol.linger = 0.0  # only the connect is measured here: close at once
        protocol.finish()
        await protocol.done
        await protocol.closed
    result.connect_ms = statistics.median(connects) * 1000
    if handshakes:
        result.tls_handshake_ms = statistics.median(handshakes) * 1000


def new_result(spec: EndpointSpec, settings: BenchSettings) -> EndpointResult:
    """An empty result for C{spec}, measured with C{settings}."""
    return EndpointResult(
        endpoint=spec.text,
        transport=transport_name(spec),
        size=settings.size,
        connections=settings.connections,
    )


def blocking_probe_fits(spec: EndpointSpec, settings: BenchSettings) -> bool:
    """Whether C{spec}'s latency is measured by a L{BlockingProbe} (else on the reactor)."""
    return settings.size <= BLOCKING_PROBE_MAX and spec.kind in BLOCKING_KINDS


async def _latency(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    result: EndpointResult,
    progress: Progress,
) -> None:
    """
    The latency phase: one message in flight, by a L{BlockingProbe} if it fits, else by
    a L{ReactorProbe} (ws, wss, QUIC, messages over 64 KiB), as compare's rounds do.
    """
    if blocking_probe_fits(spec, settings):
        await threads.deferToThreadPool(
            reactor,
            reactor.getThreadPool(),
            _blocking_latency,
            spec,
            options,
            settings,
            result,
            progress,
        )
    elif spec.kind not in DATAGRAM_KINDS:  # (a udp datagram is never over 64 KiB)
        probe = ReactorProbe(reactor, spec, options, settings, result)
        await probe.open()
        try:
            await probe.run(settings.duration, settings.count, progress)
        finally:
            await probe.close()


def error_text(spec: EndpointSpec, error: EchokitError | OSError) -> str:
    """What a result's C{error} says of C{error}, met measuring C{spec}."""
    if isinstance(error, EchokitError):
        return str(error)
    return f"{spec.text}: {error.strerror or error}"


async def _phases(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    result: EndpointResult,
    progress: Progress,
    rate: float | None,
    meter: CpuMeter | None,
    watch: Watch | None,
    place: Callable[[str], None],
    latency: bool,
) -> None:
    """L{bench_endpoint}'s phases, in order; the latency phase only if C{latency}."""

    def phase(start: float, width: float) -> Progress:
        return lambda fraction: progress(start + width * min(1.0, max(0.0, fraction)))

    datagram = carries_datagrams(spec)
    if not datagram:
        await _connect_times(reactor, spec, options, result)
    else:
        # Resolves and checks the address (and a QUIC server's handshake).
        await close_datagrams(await open_datagram(reactor, spec, options))
    progress(0.1)
    if rate is not None:
        place("load")
        await _fixed_rate(
            reactor, spec, options, settings, rate, result, phase(0.1, 0.9), meter, watch
        )
        return
    if latency:
        place("latency")
        await _latency(reactor, spec, options, settings, result, phase(0.1, 0.45))
    place("load")
    if datagram:
        await _datagram_throughput(
            reactor, spec, options, settings, result, phase(0.55, 0.45), meter
        )
    else:
        await _stream_throughput(reactor, spec, options, settings, result, phase(0.55, 0.45), meter)


def transport_name(spec: EndpointSpec) -> str:
    """
    The transport column of a result: the string's kind, and C{quic-dgram} for QUIC
    DATAGRAM frames (C{quic:...:datagram=yes}), which lose messages as UDP may.
    """
    return "quic-dgram" if spec.kind == "quic" and carries_datagrams(spec) else spec.kind


async def bench_endpoint(
    reactor: Any,
    spec: EndpointSpec,
    options: ClientOptions,
    settings: BenchSettings,
    progress: Progress = lambda fraction: None,
    rate: float | None = None,
    meter: CpuMeter | None = None,
    watch: Watch | None = None,
    place: Callable[[str], None] = lambda phase: None,
    measured: EndpointResult | None = None,
) -> EndpointResult:
    """
    Measure one endpoint: connects, latency, throughput and integrity; at a fixed
    C{rate} (msg/s), connects then one open-loop phase (L{openloop}). C{place} is
    told of each phase as it starts (C{"latency"}, C{"load"}): compare pins CPUs there.

    An endpoint that cannot be reached gives a result with C{error} set rather than an
    exception, so one dead endpoint does not hide the others' numbers. C{watch} is
    given a live view of the latencies as they are counted (L{echokit.measure.intervals}).

    @param measured: this endpoint's result with its latency already measured (by
        L{echokit.measure.interleave}): the rest is measured into it, latency skipped.
    """
    result = measured if measured is not None else new_result(spec, settings)
    if rate is not None:
        result.mode, result.rate = "open-loop", rate
    elif watch is not None:
        watch(result.histogram.since_last())

    try:
        if result.error is None:  # (a latency measured in turn with others may have failed)
            await _phases(
                reactor,
                spec,
                options,
                settings,
                result,
                progress,
                rate,
                meter,
                watch,
                place,
                measured is None,
            )
    except (EchokitError, OSError) as e:
        result.error = error_text(spec, e)
    if result.family == "?" and spec.kind == "unix":
        result.family = "unix"
    elif result.family == "?":
        result.family = "IPv6" if spec.kind == "tcp6" or ":" in str(spec.get("host")) else "IPv4"
    result.fill_latency()
    progress(1.0)
    return result
