"""
Tests for C{echokit bench --processes N}: shares, the merge of the processes' records,
and real runs on loopback (the sum of the processes' messages, a process that dies).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from echokit.errors import InputError
from echokit.measure.bench import BenchSettings
from echokit.measure.processes import process_count, shares, split
from tests.support import ECHOKIT, RunningServer, echokit_server, run_echokit
from tests.test_intervals import live_run, read_log

TWO = ["bench", "--processes", "2", "--warmup", "0", "--json"]


class SharesTests:
    def test_split_is_exact(self) -> None:
        """Shares add up to the total and differ by at most one."""
        for total in range(1, 40):
            for parts in range(1, total + 1):
                got = split(total, parts)
                assert sum(got) == total and max(got) - min(got) <= 1

    def test_each_process_gets_its_share(self) -> None:
        """Connections and --count are divided among the processes; the rest is the same."""
        settings = BenchSettings(size=128, connections=5, count=1001, duration=3.0)
        got = shares(settings, 2)
        assert [s.connections for s in got] == [3, 2]
        assert [s.count for s in got] == [501, 500]
        assert {(s.size, s.duration) for s in got} == {(128, 3.0)}

    def test_refused(self) -> None:
        """Zero, negative or unparsable process counts, or fewer connections than processes."""
        for bad in ("0", "-1", "two", ""):
            with pytest.raises(InputError, match="--processes must be"):
                process_count(bad, 2)
        assert process_count("auto", 8) == 8
        with pytest.raises(InputError, match="at least as many --connections"):
            shares(BenchSettings(connections=2), 3)


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("processes")
    with echokit_server(["tcp:0:interface=127.0.0.1"], tmp / "certs") as server:
        yield server


@pytest.fixture
def tcp_server(running_server: RunningServer) -> str:
    return running_server.connect_strings[0]


class ProcessesCommandTests:
    def test_two_processes_report_the_sum(self, running_server: RunningServer) -> None:
        """
        With --processes 2 and --count 4000, each process makes 2,000 round trips per phase
        (long enough for the server to use some of /proc's 10 ms CPU ticks in each window):
        the one result counts all 4,000 latency samples (both histograms, added) and every
        message of both processes, intact; CPU per message is measured by both (the
        server's, with --server-pid, over both processes' messages).
        """
        pid = str(running_server.process.pid)
        result = run_echokit(
            [*TWO, running_server.connect_strings[0], "--count", "4000", "--server-pid", pid],
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode()
        (record,) = [json.loads(line) for line in result.stdout.decode().splitlines()]
        assert record["processes"] == 2
        assert record["connections"] == 4
        assert record["error"] is None
        assert record["latency_samples"] == 4000
        assert record["sent"] == record["received"] >= 8000
        assert record["lost"] == record["duplicated"] == record["corrupted"] == 0
        assert record["histogram"].startswith("HISTF")
        assert record["server_cpu_us_per_msg"] > 0 and record["client_cpu_us_per_msg"] > 0

    def test_intervals_from_two_processes(self, tcp_server: str, tmp_path: Path) -> None:
        """
        --interval and --hlog with --processes 2: the processes' live histograms are
        added into the parent's intervals, which hold every latency sample of the run.
        """
        path = tmp_path / "run.hlog"
        final, intervals = live_run(
            [*TWO, tcp_server, "--duration", "1", "--interval", "0.4", "--hlog", str(path)]
        )
        assert final["processes"] == 2 and final["latency_samples"] > 0
        assert sum(line["samples"] for line in intervals) == final["latency_samples"]
        logged = sum(histogram.get_total_count() for _, histogram in read_log(path))
        assert logged == final["latency_samples"]

    def test_a_process_that_dies_is_an_error_row(self, tcp_server: str) -> None:
        """A client process killed mid-run makes the endpoint an error row (exit 1)."""
        process = subprocess.Popen(
            [*ECHOKIT, "bench", tcp_server, "--processes", "2", "--duration", "2", "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            children: list[int] = []
            deadline = time.monotonic() + 30
            while len(children) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                children = _children(process.pid)
            assert len(children) == 2
            while not _sockets(children[-1]) and time.monotonic() < deadline:
                time.sleep(0.05)  # not measuring yet: killed now, it would never be ready
            time.sleep(0.5)
            os.kill(children[-1], signal.SIGKILL)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 1, err.decode()
        (record,) = [json.loads(line) for line in out.decode().splitlines()]
        assert "client process" in record["error"]
        assert "killed by signal 9" in record["error"]
        assert "could not measure" in err.decode()

    def test_bad_process_counts(self, tcp_server: str) -> None:
        """--processes 0, or more processes than connections: a one-line error, exit 2."""
        for args in (["--processes", "0"], ["--processes", "x"], ["--processes", "5"]):
            result = run_echokit(["bench", tcp_server, *args])
            assert result.returncode == 2
            lines = result.stderr.decode().strip().splitlines()
            assert len(lines) == 1 and "--processes" in lines[0], lines


def _children(pid: int) -> list[int]:
    """The child processes of C{pid} (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return sorted(found)


def _sockets(pid: int) -> int:
    """How many sockets C{pid} has open (Linux)."""
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return 0
    return sum(link.startswith("socket:") for link in links)
