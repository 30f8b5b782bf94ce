"""
Fixed-rate (open-loop) measurement: C{echokit bench --rate R}.

A closed-loop client sends its next message only when the last one came back, so when
the server stalls the client stops sending too, and the stall is recorded once instead
of for every message a real client would have sent meanwhile (coordinated omission).
Here every message has an intended send time fixed in advance, C{1/R} apart over all
connections (message C{k} goes on connection C{k % connections}, with per-connection
sequence number C{k // connections}), and is sent at that time whether or not earlier
echoes have come back. Latency is measured from the intended send time (I{corrected},
the headline) and from the actual send (I{raw}); how late the sender was is the
I{send lag}.

The sender wakes on the reactor's timers and sends every message that is due, one write
per connection (a datagram each over UDP). The reactor's timers have epoll's resolution,
1 ms, which alone would make each send up to 1 ms late (and the corrected latency with
it): so the last stretch before a send (under L{TIMER_RESOLUTION}) is waited in
C{select()} on the reactor's sockets, which has microsecond resolution and returns early
when one is readable, so that echoes (and, in one process, the server's reads) are still
handled as they come. A sender
whose send lag at p99 still exceeds L{CLIENT_BOUND_LAG_US} is behind its schedule, and
its row is marked client-bound (the numbers then describe the client as much as the
server).

The schedule itself is sans-IO: L{echokit.measure.schedule.Schedule}.
"""

from __future__ import annotations

import contextlib
import math
import select
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from echokit.measure.histogram import LatencyHistogram
from echokit.measure.integrity import MessageChecker, MessageMaker
from echokit.measure.schedule import CLIENT_BOUND_LAG_US, Schedule, format_rate
from echokit.transports.fastpath import Writer, send_without_delay, writer_for

#: Seconds to wait after the last send for stream echoes still on their way.
DRAIN_SECONDS = 5.0
#: The reactor's timer resolution (epoll's timeout is in milliseconds, rounded up).
TIMER_RESOLUTION = 0.001
#: Echoes timed between two looks at the clock while a burst of echoes is read, and how
#: long since the last sends (ns) makes such a look send what is due: sends stay within
#: about half a millisecond of their time, in batches large enough to stay cheap.
POKE_EVERY = 32
POKE_AFTER_NS = 500_000


Counts = dict[int, int]


def histogram_of(counts: Counts) -> LatencyHistogram:
    """
    A histogram (nanoseconds) of values counted in whole microseconds.

    While sending, values are only counted in a dict: cheap, and without the pauses of a
    histogram's batched counting, which would make the sender late. Each count of
    C{v} microseconds stands for C{v * 1000 + 500} ns, the middle of its microsecond.
    """
    histogram = LatencyHistogram()
    histogram.record_counts({value * 1000 + 500: count for value, count in counts.items()})
    return histogram


@dataclass
class OpenLoopRun:
    """What one fixed-rate run measured: latencies in microseconds, counted by value."""

    rate: float
    corrected: Counts = field(default_factory=dict)
    raw: Counts = field(default_factory=dict)
    send_lag: Counts = field(default_factory=dict)
    sent: int = 0
    checkers: list[MessageChecker] = field(default_factory=list)
    #: Echoes that arrived inside the measured window, and the window's seconds.
    received_in_window: int = 0
    window_seconds: float = 0.0
    unanswered: int = 0

    @property
    def label(self) -> str:
        return f"{format_rate(self.rate)} msg/s"

    @property
    def client_bound(self) -> bool:
        lag = histogram_of(self.send_lag)
        return lag.count > 0 and lag.percentile(99) > CLIENT_BOUND_LAG_US * 1000


