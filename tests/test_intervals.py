"""
Tests for live intervals (C{bench --interval}, C{--hlog}) and C{bench --start-at}.

The interval arithmetic and the log format are tested without a network (fake sources,
fake clocks); real runs check that the log of a real run is read back by the
C{hdrhistogram} package's own reader and by HdrHistogram's Java HistogramLogProcessor.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from echokit.errors import InputError
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.intervals import IntervalLog, counts_since_last
from echokit.measure.starttime import MAX_AHEAD, parse_start_at
from tests.support import echokit_server, run_echokit

NOW = 1_795_960_000.0
BENCH = ["bench", "--warmup", "0", "--json"]


def read_log(path: Path) -> list[tuple[float, HdrHistogram]]:
    """Every interval of an hlog as hdrh's HistogramLogReader reads it."""
    reader = HistogramLogReader(str(path), HdrHistogram(1, 3600 * 10**9, 3))
    found = []
    while (histogram := reader.get_next_interval_histogram()) is not None:
        found.append((histogram.get_start_time_stamp() / 1000, histogram))
    reader.close()
    return found


def live_run(args: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run C{echokit ARGS} (a bench with --json --interval): its final record, its intervals."""
    result = run_echokit(args, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    (final,) = [line for line in lines if "interval" not in line]
    return final, [line for line in lines if "interval" in line]


class IntervalLogTests:
    def test_intervals_add_up_to_the_whole(self, tmp_path: Path) -> None:
        """
        Each interval reports only what was recorded in it: the JSON lines' and the
        log's histograms add up to every value recorded, and the reader reads the log.
        """
        whole = LatencyHistogram()
        out, path = io.StringIO(), tmp_path / "run.hlog"
        with path.open("w") as hlog:
            log = IntervalLog(1.0, out, hlog, tagged=False, clock=lambda: NOW)
            log.begin(NOW)
            log.follow("tcp:host=h:port=7", whole.since_last())
            for second in range(1, 4):
                for value in range(second * 1000, second * 1000 + 50 * second):
                    whole.record(value * 10)
                log.tick(NOW + second)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["samples"] for line in lines] == [50, 100, 150]
        assert lines[1]["interval"] == {"start": NOW + 1, "end": NOW + 2}
        assert lines[0]["latency_us"]["max"] == pytest.approx(10.49, rel=1e-3)
        added = LatencyHistogram()
        for line in lines:
            added.add(LatencyHistogram.decode(line["histogram"]))
        assert added.percentiles() == whole.percentiles()
        intervals = read_log(path)
        assert [h.get_total_count() for _, h in intervals] == [50, 100, 150]
        assert [start for start, _ in intervals] == [NOW, NOW + 1, NOW + 2]

    def test_header_and_tags(self, tmp_path: Path) -> None:
        """The log has Java's header lines; with several endpoints, lines carry their tag."""
        hlog = io.StringIO()
        log = IntervalLog(1.0, None, hlog, tagged=True, clock=lambda: NOW)
        log.begin(NOW)
        source = LatencyHistogram()
        log.follow("tcp:host=a b,c:port=7", source.since_last())
        source.record(1_500_000)
        log.tick(NOW + 1)
        text = hlog.getvalue()
        assert text.startswith("#[Histogram log format version 1.2]\n#[StartTime: 1795960000.000")
        assert "#[BaseTime: 1795960000" in text
        assert '"StartTimestamp","Interval_Length","Interval_Max",' in text
        assert re.search(r"\nTag=tcp:host=a_b_c:port=7,0\.000,1\.000,1\.50\d,HISTF", text)

    def test_switching_sources_loses_nothing(self) -> None:
        """Following the next endpoint keeps the last one's values, on a line of their own."""
        out = io.StringIO()
        log = IntervalLog(1.0, out, None, tagged=True, clock=lambda: NOW)
        log.begin(NOW)
        first, second = LatencyHistogram(), LatencyHistogram()
        log.follow("first", first.since_last())
        first.record_all([1000, 2000])
        log.follow("second", second.since_last())
        second.record(3000)
        log.tick(NOW + 1.0)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [(x["endpoint"], x["samples"]) for x in lines] == [("first", 2), ("second", 1)]
        assert lines[0]["interval"] == lines[1]["interval"] == {"start": NOW, "end": NOW + 1}

    def test_fed_histograms_are_added(self) -> None:
        """Histograms fed in (child processes') add up per endpoint within an interval."""
        out = io.StringIO()
        log = IntervalLog(1.0, out, None, tagged=False, clock=lambda: NOW)
        log.begin(NOW)
        for values in ([1000, 2000], [3000], [4000, 5000, 6000]):
            part = LatencyHistogram()
            part.record_all(values)
            log.feed("tcp", part)
        (merged,) = log.tick(NOW + 1)
        assert merged.count == 6
        log.tick(NOW + 2)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["samples"] for line in lines] == [6, 0]

    def test_counts_since_last(self) -> None:
        """Cumulative counts (the open-loop engine's) become per-interval histograms."""
        counts = {1000: 2}
        take = counts_since_last(lambda: counts)
        counts.update({1000: 5, 2000: 1})
        assert take().count == 4
        assert take().count == 0


