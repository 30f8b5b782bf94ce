"""
Tests for compare's latency in rounds taking turns (L{echokit.measure.interleave}).

The probes are echokit's blocking latency client on real loopback sockets, against an
echo server written here (on the reactor) that notes which connection each message
arrived on, so the order the rounds ran in is seen from the server's side.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet import endpoints, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from echokit.client.connect import ClientOptions
from echokit.measure.bench import BLOCKING_PROBE_MAX, BenchSettings, new_result
from echokit.measure.floor import FloorProbe
from echokit.measure.interleave import described, interleaved_latency, shares
from echokit.transports.certs import CertStore
from echokit.transports.grammar import parse_client
from tests.support import run_echokit


class SharesTests:
    def test_split_exactly(self) -> None:
        """A count is split over the rounds as evenly as whole numbers allow, exactly."""
        assert shares(10, 4) == [2, 3, 2, 3]
        assert shares(30, 3) == [10, 10, 10]
        assert shares(2, 4) == [0, 1, 0, 1]
        assert sum(shares(1001, 7)) == 1001


class DescribedTests:
    def test_says_which_transports_took_turns(self) -> None:
        """
        The line under compare's table names the transports whose rounds took turns
        (every one, ws and quic too) and those measured in one go (udp messages too large
        for the blocking probe).
        """
        text = described(10, ["tcp", "ssl", "quic", "quic-dgram", "ws"], 64)
        assert text == (
            "latency: 10 rounds per transport taking turns (tcp, ssl, quic, quic-dgram, ws, "
            "then again), each transport's round trips in one histogram"
        )
        assert described(10, ["udp"], 1 << 20) == "latency: each transport's in one go"
        assert described(10, ["tcp", "udp"], 1 << 20).endswith("; udp: in one go")
        assert described(1, ["tcp"], 64).endswith("in one go (--rounds 1)")


class _Noting(Protocol):
    """Echo, noting this connection's number in the server's log for every read."""

    def __init__(self, log: list[int], number: int) -> None:
        self.log, self.number = log, number

    def dataReceived(self, data: bytes) -> None:
        self.log.append(self.number)
        self.transport.write(data)  # type: ignore[union-attr]


class _NotingFactory(Factory):
    noisy = False

    def __init__(self) -> None:
        self.log: list[int] = []
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        self.connections += 1
        return _Noting(self.log, self.connections)


def _turns(log: list[int]) -> list[int]:
    """The connections in the order they were served, each stretch counted once."""
    return [n for i, n in enumerate(log) if i == 0 or log[i - 1] != n]


class InterleavedLatencyTests(unittest.TestCase):
    async def _listen(self) -> tuple[_NotingFactory, str]:
        factory = _NotingFactory()
        server = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        port = await server.listen(factory)
        self.addCleanup(port.stopListening)
        return factory, f"tcp:host=127.0.0.1:port={port.getHost().port}"

    async def _two_take_turns(self, settings: BenchSettings, client: str) -> None:
        """
        Two endpoints on one server, 3 rounds: the server sees their connections take
        turns (1, 2, 1, 2, 1, 2); each endpoint's histogram holds all C{settings.count}
        round trips, every message echoed and counted once, measured by C{client}.
        """
        factory, address = await self._listen()
        specs = [parse_client(address), parse_client(address)]
        results = [new_result(spec, settings) for spec in specs]
        options = ClientOptions(CertStore(Path(self.mktemp())))
        done = await interleaved_latency(reactor, specs, options, settings, results, 3)
        assert done == [True, True]
        assert _turns(factory.log) == [1, 2, 1, 2, 1, 2], factory.log
        for result in results:
            assert result.error is None
            assert result.histogram.count == settings.count
            assert result.sent == result.received == settings.count
            assert result.lost == result.duplicated == result.reordered == result.corrupted == 0
            assert result.latency_client == f"{client}, 3 rounds in turn with the others"
        # the floor was measured in the same rounds, and is the same for every endpoint
        # (none for messages over 64 KiB)
        floor = results[0].latency_floor_us
        if settings.size > BLOCKING_PROBE_MAX:
            assert floor is None
        else:
            assert floor is not None and 0 < floor["p50"] <= floor["p99"], floor
        assert results[1].latency_floor_us == floor

    async def test_rounds_take_turns_into_one_histogram(self) -> None:
        """
        Two endpoints, 3 rounds of 10 round trips each by the blocking probe: they take
        turns, and each endpoint's histogram holds all 30 round trips.
        """
        await self._two_take_turns(BenchSettings(count=30), "blocking socket, worker thread")

    async def test_reactor_probes_take_turns_and_stop_at_their_count(self) -> None:
        """
        Messages over the blocking probe's 64 KiB are measured by Twisted connections on
        the reactor (L{ReactorProbe}): they take turns the same way, each round stops at
        its share of the count (31 over 3 rounds) with its last echo back, and every round
        trip is counted once in its endpoint's histogram.
        """
        settings = BenchSettings(count=31, size=100 * 1024)
        await self._two_take_turns(settings, "Twisted client on the reactor")

    async def test_one_dead_endpoint_does_not_stop_the_others(self) -> None:
        """
        An endpoint that refuses the connection gets its error; the one after it is
        measured in full; an endpoint that takes no turns (udp messages too large for a
        blocking socket) is left to be measured on its own, untouched.
        """
        factory, address = await self._listen()
        refused = "tcp:host=127.0.0.1:port=1"
        specs = [parse_client(refused), parse_client(address), parse_client("udp:host=h:port=1")]
        settings = BenchSettings(count=20, size=100 * 1024)
        results = [new_result(spec, settings) for spec in specs]
        options = ClientOptions(CertStore(Path(self.mktemp())))
        done = await interleaved_latency(reactor, specs, options, settings, results, 4)
        assert done == [True, True, False]
        assert results[0].error is not None and refused in results[0].error
        assert results[1].error is None and results[1].histogram.count == 20
        assert results[2].error is None and results[2].histogram.count == 0
        assert factory.connections == 1


class FloorLeftOutTests(unittest.TestCase):
    """Where the floor has nothing to stand beside, it is left out."""

    async def test_no_floor_without_a_transport_beside_it(self) -> None:
        """
        Nothing takes turns (udp too large for a blocking socket): the floor is not
        measured on its own for the whole latency phase (20 s; bounded at 10 here).
        """
        specs = [parse_client("udp:host=127.0.0.1:port=1")]
        settings = BenchSettings(duration=20.0, size=100 * 1024)
        results = [new_result(spec, settings) for spec in specs]
        options = ClientOptions(CertStore(Path(self.mktemp())))
        started = time.monotonic()
        done = await interleaved_latency(reactor, specs, options, settings, results, 4)
        assert done == [False]
        assert time.monotonic() - started < 10
        assert results[0].latency_floor_us is None


class FloorProbeTests(unittest.TestCase):
    """The floor: the blocking client against a plain thread echoing over a socket pair."""

    async def test_every_message_echoed_then_the_thread_ends(self) -> None:
        """
        300 round trips (in two runs, as rounds make them) are each echoed whole and
        recorded once; closing the probe ends its echo thread.
        """
        settings = BenchSettings(count=150, size=1000)
        probe = FloorProbe(ClientOptions(CertStore(Path(self.mktemp()))), settings)
        await threads.deferToThread(probe.open)
        try:
            for _ in range(2):
                await threads.deferToThread(probe.run, 1.0, 150, lambda fraction: None)
        finally:
            probe.close()
        result = probe.result
        assert result.histogram.count == 300
        assert result.sent == result.received == 300
        assert result.lost == result.duplicated == result.reordered == result.corrupted == 0
        assert not [t for t in threading.enumerate() if t.name == "echokit-floor"]


class CompareRoundsTests:
    def test_rounds_with_rate_is_refused(self, tmp_path: Path) -> None:
        """--rounds with --rate: one line naming both, exit 2, nothing measured."""
        result = run_echokit(
            ["compare", "tcp", "--rounds", "3", "--rate", "1k"], cert_dir=tmp_path, timeout=60
        )
        assert result.returncode == 2
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "--rounds" in lines[0] and "--rate" in lines[0], lines
        assert result.stdout == b""

    def test_count_split_over_rounds_and_said(self, tmp_path: Path) -> None:
        """
        compare --count 200 --rounds 4: each transport's latency comes from all 200
        round trips of its 4 rounds (ws's and QUIC datagrams' on the reactor, taking
        turns with the blocking probe's), and the output says how latency was measured.
        """
        transports = ["tcp", "udp", "quic-dgram", "ws"]
        result = run_echokit(
            ["compare", *transports, "--count", "200", "--rounds", "4", "--json"],
            cert_dir=tmp_path,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode()
        records = [json.loads(line) for line in result.stdout.decode().splitlines()]
        assert [r["transport"] for r in records] == transports
        for record in records:
            assert record["latency_samples"] + record["lost"] == 200, record
            assert "4 rounds in turn with the others" in record["latency_client"]
            assert record["latency_floor_us"] == records[0]["latency_floor_us"]
        floor = records[0]["latency_floor_us"]
        assert 0 < floor["p50"] <= floor["p99"] <= floor["max"], floor
        # 50 round trips a round: too few for a round's own p50
        assert records[0]["latency_floor_rounds_us"] == []
        assert all(record["latency_rounds_p50_us"] == [] for record in records)

    def test_no_floor_for_messages_over_64k(self, tmp_path: Path) -> None:
        """
        Messages over 64 KiB get no floor (a blocking client and the echo thread would
        wait on each other once the socket pair's buffers are full): the run does not
        stall on it (its 60 s --timeout would outlast the test's 30 s) and reports none.
        """
        result = run_echokit(
            ["compare", "tcp", "--size", "1m", "--count", "20", "--timeout", "60", "--json"],
            cert_dir=tmp_path,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr.decode()
        record = json.loads(result.stdout)
        assert record["latency_floor_us"] is None and record["latency_samples"] == 20

    def test_floor_in_the_table_only_with_rounds(self, tmp_path: Path) -> None:
        """
        compare's table gives each transport's p50 over the floor's and a line saying what
        the floor was, how fast, and its range over the rounds; with --rounds 1 there is
        no floor (JSON: null).
        """
        result = run_echokit(
            ["compare", "tcp", "unix", "--count", "1200", "--rounds", "4"],
            cert_dir=tmp_path,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr.decode()
        text = result.stdout.decode()
        assert "x floor" in text.splitlines()[0], text
        [line] = [line for line in text.splitlines() if line.startswith("floor: p50 ")]
        assert "plain Python thread echoing over a unix socket pair" in line
        assert "(its p50 round by round: " in line  # 300 round trips a round
        alone = run_echokit(
            ["compare", "tcp", "--count", "100", "--rounds", "1", "--json"],
            cert_dir=tmp_path,
            timeout=120,
        )
        assert alone.returncode == 0, alone.stderr.decode()
        assert json.loads(alone.stdout)["latency_floor_us"] is None
