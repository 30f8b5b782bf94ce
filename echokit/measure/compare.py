"""
What C{echokit bench} and C{echokit compare} do around the measurements.

C{bench} measures servers that are already running, over the client strings given.
C{compare} first starts echokit's own servers on the transports asked for (all five by
default) on loopback with ephemeral ports: in this process (one reactor for servers and
clients), or with C{--server-process} in a child C{echokit serve}, so that client and
server do not share one event loop. Either way every endpoint is measured in turn, and
one table (or JSON) reports them all.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from echokit.client.connect import ClientOptions
from echokit.errors import RuntimeFailure
from echokit.measure import report
from echokit.measure.bench import (
    BenchSettings,
    EndpointResult,
    bench_endpoint,
    environment,
    new_result,
)
from echokit.measure.cpu import CpuMeter, pin_plan, pin_process
from echokit.measure.interleave import ROUNDS, described, interleaved_latency
from echokit.measure.intervals import IntervalLog
from echokit.measure.results import too_large
from echokit.measure.schedule import format_rate
from echokit.measure.starttime import wait_until
from echokit.server.listeners import Listener, plan_servers, start_listeners
from echokit.transports.certs import CERT_DIR_ENV
from echokit.transports.endpoints import ipv6_unavailable
from echokit.transports.grammar import EndpointSpec, parse_client

#: The transports C{compare} knows, in table order. C{quic} is a QUIC stream per client,
#: C{quic-dgram} QUIC DATAGRAM frames (RFC 9221); both need aioquic (echokit[quic]).
#: C{ws} and C{wss} are WebSocket, plain and over TLS, one binary message per message;
#: they need websockets (echokit[ws]).
TRANSPORTS = ("tcp", "tcp6", "unix", "ssl", "udp", "quic", "quic-dgram", "ws", "wss")
#: Transports that need an optional package, and which.
_NEEDS = {"quic": "aioquic", "quic-dgram": "aioquic", "ws": "websockets", "wss": "websockets"}


def default_transports() -> list[str]:
    """What C{compare} measures when given no transport: every one whose library is installed."""
    import importlib.util

    return [t for t in TRANSPORTS if t not in _NEEDS or importlib.util.find_spec(_NEEDS[t])]


def client_strings(transports: Sequence[str], connect_strings: Sequence[str]) -> list[str]:
    """The client strings to measure, from the servers' announced connect strings."""
    return [
        text + ":datagram=yes" if transport == "quic-dgram" else text
        for transport, text in zip(transports, connect_strings, strict=True)
    ]


def server_strings(transports: Sequence[str], directory: str) -> list[str]:
    """The server endpoint strings C{compare} listens on, loopback and ephemeral ports."""
    table = {
        "tcp": "tcp:0:interface=127.0.0.1",
        "tcp6": "tcp6:0:interface=\\:\\:1",
        "unix": f"unix:{os.path.join(directory, 'echo.sock')}",
        "ssl": "ssl:0:interface=127.0.0.1",
        "udp": "udp:0",
        "quic": "quic:0",
        "quic-dgram": "quic:0",
        "ws": "ws:0:interface=127.0.0.1",
        "wss": "wss:0:interface=127.0.0.1",
    }
    return [table[t] for t in transports]


@dataclass
class Output:
    """Where and how to report: the options shared by bench and compare."""

    out: TextIO
    json: bool = False
    save: Path | None = None
    baseline: Path | None = None
    plot: Path | None = None
    progress: bool = False
    intervals: IntervalLog | None = None
    #: Every column in the table, however wide (see L{report.render_table}).
    wide: bool = False


class ProgressBar:
    """
    Progress over every endpoint measured, on a terminal: click's progress bar (percent,
    time left, the endpoint being measured), on stderr; nothing at all when disabled
    (stderr is not a terminal).

    The measurement reports each endpoint's progress as a fraction (L{__call__}); the
    bar counts thousandths of an endpoint. click is imported on use, like the rest of
    the measurement (C{echokit --help} does not pay for it).
    """

    #: Steps per endpoint.
    STEPS = 1000

    def __init__(self, enabled: bool, total: int, file: TextIO | None = None) -> None:
        self.total = total
        self.index = 0
        self.label = ""
        self._bar: Any = None  # click.progressbar's, its items are our labels
        if enabled:
            import click

            self._bar = click.progressbar(
                length=max(1, total) * self.STEPS,
                file=file if file is not None else sys.stderr,
                fill_char="#",
                empty_char=".",
                item_show_func=lambda label: label,
            )

    def start(self, index: int, label: str) -> None:
        """Endpoint number C{index} (from 0) is measured next, shown as C{label}."""
        self.index, self.label = index, label[:40]

    def __call__(self, fraction: float) -> None:
        """The current endpoint is C{fraction} (0 to 1) done."""
        if self._bar is None:
            return
        done = int((self.index + min(1.0, max(0.0, fraction))) * self.STEPS)
        if done > self._bar.pos:
            self._bar.update(done - self._bar.pos, self.label)

    def finish(self) -> None:
        """Erase the bar's line (the results follow) and show the cursor click hid."""
        if self._bar is not None:
            self._bar.file.write("\r\033[K\033[?25h")
            self._bar.file.flush()


