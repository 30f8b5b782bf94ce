"""
Tests for merging measurements (L{echokit.measure.merge}) and C{echokit merge}.

The sans-IO merge is tested with plain asserts on records made here; the command on
files written here, and on runs that C{echokit bench} saved against a real server.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from echokit.errors import InputError
from echokit.measure.bench import EndpointResult
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.merge import differences, merge_records, merge_runs, parse_run
from tests.support import echokit_server, run_echokit

ENDPOINT = "tcp:host=192.0.2.1:port=7"


def record(samples: list[int], **fields: Any) -> dict[str, Any]:
    """A JSON record as bench writes it, whose latency histogram holds C{samples}."""
    result = EndpointResult(endpoint=ENDPOINT, transport="tcp", size=64, connections=2)
    result.histogram.record_all(samples)
    result.fill_latency()
    result.sent = result.received = 1000 + len(samples)
    result.messages_per_s = 5000.0
    result.connect_ms = 0.5
    data = result.as_json()
    data.update(fields)
    return data


def samples(seed: int, n: int, mu: float) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.lognormvariate(mu, 0.9)) for _ in range(n)]


class MergeRecordsTests:
    def test_percentiles_are_those_of_all_samples(self) -> None:
        """The merged latency is exactly that of one histogram of every host's samples."""
        parts = [samples(1, 9000, 10), samples(2, 3000, 11.5), samples(3, 200, 13)]
        merged = merge_records([record(p) for p in parts], ["a", "b", "c"])
        whole = LatencyHistogram()
        for part in parts:
            whole.record_all(part)
        everything = EndpointResult(endpoint=ENDPOINT, transport="tcp", histogram=whole)
        everything.fill_latency()
        assert merged.latency_us == everything.latency_us
        assert merged.latency_samples == 12_200

    def test_counts_and_rates_add_up(self) -> None:
        """Messages, rates, connections and processes add; connect time is the median."""
        records = [record([1000] * 10, connect_ms=ms) for ms in (0.4, 0.5, 3.0)]
        merged = merge_records(records, ["a", "b", "c"])
        assert (merged.sent, merged.received) == (3030, 3030)
        assert merged.messages_per_s == 15_000.0
        assert (merged.connections, merged.processes) == (6, 3)
        assert merged.connect_ms == 0.5
        assert merged.error is None

    def test_cpu_per_message_is_total_over_total(self) -> None:
        """CPU per message weighs each run by its messages: total CPU over total messages."""
        fast = record([1000], client_cpu_us_per_msg=10.0, messages_per_s=3000.0)
        slow = record([1000], client_cpu_us_per_msg=30.0, messages_per_s=1000.0)
        merged = merge_records([fast, slow], ["a", "b"])
        assert merged.client_cpu_us_per_msg == pytest.approx((10 * 3000 + 30 * 1000) / 4000)

    def test_server_cpu_is_shared_over_all_messages(self) -> None:
        """
        Runs that measured the same server over the same window (20 ms of its CPU, seen
        as 20 us/msg by the run of 1000 messages and 6.67 by the one of 3000): that CPU
        over all 4000 messages.
        """
        one = record([1000], server_cpu_us_per_msg=20_000 / 1000)
        two = record([1000], server_cpu_us_per_msg=20_000 / 3000)
        merged = merge_records([one, two], ["a", "b"])
        assert merged.server_cpu_us_per_msg == pytest.approx(20_000 / 4000)

    def test_server_cpu_of_zero_ticks_is_a_measurement(self) -> None:
        """
        A run whose window saw no tick of the server's CPU (0.0) is a measurement, not a
        missing one: the shared figure is 0, where it was dropped (None) before.
        """
        one = record([1000], server_cpu_us_per_msg=0.0)
        two = record([1000], server_cpu_us_per_msg=5.0)
        assert merge_records([one, two], ["a", "b"]).server_cpu_us_per_msg == 0.0
        missing = record([1000], server_cpu_us_per_msg=None)
        assert merge_records([missing, two], ["a", "b"]).server_cpu_us_per_msg is None

    def test_floors_of_several_runs_are_dropped(self) -> None:
        """
        A floor (compare's rounds) comes as percentiles with no histogram: one run's is
        kept, several runs' are dropped rather than averaged.
        """
        floor = {"p50": 8.0, "p99": 20.0}
        assert merge_records([record([1000], latency_floor_us=floor)], ["a"]).latency_floor_us == (
            floor
        )
        runs = [record([1000], latency_floor_us=floor), record([2000], latency_floor_us=floor)]
        assert merge_records(runs, ["a", "b"]).latency_floor_us is None

    def test_an_error_makes_an_error_row(self) -> None:
        """A run that could not measure the endpoint is named in the merged row's error."""
        merged = merge_records([record([1000]), record([], error="refused")], ["a", "b"])
        assert merged.error == "b: refused"


