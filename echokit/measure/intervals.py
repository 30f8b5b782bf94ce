"""
Live figures while a run goes on: C{bench --interval S} (one JSON line per interval) and
C{bench --hlog FILE} (HdrHistogram's standard interval log).

Every S seconds the latency recorded in that interval, and only in it, is reported: as a
JSON line on standard output (field C{interval}: its start and end, Unix seconds;
C{latency_us}; C{samples}; C{histogram}, nanoseconds, as in the final records), and as
one line of the interval log, the format of HdrHistogram's C{HistogramLogWriter} (Java)
that C{HistogramLogProcessor} and C{HistogramLogAnalyzer} read:

    #[Histogram log format version 1.2]
    #[StartTime: 1795975200.000 (seconds since epoch), 2026-11-29T18:00:00+00:00]
    #[BaseTime: 1795975200.000 (seconds since epoch)]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    0.000,1.000,0.052,HISTFAAAA...

(start seconds since BaseTime, length, the interval's maximum in milliseconds, the
histogram in nanoseconds). When a run measures several endpoints (or rates), each line
is tagged C{Tag=ENDPOINT} (commas and spaces made C{_}); HistogramLogProcessor reads a
tag with C{-tag}.

What is live: the closed-loop latency phase (one message in flight) and open-loop
(C{--rate}) phases, whose every echo is timed. The closed-loop throughput phase times no
single message: its intervals report no samples.

The interval arithmetic is sans-IO (L{IntervalLog.tick} takes the time); L{start} runs it
on a reactor's clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from hdrh.log import HistogramLogWriter
from twisted.internet import task

from echokit.measure.histogram import LatencyHistogram

#: A live source: each call returns a histogram of the latencies counted since the last.
Source = Callable[[], LatencyHistogram]


def counts_since_last(cumulative: Callable[[], Mapping[int, int]]) -> Source:
    """
    A L{Source} over cumulative counts (value in ns -> count so far): each call gives
    what was added since the previous one (the first: since this call).
    """
    before = dict(cumulative())

    def take() -> LatencyHistogram:
        nonlocal before
        now = dict(cumulative())
        interval = LatencyHistogram()
        interval.record_counts({v: c - before.get(v, 0) for v, c in now.items()})
        before = now
        return interval

    return take


def _tag(label: str) -> str:
    return "".join("_" if ch in ", \t\r\n" else ch for ch in label)


class IntervalLog:
    """
    Report the latency of each interval (see the module docstring).

    @param json_out: where the JSON lines go (C{None}: none).
    @param hlog: where the HdrHistogram interval log goes (C{None}: none).
    @param tagged: tag the log's lines with the endpoint (several endpoints or rates).
    @param clock: the wall clock (Unix seconds).
    """

    def __init__(
        self,
        seconds: float,
        json_out: TextIO | None,
        hlog: TextIO | None,
        tagged: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.seconds = seconds
        self.json_out = json_out
        self.hlog = hlog
        self.tagged = tagged
        self.clock = clock
        self.base: float | None = None
        self._label = ""
        self._source: Source | None = None
        self._pending: dict[str, LatencyHistogram] = {}
        self._since = 0.0
        self._loop: task.LoopingCall | None = None

    def begin(self, now: float) -> None:
        """The run starts at C{now}: write the log's header."""
        # Whole milliseconds: StartTime and BaseTime must read the same, or a reader
        # finds the first interval a hair before the start and skips it.
        now = round(now, 3)
        self.base = self._since = now
        if self.hlog is not None:
            writer = HistogramLogWriter(self.hlog)
            writer.output_log_format_version()
            # hdrh's output_start_time cannot format a date; the line is Java's.
            moment = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
            self.hlog.write(f"#[StartTime: {now:.3f} (seconds since epoch), {moment}]\n")
            writer.output_base_time(now * 1000)
            writer.output_legend()
            self.hlog.flush()

    def follow(self, label: str, source: Source) -> None:
        """
        From now on, report what C{source} counts, as C{label}'s. What the source
        followed before counted since the last interval is kept, under its own label,
        for the interval now going on: nothing is left out.
        """
        self._collect()
        self._label, self._source = label, source

    def feed(self, label: str, histogram: LatencyHistogram) -> None:
        """Count C{histogram} (a child process's interval, say) in this interval."""
        self._label = label
        self._pending.setdefault(label, LatencyHistogram()).add(histogram)

    def _collect(self) -> None:
        if self._source is not None:
            histogram = self._source()
            if histogram.count:
                self.feed(self._label, histogram)

    def tick(self, now: float) -> list[LatencyHistogram]:
        """
        Report the interval ending at C{now}: one line per endpoint counted in it (one
        with no samples if none was); return their histograms.
        """
        assert self.base is not None, "tick() before begin()"
        self._collect()
        items = list(self._pending.items()) or [(self._label, LatencyHistogram())]
        self._pending.clear()
        start, self._since = self._since, now
        for label, histogram in items:
            if self.json_out is not None:
                self._json_line(label, histogram, start, now)
            if self.hlog is not None:
                self._log_line(label, histogram, start, now)
        return [histogram for _, histogram in items]

    def _json_line(self, label: str, histogram: LatencyHistogram, start: float, end: float) -> None:
        assert self.json_out is not None
        latency = {k: v / 1000 for k, v in histogram.percentiles().items()}
        line = {
            "interval": {"start": round(start, 3), "end": round(end, 3)},
            "endpoint": label,
            "samples": histogram.count,
            "latency_us": latency if histogram.count else {},
            "histogram": histogram.encode() if histogram.count else None,
        }
        self.json_out.write(json.dumps(line) + "\n")
        self.json_out.flush()

    def _log_line(self, label: str, histogram: LatencyHistogram, start: float, end: float) -> None:
        assert self.hlog is not None and self.base is not None
        # Java's HistogramLogWriter line: [Tag=T,]start,length,max (ms),histogram. hdrh's
        # own writer floors the maximum to whole milliseconds and writes no tag.
        tag = f"Tag={_tag(label)}," if self.tagged and label else ""
        self.hlog.write(
            f"{tag}{start - self.base:.3f},{end - start:.3f},"
            f"{histogram.max / 1e6:.3f},{histogram.encode()}\n"
        )
        self.hlog.flush()

    def start(self, reactor: Any) -> None:
        """Begin now and tick every C{seconds} on C{reactor}."""
        self.begin(self.clock())
        self._loop = task.LoopingCall(lambda: self.tick(self.clock()))
        self._loop.clock = reactor
        self._loop.start(self.seconds, now=False)

    def stop(self) -> None:
        """Report the last, partial interval and stop."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            self.tick(self.clock())