async def measure(
    reactor: Any,
    specs: Sequence[EndpointSpec],
    options: ClientOptions,
    settings: BenchSettings,
    output: Output,
    mode: str,
    meter: CpuMeter | None = None,
    processes: int = 1,
    global_argv: Sequence[str] = (),
    place: Callable[[str], None] = lambda phase: None,
    rounds: int = 1,
) -> list[EndpointResult]:
    """
    Measure every endpoint in turn (at each of C{settings.rates}, if any) and report
    them all; return the results. C{meter} measures CPU over each measured phase;
    C{place} is told of each phase (L{bench_endpoint}).

    @param rounds: closed loop, measure the latency of every endpoint first, in this
        many rounds taking turns (L{interleave}); 1: each endpoint's in one go.

    @param processes: measure from this many client processes at once, merged
        (L{echokit.measure.processes}); C{global_argv} are the options they run with.
    """
    baseline = report.load(output.baseline) if output.baseline else None
    rates: Sequence[float | None] = settings.rates or [None]
    results: list[EndpointResult] = []
    if processes > 1:
        from echokit.measure.processes import measure_in_processes

        results = await measure_in_processes(
            reactor,
            specs,
            options,
            settings,
            processes,
            global_argv,
            output.intervals,
            meter.server_pids() if meter is not None and meter.server_pids else (),
        )
    else:
        if settings.start_at is not None:
            await wait_until(reactor, settings.start_at)
        in_turn = rounds > 1 and not settings.rates
        bar = ProgressBar(output.progress, len(specs) * len(rates) + int(in_turn))
        log = output.intervals
        if log is not None:
            log.start(reactor)
        measured: list[EndpointResult | None] = [None] * len(specs)
        try:
            if in_turn:
                bar.start(0, "latency, every transport in turn")
                place("latency")
                fresh = [new_result(spec, settings) for spec in specs]
                done = await interleaved_latency(
                    reactor, specs, options, settings, fresh, rounds, bar
                )
                measured = [r if d else None for r, d in zip(fresh, done, strict=True)]
            for spec, ready in zip(specs, measured, strict=True):
                for rate in rates:
                    label = spec.text if rate is None else f"{spec.text} @ {format_rate(rate)}/s"
                    bar.start(len(results) + int(in_turn), label)
                    watch = None if log is None else partial(log.follow, label)
                    results.append(
                        await bench_endpoint(
                            reactor,
                            spec,
                            options,
                            settings,
                            bar,
                            rate,
                            meter,
                            watch,
                            place,
                            ready,
                        )
                    )
        finally:
            bar.finish()
            if log is not None:
                log.stop()
    env = environment(reactor)
    out = output.out
    if output.json:
        out.write(report.render_json(results))
    else:
        out.write(report.render_table(results, output.wide))
        out.write("\n" + report.render_environment(env, results, mode))
        if baseline is not None:
            out.write("\n" + report.render_baseline(results, baseline))
    if output.save is not None:
        report.save(output.save, results, env, mode)
    if output.plot is not None:
        report.plot(output.plot, results, mode)
        if not output.json:
            out.write(f"\nlatency chart written to {output.plot}\n")
    out.flush()
    report.fail_if_broken(results)
    return results


