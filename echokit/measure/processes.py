"""
C{echokit bench --processes N}: N client processes measuring together, one result.

One Python process tops out at what one core can send; N processes, each with its own
reactor and its share of the connections (and of C{--count}, and of a fixed rate), load
a server N times harder. The parent spawns them (C{echokit bench-process}, a hidden
command), waits until every one is ready (imported, reactor running), then tells all of
them to start at once through their standard input. Each measures the endpoints in turn
and writes one JSON record per endpoint (L{echokit.measure.report}'s fields, histogram
included) on its standard output; the parent merges the records endpoint by endpoint
(L{echokit.measure.merge}: histograms added, counts and rates summed).

A process that dies or reports nothing for an endpoint turns that endpoint's row into an
error row naming the process: the total is never silently smaller.

The latency phase runs in every process at once: its histogram is that of N clients,
each with one message in flight.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TextIO

from twisted.internet import defer, protocol, threads
from twisted.python.failure import Failure

from echokit.client.connect import ClientOptions
from echokit.errors import InputError, RuntimeFailure
from echokit.measure.bench import BenchSettings, EndpointResult, bench_endpoint
from echokit.measure.cpu import CpuMeter
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.intervals import IntervalLog
from echokit.measure.merge import merge_records
from echokit.measure.schedule import format_rate
from echokit.measure.starttime import wait_until
from echokit.transports.certs import CERT_DIR_ENV
from echokit.transports.grammar import EndpointSpec, parse_client

#: What a child says once it is ready to measure, and what the parent answers to start.
READY = b"ready"
GO = b"go\n"
#: Seconds a child may take to start (import, reactor) before the run is abandoned.
START_TIMEOUT = 60.0
#: The longest a child waits before reporting its live latency (with --interval).
CHILD_TICK = 0.25


def split(total: int, parts: int) -> list[int]:
    """C{total} in C{parts} shares as equal as can be, larger first: split(5, 2) == [3, 2]."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def process_count(text: str, cpus: int) -> int:
    """
    The number of processes C{--processes} asks for: a positive integer, or C{auto} for
    one per CPU (C{cpus}).

    @raise InputError: on anything else.
    """
    if text.strip().lower() == "auto":
        return max(1, cpus)
    if not text.strip().isdigit() or int(text) < 1:
        raise InputError(
            f"--processes must be a whole number of client processes, at least 1, or auto "
            f"(one per CPU), not '{text}'"
        )
    return int(text)


def shares(settings: BenchSettings, processes: int) -> list[BenchSettings]:
    """
    Each process's settings: its share of the connections, of C{count}, and of a fixed
    rate if the settings have one.

    @raise InputError: if there are fewer connections than processes.
    """
    if settings.connections < processes:
        raise InputError(
            f"--processes {processes} needs at least as many --connections "
            f"({settings.connections} given): each process needs one"
        )
    split_fields: dict[str, list[Any]] = {"connections": split(settings.connections, processes)}
    if settings.count is not None:
        if settings.count < processes:
            raise InputError(f"--count {settings.count} is less than one message per process")
        split_fields["count"] = split(settings.count, processes)
    if settings.rates:
        split_fields["rates"] = [tuple(rate / processes for rate in settings.rates)] * processes
    return [
        dataclasses.replace(settings, **{name: values[i] for name, values in split_fields.items()})
        for i in range(processes)
    ]


def child_config(
    specs: Sequence[EndpointSpec],
    options: ClientOptions,
    settings: BenchSettings,
    interval: float | None = None,
    server_pids: Sequence[int] = (),
) -> str:
    """The JSON a child reads: what to measure, and how (see L{run_child})."""
    return json.dumps(
        {
            "endpoints": [spec.text for spec in specs],
            "interval": interval,
            "server_pids": list(server_pids),
            "settings": dataclasses.asdict(settings),
            "insecure": options.insecure,
            "client_cert": [str(p) if p else None for p in options.client_cert]
            if options.client_cert
            else None,
            "timeout": options.timeout,
        }
    )


def read_child_config(
    text: str, options: ClientOptions
) -> tuple[list[EndpointSpec], ClientOptions, BenchSettings]:
    """L{child_config}'s inverse; C{options} gives the certificate store."""
    from pathlib import Path

    data = json.loads(text)
    cert = data["client_cert"]
    client_cert = (Path(cert[0]), Path(cert[1]) if cert[1] else None) if cert else None
    options = dataclasses.replace(
        options, insecure=data["insecure"], client_cert=client_cert, timeout=data["timeout"]
    )
    specs = [parse_client(text) for text in data["endpoints"]]
    settings = dict(data["settings"], rates=tuple(data["settings"].get("rates", ())))
    return specs, options, BenchSettings(**settings)


