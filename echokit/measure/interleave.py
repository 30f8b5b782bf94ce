"""
Latency measured in rounds that take turns between endpoints, for C{echokit compare}.

A round trip on loopback is mostly the kernel waking a thread, and on a VM what that
costs changes by itself from one second to the next: on the 2-CPU VM where echokit is
developed, a native C ping-pong pinned to one CPU measured p50 7 us for a while, then
11 us, then 7 us again, with no other process on that CPU and no change in how fast the
CPU computed. An endpoint measured in one go (2 s) gets whichever state the machine was
in then, and the next endpoint another: run to run, one transport's p50 moved by half
(ssl 25 us, then 38 us), and a transport measured in a slow stretch looked slower than
one measured in a quick stretch.

So C{compare} splits each endpoint's latency phase into rounds and runs them in turn:
tcp, tcp6, unix, ssl, udp, tcp, tcp6, ... Every endpoint keeps its one connection and its
one histogram for the whole phase; a round adds its round trips to it, so each
endpoint's percentiles come from every round trip it measured, counted once (histograms
are merged, percentiles never averaged). Whatever the machine does during the phase, every
endpoint sees about the same share of it.

The endpoints a blocking socket speaks (tcp, tcp6, unix, ssl, udp) are measured by a
L{BlockingProbe} in a worker thread; the others (ws, wss, QUIC streams and datagrams,
and any stream's messages over 64 KiB) by a L{ReactorProbe}, one Twisted connection on
the reactor, and they take turns alike.

The floor (L{echokit.measure.floor}) takes the first turn of every round: the same
blocking client against a plain Python thread echoing over a unix socket pair. Its
percentiles go with every endpoint's (C{latency_floor_us}): what the machine's own round
trip was while they were measured, so that a run can be read against another run.
It is left out with messages over 64 KiB (the blocking client, writing a whole message
before reading, could fill its socket pair both ways and wait out the timeout) and when
no endpoint takes turns beside it.

    >>> shares(10, 4)
    [2, 3, 2, 3]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import threads

from echokit.client.connect import ClientOptions
from echokit.errors import EchokitError
from echokit.measure.bench import (
    BLOCKING_PROBE_MAX,
    BenchSettings,
    BlockingProbe,
    EndpointResult,
    ReactorProbe,
    blocking_probe_fits,
    error_text,
)
from echokit.measure.floor import FLOOR_NAME, FloorProbe
from echokit.measure.results import percentiles_us
from echokit.transports.grammar import EndpointSpec

#: Rounds per endpoint unless told (C{compare --rounds}): 0.2 s each of the default 2 s.
ROUNDS = 10


#: The fewest round trips in a round for its own p50 to be reported (a median of a few
#: dozen round trips says little about the machine's speed then).
ROUND_P50_SAMPLES = 100


def shares(total: int, rounds: int) -> list[int]:
    """C{total} messages split over C{rounds} rounds as evenly as whole numbers allow."""
    return [total * (i + 1) // rounds - total * i // rounds for i in range(rounds)]


def takes_turns(transport: str, size: int) -> bool:
    """
    Whether C{transport} (compare's name, or an endpoint's kind) takes turns in the
    latency rounds with C{size}-byte messages: every one, but udp only while a blocking
    socket can carry the message (L{interleaved_latency} and L{described} both ask here).

        >>> [takes_turns(t, 64) for t in ("tcp", "ws", "quic", "udp", "quic-dgram")]
        [True, True, True, True, True]
        >>> takes_turns("udp", 1 << 20)
        False
    """
    return transport != "udp" or size <= BLOCKING_PROBE_MAX


def described(rounds: int, transports: Sequence[str], size: int) -> str:
    """
    What compare's output says of how it measured the latency of C{transports}
    (compare's names) with C{size}-byte messages.

        >>> print(described(1, ["tcp", "udp", "ws"], 64))
        latency: each transport's in one go (--rounds 1)
        >>> print(described(10, ["tcp", "udp"], 1 << 20).split("), ")[1])
        each transport's round trips in one histogram; udp: in one go
    """
    in_turn = [t for t in transports if takes_turns(t, size)]
    alone = [t for t in transports if t not in in_turn]
    if rounds == 1 or not in_turn:
        return "latency: each transport's in one go" + (" (--rounds 1)" if rounds == 1 else "")
    text = (
        f"latency: {rounds} rounds per transport taking turns ({', '.join(in_turn)}, "
        "then again), each transport's round trips in one histogram"
    )
    return text + (f"; {', '.join(alone)}: in one go" if alone else "")


async def interleaved_latency(
    reactor: Any,
    specs: Sequence[EndpointSpec],
    options: ClientOptions,
    settings: BenchSettings,
    results: Sequence[EndpointResult],
    rounds: int,
    progress: Callable[[float], None] = lambda fraction: None,
) -> list[bool]:
    """
    Measure the latency of every endpoint that L{takes_turns}, in C{rounds} rounds that
    take turns (C{settings.duration} or C{settings.count} split among them), by a
    L{BlockingProbe} where one fits, else a L{ReactorProbe}, into C{results} (one per
    spec); return, per spec, whether its latency was measured here.
    An endpoint that fails has its result's C{error} set (and counts as measured: the
    rest of its measurement is skipped).
    """
    probes: list[BlockingProbe | ReactorProbe | None] = []
    pool = reactor.getThreadPool()
    for spec, result in zip(specs, results, strict=True):
        probe: BlockingProbe | ReactorProbe | None = None
        try:
            if blocking_probe_fits(spec, settings):
                probe = BlockingProbe(spec, options, settings, result)
                await threads.deferToThreadPool(reactor, pool, probe.open)
            elif takes_turns(spec.kind, settings.size):
                probe = ReactorProbe(reactor, spec, options, settings, result)
                await probe.open()
        except (EchokitError, OSError) as e:
            result.error, probe = error_text(spec, e), None
        probes.append(probe)
    floor = FloorProbe(options, settings)
    if settings.size > BLOCKING_PROBE_MAX:
        # The blocking client writes a whole message before it reads: over 64 KiB its
        # echo thread could fill the socket pair both ways and wait for it until the
        # timeout. (The transports' rounds are on the reactor then anyway.)
        floor.result.error = f"{FLOOR_NAME}: not measured over {BLOCKING_PROBE_MAX:,} bytes"
    elif not any(p is not None for p in probes):
        floor.result.error = f"{FLOOR_NAME}: no transport takes turns beside it"
    else:
        try:
            await threads.deferToThreadPool(reactor, pool, floor.open)
        except (OSError, RuntimeError) as e:  # no socket pair, or no thread: no floor
            floor.result.error = f"{FLOOR_NAME}: {e}"
    counts = None if settings.count is None else shares(settings.count, rounds)
    live: list[BlockingProbe | ReactorProbe] = [p for p in probes if p is not None]
    if floor.result.error is None:
        live.insert(0, floor)
    # Each round's own histogram, for its p50: the values recorded since the last take.
    takes = {p: p.result.histogram.since_last() for p in live}
    round_p50s: dict[BlockingProbe | ReactorProbe, list[float]] = {p: [] for p in live}
    try:
        for index in range(rounds):
            for turn, probe in enumerate(live):
                if probe.result.error is not None:
                    continue
                done = (index * len(live) + turn) / (rounds * len(live))

                def step(fraction: float, done: float = done) -> None:
                    progress(done + fraction / (rounds * len(live)))

                seconds, count = (
                    settings.duration / rounds,
                    None if counts is None else counts[index],
                )
                try:
                    if isinstance(probe, BlockingProbe):
                        await threads.deferToThreadPool(
                            reactor, pool, probe.run, seconds, count, step
                        )
                    else:
                        await probe.run(seconds, count, step)
                except (EchokitError, OSError) as e:
                    probe.result.error = error_text(probe.spec, e)
                part = takes[probe]()
                if part.count >= ROUND_P50_SAMPLES:
                    round_p50s[probe].append(part.percentile(50) / 1000)
    finally:
        for probe in live:
            if isinstance(probe, BlockingProbe):
                probe.close()
            else:
                await probe.close()
            probe.result.histogram.stop_since_last()
            if rounds > 1:
                probe.result.latency_client += f", {rounds} rounds in turn with the others"
                probe.result.latency_rounds_p50_us = round_p50s[probe]
    if floor.result.error is None and floor.result.histogram.count:
        floor_us = percentiles_us(floor.result.histogram)
        rounds_us = round_p50s[floor]
        for probe in live:
            if probe is not floor:
                probe.result.latency_floor_us = floor_us
                probe.result.latency_floor_rounds_us = rounds_us
    return [
        probe is not None or result.error is not None
        for probe, result in zip(probes, results, strict=True)
    ]