class _Announcements(protocol.ProcessProtocol):
    """Collect a child C{echokit serve}'s announced connect strings."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.buffer = b""
        self.strings: list[str] = []
        self.errors = b""
        self.ready: defer.Deferred[list[str]] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            if " -> echokit connect " in text:
                self.strings.append(shlex.split(text.split(" -> echokit connect ", 1)[1])[0])
        if len(self.strings) >= self.expected and not self.ready.called:
            self.ready.callback(self.strings)

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            last = self.errors.decode(errors="replace").strip().splitlines()
            self.ready.errback(
                RuntimeFailure(
                    "the server process exited early: " + (last[-1] if last else "no message")
                )
            )
        self.ended.callback(None)


async def compare(
    reactor: Any,
    transports: Sequence[str],
    options: ClientOptions,
    settings: BenchSettings,
    output: Output,
    server_process: bool,
    reactor_name: str | None = None,
    pin: bool = True,
    rounds: int = ROUNDS,
) -> list[EndpointResult]:
    """
    Start echokit's servers on C{transports}, measure each, report them all.

    @param server_process: run the servers in a child C{echokit serve}, on the reactor
        called C{reactor_name} (echokit's default if C{None}), as the clients' is.
    @param pin: pin clients and servers to CPUs (L{pin_plan}): one CPU for this process
        when it runs both; else the server on one CPU, and the client on the same for
        latency and on another under load.
    @param rounds: measure the latency of every transport first, in this many rounds
        taking turns (L{interleave}); 1: each transport's in one go, before its load.
    """
    plan = pin_plan(server_process) if pin else None
    if plan is None:
        pinning = "not pinned (the kernel placed client and server)"
    elif server_process:
        pinning = (
            f"pinned: server on CPU {plan[1]}, client on CPU {plan[1]} for latency "
            f"(no idle CPU to wake per round trip) and on CPU {plan[0]} under load"
        )
    else:
        pinning = f"pinned: clients and servers on CPU {plan[0]}"
    if pin and plan is None:
        pinning += ": fewer than two CPUs to pin to"
    elif plan is not None:
        pinning += " (--no-pin to let the kernel place them)"
    wanted = list(transports)
    skipped = []
    if "tcp6" in wanted and (why := ipv6_unavailable()):
        wanted.remove("tcp6")
        skipped.append(f"tcp6 skipped: {why}")
    for transport in list(wanted):
        if why := too_large(transport, settings.size):
            wanted.remove(transport)
            skipped.append(f"{transport} skipped: {why}")
    if not settings.rates:
        pinning += "; " + described(rounds, wanted, settings.size)
    with tempfile.TemporaryDirectory(prefix="echokit-compare-") as tmp:
        strings = server_strings(wanted, tmp)
        if server_process:
            flags = ["--reactor", reactor_name] if reactor_name else []
            mode = f"server in a child process ({shlex.join(['echokit', *flags, 'serve'])}), "
            mode += f"clients in this one; {pinning}"
            results = await _with_child_server(
                reactor, strings, flags, options, settings, output, mode, wanted, plan, rounds
            )
        else:
            mode = f"server and clients in this process, one reactor; {pinning}"
            if plan is not None:
                pin_process(None, {plan[0]})
            listeners: list[Listener] = []
            try:
                listeners = await start_listeners(
                    reactor, plan_servers(reactor, strings, options.certs)
                )
                announced = [listener.connect_string for listener in listeners]
                specs = [parse_client(text) for text in client_strings(wanted, announced)]
                results = await measure(
                    reactor, specs, options, settings, output, mode, rounds=rounds
                )
            finally:
                for listener in listeners:
                    await defer.maybeDeferred(listener.port.stopListening)
    for line in skipped:
        # Not on stdout with --json, whose lines must all be JSON.
        (sys.stderr if output.json else output.out).write(line + "\n")
    return results


async def _with_child_server(
    reactor: Any,
    strings: Sequence[str],
    flags: Sequence[str],
    options: ClientOptions,
    settings: BenchSettings,
    output: Output,
    mode: str,
    transports: Sequence[str],
    plan: tuple[int, int] | None = None,
    rounds: int = 1,
) -> list[EndpointResult]:
    child = _Announcements(len(strings))
    env = dict(os.environ, **{CERT_DIR_ENV: str(options.certs.directory)}, PYTHONUNBUFFERED="1")
    if plan is not None:
        pin_process(None, {plan[1]})  # the child is forked with this affinity
    process = reactor.spawnProcess(
        child,
        sys.executable,
        [sys.executable, "-m", "echokit", "-q", *flags, "serve", *strings],
        env=env,
    )
    if plan is not None:
        pin_process(None, {plan[0]})

    def place(phase: str) -> None:
        """One message in flight: join the server's CPU; under load, a CPU of its own."""
        if plan is not None:
            pin_process(None, {plan[1] if phase == "latency" else plan[0]})

    try:
        connect_strings = await child.ready.addTimeout(30, reactor)
        specs = [parse_client(text) for text in client_strings(transports, connect_strings)]
        meter = CpuMeter(lambda: [process.pid], client=True)
        return await measure(
            reactor, specs, options, settings, output, mode, meter, place=place, rounds=rounds
        )
    finally:
        if not child.ended.called:
            process.signalProcess("TERM")
        await child.ended