async def run_child(reactor: Any, config: str, options: ClientOptions, out: TextIO) -> None:
    """
    A child's whole life: say ready, wait for the parent's go (a line on standard input),
    measure each endpoint and write its JSON record, one line each.
    """
    specs, options, settings = read_child_config(config, options)
    out.write(READY.decode() + "\n")
    out.flush()
    await threads.deferToThread(sys.stdin.readline)
    extra = json.loads(config)
    pids = extra.get("server_pids") or []
    meter = CpuMeter((lambda: pids) if pids else None, client=True)
    interval = extra.get("interval")
    log = None if interval is None else IntervalLog(interval, out, None, tagged=False)
    if log is not None:
        log.start(reactor)
    try:
        for spec in specs:
            for rate in settings.rates or [None]:
                watch = None if log is None else partial(log.follow, row_label(spec, rate))
                result = await bench_endpoint(
                    reactor, spec, options, settings, rate=rate, meter=meter, watch=watch
                )
                out.write(json.dumps(result.as_json()) + "\n")
                out.flush()
    finally:
        if log is not None:
            log.stop()


def row_label(spec: EndpointSpec, rate: float | None) -> str:
    """How a row is named in progress and interval lines: the endpoint, and its rate."""
    return spec.text if rate is None else f"{spec.text} @ {format_rate(rate)}/s"


class _Child(protocol.ProcessProtocol):
    """One client process as the parent sees it: readiness, records, last words, exit."""

    def __init__(
        self,
        number: int,
        total: int,
        on_interval: Callable[[dict[str, Any]], None] = lambda line: None,
    ) -> None:
        self.name = f"client process {number} of {total}"
        self.on_interval = on_interval
        self.buffer = b""
        self.records: list[dict[str, Any]] = []
        self.errors = b""
        self.status: str | None = None
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip() == READY:
                if not self.ready.called:
                    self.ready.callback(None)
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "interval" in record:
                self.on_interval(record)
            elif isinstance(record, dict):
                self.records.append(record)

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4000:]

    def last_words(self) -> str:
        lines = self.errors.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        self.status = f"killed by signal {signal}" if signal else f"exit code {code}"
        if not self.ready.called:
            self.ready.errback(
                RuntimeFailure(f"{self.name} ended before it was ready: {self.last_words()}")
            )
        self.ended.callback(None)

    def record_for(self, index: int, spec: EndpointSpec) -> dict[str, Any]:
        """Its record for the C{index}th endpoint, or an error record saying why not."""
        if index < len(self.records) and self.records[index].get("endpoint") == spec.text:
            return self.records[index]
        return {
            "endpoint": spec.text,
            "transport": spec.kind,
            "error": f"ended ({self.status}) before reporting it: {self.last_words()}",
        }


async def measure_in_processes(
    reactor: Any,
    specs: Sequence[EndpointSpec],
    options: ClientOptions,
    settings: BenchSettings,
    processes: int,
    global_argv: Sequence[str] = (),
    intervals: IntervalLog | None = None,
    server_pids: Sequence[int] = (),
) -> list[EndpointResult]:
    """
    Measure C{specs} from C{processes} client processes started together; one merged
    result per endpoint (see the module docstring).

    @param global_argv: echokit's global options for the children (C{--reactor}, ...).
    @param server_pids: the server's processes, whose CPU each child measures over its
        own measured window (the windows coincide: the merge divides it by all the
        children's messages, see L{echokit.measure.merge}).
    @param intervals: live reporting: each child reports its latency every quarter of
        its interval (at most L{CHILD_TICK} s apart), and what they report is added
        into the interval where it arrives.
    """

    def on_interval(line: dict[str, Any]) -> None:
        if intervals is not None and line.get("histogram"):
            try:
                histogram = LatencyHistogram.decode(line["histogram"])
            except ValueError:
                return  # not from echokit bench-process: its final record will say more
            intervals.feed(str(line.get("endpoint")), histogram)

    children = [_Child(i + 1, processes, on_interval) for i in range(processes)]
    tick = None if intervals is None else min(CHILD_TICK, intervals.seconds / 4)
    env = dict(os.environ, **{CERT_DIR_ENV: str(options.certs.directory)})
    transports = []
    try:
        for child, share in zip(children, shares(settings, processes), strict=True):
            argv = [sys.executable, "-m", "echokit", *global_argv]
            argv += ["bench-process", child_config(specs, options, share, tick, server_pids)]
            transports.append(reactor.spawnProcess(child, sys.executable, argv, env=env))
        await defer.gatherResults(
            [child.ready for child in children], consumeErrors=True
        ).addTimeout(START_TIMEOUT, reactor)
        if settings.start_at is not None:
            await wait_until(reactor, settings.start_at)
        if intervals is not None:
            intervals.start(reactor)
        for transport in transports:
            transport.write(GO)
            transport.closeStdin()
        await defer.DeferredList([child.ended for child in children])
        if intervals is not None:
            intervals.stop()
    except defer.FirstError as e:
        raise e.subFailure.value from None  # type: ignore[misc]
    except defer.TimeoutError:
        raise RuntimeFailure(
            f"the client processes were not all ready within {START_TIMEOUT:.0f} s"
        ) from None
    finally:
        for child, transport in zip(children, transports, strict=False):
            if not child.ended.called:
                transport.signalProcess("KILL")
                await child.ended
    labels = [child.name for child in children]
    rows = [spec for spec in specs for _ in settings.rates or [None]]
    return [
        merge_records([child.record_for(i, spec) for child in children], labels)
        for i, spec in enumerate(rows)
    ]