class DifferencesTests:
    def test_matching_runs(self) -> None:
        """Runs of the same endpoints, size and mode, with histograms, match."""
        assert differences([("a", [record([5])]), ("b", [record([6])])]) == []

    def test_each_mismatch_is_named(self) -> None:
        """Endpoint, size, mode, a missing histogram, a missing endpoint: each is said."""
        base = ("a", [record([5])])
        cases = {
            "endpoint tcp:host=192.0.2.2": record([5], endpoint="tcp:host=192.0.2.2:port=7"),
            "size 128 (in a: 64)": record([5], size=128),
            "mode open-loop": record([5], mode="open-loop"),
            "has no histogram": record([5], histogram=None),
        }
        for phrase, other in cases.items():
            (found,) = differences([base, ("b", [other])])
            assert phrase in found and found.startswith("b"), found
        assert "b has 2 endpoints, a 1" in differences([base, ("b", [record([5])] * 2)])

    def test_refused_unless_forced(self) -> None:
        """Mismatched runs raise InputError; with force they merge and say why."""
        runs = [("a", [record([5])]), ("b", [record([5], size=128)])]
        with pytest.raises(InputError, match=r"do not match: b: size 128.*--force"):
            merge_runs(runs)
        results, found = merge_runs(runs, force=True)
        assert len(results) == 1 and found == ["b: size 128 (in a: 64)"]
        with pytest.raises(InputError, match="nothing to merge"):
            merge_runs([])


class ParseRunTests:
    def test_save_file_and_json_lines(self) -> None:
        """Both forms a run is kept in are read: --save's object and --json's lines."""
        one, two = record([5]), record([7])
        saved = json.dumps({"environment": {}, "results": [one, two]})
        lines = json.dumps(one) + "\n" + json.dumps(two) + "\n"
        assert parse_run(saved, "s") == parse_run(lines, "l") == [one, two]

    def test_not_a_run(self) -> None:
        """Truncated, foreign or empty JSON: an InputError naming the file."""
        saved = json.dumps({"environment": {}, "results": [record([5])]})
        for text in (saved[: len(saved) // 2], '{"a": 1}', "[]", "", '"x"', "[1, 2]"):
            with pytest.raises(InputError, match=r"'f\.json' is not a run saved by echokit"):
                parse_run(text, "f.json")


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Two runs saved by echokit bench against a real echokit server: --save and --json."""
    tmp = tmp_path_factory.mktemp("merge")
    with echokit_server(["tcp:0:interface=127.0.0.1"], tmp / "certs") as server:
        endpoint = server.connect_strings[0]
        args = ["bench", endpoint, "--count", "300", "--warmup", "0"]
        saved = run_echokit([*args, "--save", str(tmp / "a.json")], timeout=120)
        assert saved.returncode == 0, saved.stderr.decode()
        lines = run_echokit([*args, "--json"], timeout=120)
        assert lines.returncode == 0, lines.stderr.decode()
        (tmp / "b.json").write_bytes(lines.stdout)
    yield tmp / "a.json", tmp / "b.json"


class MergeCommandTests:
    def test_merges_saved_runs(self, saved_runs: tuple[Path, Path], tmp_path: Path) -> None:
        """Two real runs merge into one record: samples and messages summed, one histogram."""
        a, b = saved_runs
        result = run_echokit(["merge", str(a), str(b), "--json"])
        assert result.returncode == 0, result.stderr.decode()
        (merged,) = [json.loads(line) for line in result.stdout.decode().splitlines()]
        one = json.loads(a.read_text())["results"][0]
        two = json.loads(b.read_text())
        assert merged["latency_samples"] == 600
        assert merged["sent"] == one["sent"] + two["sent"]
        assert merged["processes"] == 2
        whole = LatencyHistogram.decode(one["histogram"])
        whole.add(LatencyHistogram.decode(two["histogram"]))
        assert LatencyHistogram.decode(merged["histogram"]).percentiles() == whole.percentiles()
        table = run_echokit(["merge", str(a), str(b)])
        assert table.returncode == 0 and b"merged 2 runs" in table.stdout

    def test_bad_input_is_one_line_exit_2(
        self, saved_runs: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """Unreadable, truncated, foreign, empty, none at all, mismatched: one line, exit 2."""
        a, _ = saved_runs
        text = a.read_text()
        files = {
            "truncated.json": text[: len(text) // 3],
            "foreign.json": '{"name": "not echokit"}\n',
            "empty.json": "[]",
            "other-size.json": text.replace('"size": 64', '"size": 65'),
        }
        for name, content in files.items():
            (tmp_path / name).write_text(content)
        cases = {
            (str(tmp_path / "missing.json"),): "cannot read",
            (str(tmp_path / "truncated.json"),): "cut short",
            (str(tmp_path / "foreign.json"),): "is not a run saved by echokit",
            (str(tmp_path / "empty.json"),): "holds no result",
            (): "nothing to merge",
            (str(a), str(tmp_path / "other-size.json")): "do not match: ",
        }
        for files_given, phrase in cases.items():
            result = run_echokit(["merge", *files_given])
            lines = result.stderr.decode().strip().splitlines()
            assert result.returncode == 2, lines
            assert len(lines) == 1 and phrase in lines[0], lines

    def test_force_says_what_differed(self, saved_runs: tuple[Path, Path], tmp_path: Path) -> None:
        """--force merges mismatched runs and says on stderr what differed."""
        a, _ = saved_runs
        other = tmp_path / "other.json"
        other.write_text(a.read_text().replace('"size": 64', '"size": 65'))
        result = run_echokit(["merge", str(a), str(other), "--force", "--json"])
        assert result.returncode == 0, result.stderr.decode()
        assert "size 65 (in " in result.stderr.decode()
