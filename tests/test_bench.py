"""
Tests for C{echokit bench} and C{echokit compare}, and the pieces they are made of.

The commands run for real (subprocesses) against real servers on loopback: echokit's
own, a plain socat echo, and a lossy UDP echo written here that drops every Nth datagram.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from echokit.measure.bench import EndpointResult
from echokit.measure.histogram import HIGHEST, LatencyHistogram
from echokit.measure.integrity import MessageChecker, MessageMaker
from echokit.measure.report import plot, render_environment, render_table
from tests.support import echokit_server, run_echokit

QUICK = ["--duration", "0.3", "--warmup", "0"]
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_json_fields() -> tuple[list[str], list[str]]:
    """
    The JSON fields README.md documents (its "JSON fields: ..." paragraph), and the
    keys it gives in parentheses for C{latency_us}.
    """
    match = re.search(r"^JSON fields: (.*?)\.\n", README.read_text(), re.DOTALL | re.MULTILINE)
    assert match is not None, "README.md has no 'JSON fields: ...' paragraph"
    listed = match.group(1)
    latency = re.search(r"`latency_us` \(([^)]*)\)", listed)
    assert latency is not None, listed
    top_level = re.sub(r"\([^)]*\)", "", listed)
    return re.findall(r"`([^`]+)`", top_level), re.findall(r"`([^`]+)`", latency.group(1))


class LatencyHistogramTests:
    def test_percentiles_within_a_tenth_of_a_percent(self) -> None:
        """Percentiles of a skewed distribution are within 0.1% (3 digits) of the exact ones."""
        rng = random.Random(7)
        values = sorted(int(rng.lognormvariate(10, 1.2)) + 1 for _ in range(50_000))
        h = LatencyHistogram()
        h.record_all(values)
        assert h.count == len(values)
        for p in (50, 90, 99, 99.9):
            exact = values[min(len(values) - 1, int(p / 100 * len(values) + 0.5) - 1)]
            assert abs(h.percentile(p) - exact) / exact < 0.001, p
        assert abs(h.max - values[-1]) / values[-1] < 0.001
        assert abs(h.min - values[0]) / values[0] < 0.001

    def test_same_counts_as_the_package(self) -> None:
        """The batched recording counts exactly what hdrh's own record_value counts."""
        from hdrh.histogram import HdrHistogram

        rng = random.Random(3)
        values = [int(rng.lognormvariate(11, 2.5)) for _ in range(70_000)]
        values += [0, 1, 2047, 2048, HIGHEST, HIGHEST * 10, -5]
        h = LatencyHistogram()
        h.record_all(values)
        reference = HdrHistogram(1, HIGHEST, 3)
        for value in values:
            reference.record_value(min(max(0, value), HIGHEST))
        assert reference.equals(h.hdr)
        assert h.max == reference.get_max_value()
        ps = [0, 0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100]
        expected = reference.get_percentile_to_value_dict(ps)
        assert h.percentiles(ps) == {f"p{p:g}": expected[p] for p in ps} | {"max": h.max}
        assert h.mean == reference.get_mean_value()
        points = [(item.value_iterated_to, item.percentile) for item in reference]
        assert [v for v, _ in h.cumulative()] == [v for v, _ in points]
        assert [f * 100 for _, f in h.cumulative()] == pytest.approx([p for _, p in points])

    def test_merged_percentiles_are_those_of_all_samples(self) -> None:
        """
        Histograms recorded apart (three processes, say), sent encoded and added, give
        exactly the percentiles, count and maximum of one histogram of all the samples.
        """
        rng = random.Random(11)
        parts = [
            [int(rng.lognormvariate(mu, 0.8)) for _ in range(n)]
            for mu, n in ((9, 20_000), (10.5, 5_000), (12, 700))
        ]
        whole = LatencyHistogram()
        merged = LatencyHistogram()
        for part in parts:
            whole.record_all(part)
            alone = LatencyHistogram()
            alone.record_all(part)
            merged.add(LatencyHistogram.decode(alone.encode()))
        ps = (0, 1, 25, 50, 75, 90, 99, 99.5, 99.9, 99.99, 100)
        assert merged.percentiles(ps) == whole.percentiles(ps)
        assert (merged.count, merged.max, merged.min) == (whole.count, whole.max, whole.min)
        # ...while the average of the three medians is far from the true median
        medians = [LatencyHistogram() for _ in parts]
        for median, part in zip(medians, parts, strict=True):
            median.record_all(part)
        average = sum(m.percentile(50) for m in medians) / 3
        assert abs(average - whole.percentile(50)) / whole.percentile(50) > 0.2

    def test_encoded_form_is_hdrhistograms(self) -> None:
        """encode() gives HdrHistogram's V2 compressed base64, which hdrh decodes alone."""
        from hdrh.histogram import HdrHistogram

        h = LatencyHistogram()
        h.record_all([12_000, 15_000, 15_000, 900_000])
        text = h.encode()
        assert text.startswith("HISTF")
        other = HdrHistogram.decode(text)
        assert other.get_total_count() == 4
        assert other.get_value_at_percentile(50) == h.percentile(50)

    def test_decode_refuses_what_is_not_a_histogram(self) -> None:
        """Garbage, truncated and foreign strings raise ValueError, nothing else."""
        good = LatencyHistogram()
        good.record(5)
        text = good.encode()
        for bad in ("", "hello", "HISTF", text[: len(text) // 2], text[:-8] + "AAAAAAAA", 42):
            with pytest.raises(ValueError, match="not an encoded HdrHistogram"):
                LatencyHistogram.decode(bad)  # type: ignore[arg-type]

    def test_baseline_compares_distributions(self) -> None:
        """
        Against a saved run with its histogram, the baseline line says how much of this
        run is slower than the baseline's p99: 1% for the same distribution, more when
        its tail grew.
        """
        from echokit.measure.report import render_baseline
        from echokit.measure.results import EndpointResult

        def run(values: list[int]) -> EndpointResult:
            result = EndpointResult(endpoint="tcp:host=h:port=7", transport="tcp")
            result.histogram.record_all(values)
            result.fill_latency()
            return result

        def share(values: list[int]) -> float:
            line = render_baseline([run(values)], baseline)
            found = re.search(r"([\d.]+)% of round trips slower than the baseline's p99", line)
            assert found is not None, line
            return float(found.group(1))

        same = list(range(1000, 101_000, 10))
        baseline = [run(same).as_json()]
        assert 0.9 <= share(same) <= 1.0
        assert 10.0 <= share(same[:-1000] + [500_000] * 1000) <= 11.0
        assert LatencyHistogram().fraction_above(5) == 0.0

    def test_empty(self) -> None:
        """An empty histogram reports zeros rather than failing."""
        assert LatencyHistogram().percentiles() == {
            "p50": 0,
            "p90": 0,
            "p99": 0,
            "p99.9": 0,
            "max": 0,
        }
        assert LatencyHistogram().min == 0


class MessageCheckerTests:
    def test_stream_in_odd_chunks(self) -> None:
        """Messages split across chunks at any point are reassembled and all intact."""
        maker = MessageMaker(100)
        data = b"".join(maker.make(i) for i in range(50))
        checker = MessageChecker(100)
        pos = 0
        for step in [1, 7, 99, 100, 101, 333] * 20:
            checker.feed_stream(data[pos : pos + step])
            pos += step
        assert checker.counts() == {
            "received": 50,
            "lost": 0,
            "duplicated": 0,
            "reordered": 0,
            "corrupted": 0,
        }

    def test_lost_duplicated_reordered_corrupted(self) -> None:
        """Each kind of damage is counted as what it is."""
        maker = MessageMaker(64)
        checker = MessageChecker(64)
        bad = bytearray(maker.make(5))
        bad[40] ^= 0xFF
        for message in [maker.make(0), maker.make(2), maker.make(1), maker.make(1), bytes(bad)]:
            checker.feed_datagram(message)
        checker.feed_datagram(maker.make(6))  # 3 and 4 never arrive; 5 arrives damaged
        assert checker.counts() == {
            "received": 5,
            "lost": 2,
            "duplicated": 1,
            "reordered": 1,
            "corrupted": 1,
        }

    @pytest.mark.parametrize("where", [3, 40], ids=["header", "payload"])
    def test_corrupted_is_not_also_lost(self, where: int) -> None:
        """A message that comes back damaged is counted corrupted, not lost as well."""
        maker = MessageMaker(64)
        checker = MessageChecker(64)
        stream = bytearray(b"".join(maker.make(i) for i in range(4)))
        stream[64 + where] ^= 0x01  # message 1 is damaged
        checker.feed_stream(bytes(stream))
        checker.close(4)
        assert checker.counts() == {
            "received": 3,
            "lost": 0,
            "duplicated": 0,
            "reordered": 0,
            "corrupted": 1,
        }


@pytest.fixture(scope="module")
def echokit_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    tmp = tmp_path_factory.mktemp("bench")
    with echokit_server(
        ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1", "udp:0"], tmp / "certs"
    ) as server:
        yield [*server.connect_strings, str(tmp / "certs")]


def bench_json(
    args: list[str], cert_dir: Path | None = None, status: int = 0
) -> list[dict[str, object]]:
    result = run_echokit(["bench", *args, "--json", *QUICK], cert_dir=cert_dir, timeout=120)
    assert result.returncode == status, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


class BenchCommandTests:
    def test_streams_report_exact_counts_and_no_loss(self, echokit_servers: list[str]) -> None:
        """Against echokit's server: every message sent came back intact, in order."""
        tcp, ssl, _, certs = echokit_servers
        records = bench_json([tcp, ssl, "--count", "300"], Path(certs))
        assert [r["endpoint"] for r in records] == [tcp, ssl]
        for record in records:
            assert record["error"] is None
            assert record["lost"] == record["duplicated"] == 0
            assert record["reordered"] == record["corrupted"] == 0
            assert record["received"] == record["sent"]
            # 300 round trips for latency, at least 300 more in the throughput phase
            assert record["latency_samples"] == 300
            assert isinstance(record["received"], int) and record["received"] >= 600
            assert isinstance(record["messages_per_s"], float) and record["messages_per_s"] > 0
        assert records[1]["tls_version"] in ("TLSv1.2", "TLSv1.3")
        assert records[1]["tls_handshake_ms"] is not None

    def test_reactor_transports_latency_by_the_reactor_probe(self, tmp_path: Path) -> None:
        """
        bench over ws, a QUIC stream, QUIC datagrams and 100 KiB tcp messages: latency
        by the Twisted client on the reactor, exactly --count round trips each (QUIC
        datagrams: those not lost), every one audited, and the throughput phase after it.
        """
        descriptions = ["ws:0:interface=127.0.0.1", "quic:0", "tcp:0:interface=127.0.0.1"]
        with echokit_server(descriptions, tmp_path / "certs") as server:
            ws, quic, tcp = server.connect_strings
            runs = [
                ([ws, quic, quic + ":datagram=yes"], []),
                ([tcp], ["--size", "100000"]),
            ]
            records = [
                record
                for endpoints, flags in runs
                for record in bench_json([*endpoints, "--count", "120", *flags], tmp_path / "certs")
            ]
        assert [r["transport"] for r in records] == ["ws", "quic", "quic-dgram", "tcp"]
        for record in records:
            assert record["error"] is None, record["error"]
            assert record["latency_client"] == "Twisted client on the reactor"
            if record["transport"] == "quic-dgram":  # a datagram lost counts in no histogram
                samples = record["latency_samples"]
                assert isinstance(samples, int) and 100 <= samples <= 120, record
            else:
                assert record["latency_samples"] == 120 and record["lost"] == 0, record
            assert record["duplicated"] == record["reordered"] == record["corrupted"] == 0
            assert isinstance(record["messages_per_s"], float) and record["messages_per_s"] > 0

    def test_json_has_every_documented_field(self, echokit_servers: list[str]) -> None:
        """--json gives one object per endpoint with exactly the fields README.md lists
        (and latency_us exactly the percentiles it lists)."""
        fields, percentiles = readme_json_fields()
        tcp, _, udp, certs = echokit_servers
        for record in bench_json([tcp, udp], Path(certs)):
            assert sorted(record) == sorted(fields), (
                f"undocumented: {sorted(set(record) - set(fields))}, "
                f"documented but missing: {sorted(set(fields) - set(record))}"
            )
            latency = record["latency_us"]
            assert isinstance(latency, dict)
            assert sorted(latency) == sorted(percentiles)
            assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]

    def test_foreign_echo_server(self, tmp_path: Path) -> None:
        """A plain byte echo nobody here wrote (socat PIPE) is measured like echokit's."""
        from tests.support import require_tool

        socat = require_tool("socat")
        import subprocess
        import time

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = subprocess.Popen(
            [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "PIPE"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            [record] = bench_json([f"tcp:host=127.0.0.1:port={port}", "--count", "200"], tmp_path)
        finally:
            server.terminate()
            server.wait(timeout=10)
        assert record["error"] is None
        assert record["received"] == record["sent"]
        assert record["lost"] == record["corrupted"] == 0

    def test_lossy_udp_peer_is_reported_with_its_loss(self, tmp_path: Path) -> None:
        """A UDP echo that drops every 5th datagram shows one in five lost."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        port = sock.getsockname()[1]
        stop = threading.Event()
        seen = [0]

        def lossy_echo() -> None:
            while not stop.is_set():
                try:
                    data, address = sock.recvfrom(65536)
                except TimeoutError:
                    continue
                seen[0] += 1
                if seen[0] % 5:
                    sock.sendto(data, address)

        thread = threading.Thread(target=lossy_echo, daemon=True)
        thread.start()
        try:
            [record] = bench_json(
                [f"udp:host=127.0.0.1:port={port}", "--count", "100", "--timeout", "0.05"]
            )
        finally:
            stop.set()
            thread.join(5)
            sock.close()
        sent, received, lost = record["sent"], record["received"], record["lost"]
        assert isinstance(sent, int) and isinstance(received, int) and isinstance(lost, int)
        assert received + lost == sent
        assert seen[0] == sent  # the server saw every datagram the bench says it sent
        assert abs(lost - sent / 5) <= 2, (sent, lost)
        assert record["duplicated"] == record["corrupted"] == 0

    def test_unreachable_endpoint_is_reported_then_fails(self, echokit_servers: list[str]) -> None:
        """A dead endpoint gets an error row, the others are still measured, and exit is 1."""
        tcp, _, _, certs = echokit_servers
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead = f"tcp:host=127.0.0.1:port={probe.getsockname()[1]}"
        probe.close()
        records = bench_json([dead, tcp], Path(certs), status=1)
        assert records[0]["error"] is not None and "refused" in str(records[0]["error"])
        assert records[1]["error"] is None
        table = run_echokit(["bench", dead, tcp, *QUICK], cert_dir=Path(certs), timeout=120)
        lines = table.stdout.decode().splitlines()
        assert table.returncode == 1
        assert f"echokit: error: could not measure {dead}" in table.stderr.decode()
        # the error row does not stretch the table's columns: its text wraps within them
        assert lines[2].startswith(dead) and "error: connection refused" in lines[2]
        measured = next(line for line in lines if line.startswith(tcp))
        # the errors column last, or just before the client-bound mark (a closed-loop
        # client that used ~all of a CPU, which a busy machine makes likely)
        cells = measured.split()
        assert cells[-1] == "0/0/0/0" or cells[-2:] == ["0/0/0/0", "*"], lines[:5]
        assert lines[0].split()[1:4] == ["conn", "ms", "p50"], lines[0]
        assert max(len(line) for line in lines[: lines.index("")]) <= 120, lines

    def test_bad_size_is_a_one_line_error(self) -> None:
        """--size must be a size: exit 2, one line naming the accepted forms."""
        result = run_echokit(["bench", "tcp:host=127.0.0.1:port=1", "--size", "12x"])
        assert result.returncode == 2
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and "(64, 1k, 64k, 1m)" in lines[0]
        result = run_echokit(["bench", "tcp:host=127.0.0.1:port=1", "--size", "8"])
        assert result.returncode == 2
        assert "at least 20 bytes" in result.stderr.decode()


class CompareCommandTests:
    def test_table_has_every_transport(self, tmp_path: Path) -> None:
        """echokit compare measures all five transports in one table, and says its mode."""
        result = run_echokit(["compare", *QUICK], cert_dir=tmp_path, timeout=120)
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        rows = [line for line in out.splitlines() if ":host=" in line or "unix:path=" in line]
        kinds = [row.split(":", 1)[0] for row in rows if "  " in row and "error" not in row]
        for kind in ("tcp", "unix", "ssl", "udp"):
            assert kind in kinds, out
        assert "tcp6" in kinds or "tcp6 skipped" in out
        assert "mode: server and clients in this process, one reactor" in out
        assert "latency: 10 rounds per transport taking turns (tcp, " in out
        assert "0/0/0/0" in out

    def test_server_process_json_save_baseline_plot(self, tmp_path: Path) -> None:
        """
        --server-process runs the server on the reactor chosen for the clients (here
        after the command); --save then --baseline shows changes; --plot writes a PNG.
        """
        saved, chart = tmp_path / "run.json", tmp_path / "latency.png"
        first = run_echokit(
            [
                *("compare", "tcp", "udp", "--server-process", "--reactor", "asyncio"),
                *("--save", str(saved), *QUICK),
            ],
            cert_dir=tmp_path / "certs",
            timeout=120,
        )
        assert first.returncode == 0, first.stderr.decode()
        out = first.stdout.decode()
        assert "mode: server in a child process (echokit --reactor asyncio serve)" in out, out
        assert "twisted.internet.asyncioreactor" in out, out
        assert [r["transport"] for r in json.loads(saved.read_text())["results"]] == ["tcp", "udp"]
        second = run_echokit(
            ["compare", "tcp", "udp", "--baseline", str(saved), "--plot", str(chart), *QUICK],
            cert_dir=tmp_path / "certs",
            timeout=120,
        )
        out = second.stdout.decode()
        assert second.returncode == 0, second.stderr.decode()
        assert json.loads(saved.read_text())["mode"].startswith("server in a child process")
        assert "change against the baseline" in out
        assert "not in the baseline" not in out
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_plot_without_matplotlib_says_how_to_get_it(self, tmp_path: Path) -> None:
        """Without matplotlib, --plot fails in one line naming echokit[plot]."""
        import subprocess
        import sys

        code = (
            "import sys; sys.modules['matplotlib'] = None; "
            "from echokit.cli import entry; sys.argv = ['echokit'] + sys.argv[1:]; entry()"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "compare",
                "udp",
                "--plot",
                str(tmp_path / "x.png"),
                *QUICK,
            ],
            capture_output=True,
            timeout=120,
            env={"ECHOKIT_CERT_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert result.returncode == 2, result.stderr.decode()
        assert "pip install 'echokit[plot]'" in result.stderr.decode()
        assert result.stdout == b"", "refused before measuring, not after"


def _result(endpoint: str, **fields: object) -> EndpointResult:
    result = EndpointResult(endpoint, endpoint.split(":", 1)[0], size=64, connections=4)
    result.histogram.record_all([30_000, 45_000, 1_234_567])
    result.latency_us = {"p50": 30.0, "p90": 45.0, "p99": 1234.6, "p99.9": 1234.6, "max": 1234.6}
    result.connect_ms, result.messages_per_s, result.mb_per_s = 0.12, 123_456.0, 7.9
    for name, value in fields.items():
        setattr(result, name, value)
    return result


#: What compare measures: its unix socket lives in a long temporary path.
COMPARE_LIKE = [
    "tcp:host=127.0.0.1:port=40123",
    "tcp6:host=\\:\\:1:port=40124",
    "unix:path=/tmp/echokit-compare-k2j3h4g5/echo.sock",
    "ssl:host=localhost:port=40125",
    "udp:host=127.0.0.1:port=40126",
]


class TableTests:
    """bench and compare tables fit a 120-column terminal; --wide shows every column."""

    def test_default_table_fits_120_columns(self) -> None:
        """Compare-like endpoints and an error row: no line over 120 columns, units defined."""
        results = [_result(e, tls_handshake_ms=1.5) for e in COMPARE_LIKE]
        results.append(
            _result(
                "tcp:host=127.0.0.1:port=1",
                error="connection refused by tcp:host=127.0.0.1:port=1: is an echo server "
                "listening there? " + "and a long explanation " * 6,
            )
        )
        table = render_table(results)
        lines = table.splitlines()
        assert max(len(line) for line in lines) <= 120, table
        assert "MB/s = 10^6 bytes" in table
        error_rows = [i for i, line in enumerate(lines) if "error: connection refused" in line]
        assert len(error_rows) == 1
        # the error row is wrapped within the table, continued under its first column's end
        continued = lines[error_rows[0] + 1]
        assert continued.startswith(" " * 20) and "long explanation" in continued, table

    def test_times_floor_column_where_a_floor_was_measured(self) -> None:
        """
        Rows measured beside a floor (compare's rounds) get p50 over the floor's p50, and
        the legend says what it is; without a floor the column and its legend are left out.
        """
        floor = {"p50": 12.0, "p99": 20.0}
        results = [_result(e, latency_floor_us=floor) for e in COMPARE_LIKE]
        table = render_table(results)
        header, _, first, *_ = table.splitlines()
        assert "x floor" in header and "2.50x" in first, table
        assert "x floor = p50 over the floor's p50" in table
        plain = render_table([_result(e) for e in COMPARE_LIKE])
        assert "x floor" not in plain

    def test_floor_that_moved_is_warned_of(self) -> None:
        """
        Under the table: the floor's p50 and its range over the rounds; a warning when its
        slowest round was over 1.2x its quickest (the machine's speed moved), none when not.
        """
        still = _result(
            COMPARE_LIKE[0],
            latency_floor_us={"p50": 8.1, "p99": 20.0},
            latency_floor_rounds_us=[8.0, 8.2, 8.1],
        )
        text = render_environment({}, [still], "in this process")
        assert "floor: p50 8.1 us, p99 20.0 us (its p50 round by round: 8.0 to 8.2 us)" in text
        assert "warning" not in text
        moved = _result(
            COMPARE_LIKE[0],
            latency_floor_us={"p50": 8.4, "p99": 20.0},
            latency_floor_rounds_us=[8.0, 12.4, 8.2],
        )
        text = render_environment({}, [moved], "in this process")
        assert "warning: the machine's own round trip moved during this run" in text
        assert "1.55x its quickest" in text

    def test_wide_table_has_every_percentile(self) -> None:
        """--wide adds p90 and p99.9 and the full endpoint strings."""
        results = [_result(e) for e in COMPARE_LIKE]
        wide = render_table(results, wide=True)
        assert "p90 us" in wide and "p99.9 us" in wide
        assert COMPARE_LIKE[2] in wide
        assert "p90 us" not in render_table(results)

    def test_plot_legend_and_picture_say_what_was_measured(self, tmp_path: Path) -> None:
        """The chart's legend names each endpoint once; the picture gives size, connections, mode."""
        matplotlib = pytest.importorskip("matplotlib")
        chart = tmp_path / "chart.svg"
        results = [_result(e) for e in COMPARE_LIKE[:2]]
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            plot(chart, results, "clients in this process")
        svg = chart.read_text()
        for endpoint in COMPARE_LIKE[:2]:
            kind = endpoint.split(":", 1)[0]
            assert f"{kind}: {kind}:" not in svg
        assert "64-byte messages" in svg
        assert "4 connections" in svg
        assert "clients in this process" in svg


class DatagramSizeTests:
    """A --size no datagram can carry: refused before anything runs, or left out."""

    @pytest.mark.parametrize(
        ("args", "named"),
        [
            (["compare", "udp", "--size", "100000"], "udp"),
            (["compare", "tcp", "quic-dgram", "--size", "5000"], "quic-dgram"),
            (["bench", "udp:host=127.0.0.1:port=9", "--size", "70000"], "udp:host=127.0.0.1"),
            (["bench", "quic:host=127.0.0.1:port=9:datagram=yes", "--size", "2k"], "quic"),
        ],
    )
    def test_named_transport_refused(self, args: list[str], named: str, tmp_path: Path) -> None:
        """
        One line naming the endpoint, the limit and the flag; exit 2; nothing measured
        (a 100 KB udp message crashed compare with an internal error; 5,000-byte QUIC
        datagrams hung it).
        """
        result = run_echokit([*args, "--count", "5"], cert_dir=tmp_path, timeout=60)
        assert result.returncode == 2, result
        [line] = result.stderr.decode().strip().splitlines()
        assert named in line and "--size" in line and "at most" in line, line
        assert result.stdout == b""

    def test_default_set_leaves_them_out(self, tmp_path: Path) -> None:
        """compare with no transport named and 70 KB messages: the others measured, udp
        and quic-dgram left out with a line each saying why."""
        result = run_echokit(
            ["compare", "--size", "70000", "--count", "3", "--warmup", "0", "--json"],
            cert_dir=tmp_path,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode()
        transports = [json.loads(line)["transport"] for line in result.stdout.splitlines()]
        assert "tcp" in transports and "udp" not in transports
        assert "quic-dgram" not in transports
        stderr = result.stderr.decode()
        assert "udp skipped: a UDP datagram over IPv4 carries at most 65,507 bytes" in stderr