class StartAtTests:
    def test_forms(self) -> None:
        """ISO 8601 with a zone, with an offset, without (local time), and Unix seconds."""
        assert parse_start_at("2026-11-29T18:00:00Z", NOW) == 1_795_975_200.0
        assert parse_start_at("2026-11-29T19:00:00+01:00", NOW) == 1_795_975_200.0
        assert parse_start_at(" 1795975200.5 ", NOW) == 1_795_975_200.5
        local = time.mktime(time.strptime("2026-11-29 18:00:00", "%Y-%m-%d %H:%M:%S"))
        if local > NOW:
            assert parse_start_at("2026-11-29T18:00:00", NOW) == local

    def test_refused(self) -> None:
        """Past, unparsable, or more than a day ahead: InputError saying which."""
        for text, phrase in (
            ("1795959999", "in the past"),
            (str(NOW), "in the past"),
            ("tomorrow", "is not a time"),
            ("2026-13-01T00:00:00Z", "is not a time"),
            (str(NOW + MAX_AHEAD + 60), "hours ahead"),
        ):
            with pytest.raises(InputError, match=phrase):
                parse_start_at(text, NOW)


@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("intervals")
    with echokit_server(["tcp:0:interface=127.0.0.1"], tmp / "certs") as server:
        yield server.connect_strings[0]


def _hdrhistogram_jar() -> Path | None:
    """HdrHistogram's Java library: Debian's libhdrhistogram-java, or a Maven copy."""
    for candidate in (
        Path("/usr/share/java/hdrhistogram.jar"),
        *sorted(Path.home().glob(".m2/repository/org/hdrhistogram/HdrHistogram/*/*.jar")),
    ):
        if candidate.is_file():
            return candidate
    return None


class LiveCommandTests:
    def test_hlog_of_a_real_run(self, tcp_server: str, tmp_path: Path) -> None:
        """
        bench --hlog --interval: the JSON lines and the log's intervals hold every
        latency sample of the run, and hdrh's reader reads the log back.
        """
        path = tmp_path / "run.hlog"
        final, intervals = live_run(
            [*BENCH, tcp_server, "--duration", "1.5", "--interval", "0.5", "--hlog", str(path)]
        )
        assert len(intervals) >= 4
        assert sum(line["samples"] for line in intervals) == final["latency_samples"] > 0
        logged = read_log(path)
        assert len(logged) == len(intervals)
        assert sum(h.get_total_count() for _, h in logged) == final["latency_samples"]
        # HdrHistogram's own Java tool, where it is installed (CI installs it)
        jar, java = _hdrhistogram_jar(), shutil.which("java")
        if jar is None or java is None:
            if os.environ.get("CI"):
                pytest.fail("HdrHistogram's Java tools are missing: install libhdrhistogram-java")
            return
        processed = subprocess.run(
            [java, "-cp", str(jar), "org.HdrHistogram.HistogramLogProcessor", "-i", str(path)],
            capture_output=True,
            timeout=120,
            check=True,
        )
        total = re.search(rb"Total count\s*=\s*(\d+)", processed.stdout)
        assert total is not None, processed.stdout[-500:]
        assert int(total.group(1)) == final["latency_samples"]

    def test_start_at(self, tcp_server: str) -> None:
        """--start-at 3 s ahead: the run (its first interval) starts then, not before."""
        when = time.time() + 3
        result = run_echokit(
            [*BENCH, tcp_server, "--count", "200", "--interval", "5", "--start-at", f"{when:.3f}"],
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode()
        first = json.loads(result.stdout.decode().splitlines()[0])
        assert when <= first["interval"]["start"] < when + 1

    def test_bad_start_at(self, tcp_server: str) -> None:
        """A --start-at in the past or unparsable: one line, exit 2."""
        for text in ("2001-01-01T00:00:00Z", "noon", str(int(time.time()) - 5)):
            result = run_echokit(["bench", tcp_server, "--start-at", text])
            lines = result.stderr.decode().strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1, lines
            assert "--start-at" in lines[0]