class FixedRateSender:
    """
    Drive a L{Schedule} on a reactor: at each wake-up send every message due, one batch
    per connection, then sleep until the next is due.

    @param send: C{send(connection, first_seq, count, now_ns)} writes those messages.
    @param now_ns: the clock (C{time.perf_counter_ns} for real runs).
    @param measure_from: message number from which send lag is recorded (after warm-up).
    @param wait: C{wait(seconds)} blocks for at most C{seconds} (less than
        L{TIMER_RESOLUTION}), returning early if an echo arrives; without it the sender
        relies on the reactor's timers alone.
    """

    def __init__(
        self,
        reactor: Any,
        schedule: Schedule,
        send: Callable[[int, int, int, int], None],
        lag: Counts,
        now_ns: Callable[[], int],
        measure_from: int = 0,
        wait: Callable[[float], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.schedule = schedule
        self.send = send
        self.lag = lag
        self.now_ns = now_ns
        self.measure_from = measure_from
        self.wait = wait
        self.done: defer.Deferred[None] = defer.Deferred()
        self._last_ns = 0
        self._call: IDelayedCall | None = None

    def start(self) -> defer.Deferred[None]:
        """Start sending; the Deferred fires when the last message is sent."""
        self.tick()
        return self.done

    def stop(self) -> None:
        """Send no more (an error elsewhere ended the run)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        if not self.done.called:
            self.done.callback(None)

    def poke(self) -> None:
        """
        Send what is due if the last sends are L{POKE_AFTER_NS} old. The receivers call
        this every L{POKE_EVERY} echoes, so that a large burst of echoes to time does not
        hold the sends back.
        """
        if self.now_ns() - self._last_ns >= POKE_AFTER_NS:
            self.send_due()

    def send_due(self) -> None:
        """Send what is due now."""
        now = self._last_ns = self.now_ns()
        schedule = self.schedule
        indices = schedule.due(now)
        if indices:
            for connection, seq, count in schedule.batches(indices):
                self.send(connection, seq, count, now)
            lag = self.lag
            intended = schedule.intended_ns
            for index in range(max(indices.start, self.measure_from), indices.stop):
                late = (now - intended(index)) // 1000
                lag[late] = lag.get(late, 0) + 1

    def tick(self) -> None:
        self._call = None
        self.send_due()
        schedule = self.schedule
        if schedule.finished:
            if not self.done.called:
                self.done.callback(None)
            return
        delay = (schedule.next_ns() - self.now_ns()) / 1e9
        if self.wait is None:
            self._call = self.reactor.callLater(max(0, delay), self.tick)
        elif delay >= TIMER_RESOLUTION:
            self._call = self.reactor.callLater(delay - TIMER_RESOLUTION, self.tick)
        else:
            # First let the reactor flush what was just written (a transport's write
            # may only buffer) and read what came back; then wait out the rest.
            self._call = self.reactor.callLater(0, self._wait_then_tick)

    def _wait_then_tick(self) -> None:
        assert self.wait is not None
        delay = (self.schedule.next_ns() - self.now_ns()) / 1e9
        if delay > 0:
            self.wait(delay)  # returns early if an echo came: the reactor reads it next
        self.tick()


class _Receiver:
    """What stream and datagram receivers share: turn each echo into two latencies."""

    def __init__(
        self, connection: int, maker: MessageMaker, run: OpenLoopRun, window: _Window
    ) -> None:
        self.connection = connection
        self.maker = maker
        self.checker = MessageChecker(maker.size)
        run.checkers.append(self.checker)
        self.run = run
        self.window = window
        self.sent_at: list[int] = []
        self.poke: Callable[[], None] = lambda: None

    def write_messages(self, first: int, count: int, now: int) -> bytes:
        make = self.maker.make
        self.sent_at.extend(repeat(now, count))
        self.run.sent += count
        return b"".join([make(seq) for seq in range(first, first + count)])

    def echoed(self, message: bytes | memoryview, now: int) -> None:
        seq = self.checker.feed_datagram(message)
        if seq is None or seq >= len(self.sent_at):
            return
        window = self.window
        index = window.schedule.index(self.connection, seq)
        if index < window.first:
            return
        run = self.run
        corrected = (now - window.schedule.intended_ns(index)) // 1000
        run.corrected[corrected] = run.corrected.get(corrected, 0) + 1
        raw = (now - self.sent_at[seq]) // 1000
        run.raw[raw] = run.raw.get(raw, 0) + 1
        if now <= window.end_ns:
            run.received_in_window += 1

    @property
    def outstanding(self) -> int:
        checker = self.checker
        return len(self.sent_at) - checker.received - checker.corrupted - checker.duplicated


@dataclass
class _Window:
    """The measured window: messages from number C{first} on, echoes until C{end_ns}."""

    schedule: Schedule
    first: int
    end_ns: int


class _StreamReceiver(Protocol, _Receiver):
    """One stream connection of a fixed-rate run."""

    def __init__(self, connection: int, maker: MessageMaker, run: OpenLoopRun, window: _Window):
        _Receiver.__init__(self, connection, maker, run, window)
        self._buffer = bytearray()
        self._writer: Writer | None = None
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.lost_reason: Failure | None = None

    def connectionMade(self) -> None:
        send_without_delay(self.transport)
        # A plain socket's write goes out now, not at the reactor's next turn.
        self._writer = writer_for(self.transport)

    def send(self, first: int, count: int, now: int) -> None:
        if self._writer is not None and self.lost_reason is None:
            self._writer.write(self.write_messages(first, count, now))

    def dataReceived(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buffer = self._buffer
        buffer += data
        size = self.maker.size
        whole = len(buffer) - len(buffer) % size
        every = POKE_EVERY * size
        # One copy of the whole messages, then views of it: no copy per message.
        with memoryview(bytes(buffer[:whole])) as messages:
            for offset in range(0, whole, size):
                self.echoed(messages[offset : offset + size], now)
                if offset and offset % every == 0:
                    self.poke()
        del buffer[:whole]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost_reason = reason
        self.closed.callback(None)


class _DatagramReceiver(DatagramProtocol, _Receiver):
    """One UDP socket of a fixed-rate run; a datagram that fails to send is lost."""

    def send(self, first: int, count: int, now: int) -> None:
        make = self.maker.make
        self.sent_at.extend(repeat(now, count))
        self.run.sent += count
        for seq in range(first, first + count):
            with contextlib.suppress(OSError):
                self.transport.write(make(seq))  # type: ignore[union-attr,call-arg]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.echoed(datagram, time.perf_counter_ns())


class _Given(Factory):
    """A factory handing out one protocol built in advance."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


async def _sleep(reactor: Any, seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


async def run_fixed_rate(
    reactor: Any,
    connect_stream: Callable[[Factory], Awaitable[Any]] | None,
    open_datagram: Callable[[DatagramProtocol], Any] | None,
    rate: float,
    connections: int,
    size: int,
    warmup: float,
    duration: float,
    timeout: float,
    progress: Callable[[float], None] = lambda fraction: None,
    around_window: tuple[Callable[[], None], Callable[[], None], Callable[[], None]] | None = None,
    run: OpenLoopRun | None = None,
) -> OpenLoopRun:
    """
    Send C{rate} messages/s of C{size} bytes over C{connections} for C{warmup} then
    C{duration} seconds, and measure every echo.

    Give C{connect_stream(factory)} (a stream endpoint's C{connect}) or
    C{open_datagram(protocol)} (which starts a connected UDP socket and returns its
    port). C{around_window} is three calls: once connected, before the first send; at
    the start of the measured window; and at its end (the CPU meter). C{run}, if given, is filled as the run goes (live figures).
    """
    run = run if run is not None else OpenLoopRun(rate)
    maker = MessageMaker(size)
    total = math.ceil((warmup + duration) * rate)
    schedule = Schedule(rate, connections, 0, total)
    window = _Window(schedule, schedule.first_at(int(warmup * 1e9)), 0)
    receivers: list[Any] = []
    ports: list[Any] = []
    if connect_stream is not None:
        for connection in range(connections):
            stream = _StreamReceiver(connection, maker, run, window)
            await connect_stream(_Given(stream))
            receivers.append(stream)
    else:
        assert open_datagram is not None
        for connection in range(connections):
            datagram = _DatagramReceiver(connection, maker, run, window)
            ports.append(open_datagram(datagram))
            receivers.append(datagram)

    def send(connection: int, first: int, count: int, now: int) -> None:
        receivers[connection].send(first, count, now)

    def wait(seconds: float) -> None:
        # Every socket the reactor reads (a server's too, when it shares this reactor).
        readers = [reader.fileno() for reader in reactor.getReaders()]
        with contextlib.suppress(OSError, ValueError):
            select.select(readers, [], [], seconds)

    if around_window is not None:
        around_window[0]()
    clock = time.perf_counter_ns
    start = clock()
    schedule.start_ns = start
    window.end_ns = start + int((warmup + duration) * 1e9)
    precise = wait if hasattr(reactor, "getReaders") else None
    sender = FixedRateSender(reactor, schedule, send, run.send_lag, clock, window.first, precise)
    for receiver in receivers:
        receiver.poke = sender.poke

    started_window = False

    def window_opened() -> None:
        nonlocal started_window
        if not started_window and around_window is not None:
            around_window[1]()
        started_window = True

    if warmup <= 0:
        window_opened()
    else:
        reactor.callLater(warmup, window_opened)

    def report_progress() -> None:
        elapsed = (clock() - start) / 1e9
        progress(min(1.0, elapsed / (warmup + duration)))
        if not sender.done.called:
            reactor.callLater(0.05, report_progress)

    report_progress()
    await sender.start()
    window_opened()
    if around_window is not None:
        around_window[2]()
    run.window_seconds = (clock() - start) / 1e9 - warmup
    # Echoes still on their way: UDP's count as lost after the timeout; a stream's are
    # awaited (bounded) so that a slow server shows as latency, not loss.
    limit = timeout if connect_stream is None else max(timeout, DRAIN_SECONDS)
    waited = 0.0
    while waited < limit and any(r.outstanding > 0 for r in receivers):
        await _sleep(reactor, 0.01)
        waited += 0.01
    run.unanswered = sum(max(0, r.outstanding) for r in receivers)
    for receiver in receivers:
        if isinstance(receiver, _StreamReceiver):
            if receiver.lost_reason is None:
                receiver.transport.loseConnection()  # type: ignore[union-attr]
            await receiver.closed
        receiver.checker.close(len(receiver.sent_at))
    for port in ports:
        await defer.maybeDeferred(port.stopListening)
    return run
