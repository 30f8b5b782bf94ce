"""Tests for L{echokit.runtime.policy}: the sans-IO limits, with plain numbers for time."""

from echokit.runtime.policy import (
    ConnectionLimiter,
    EchoBudget,
    EveryInterval,
    RepeatGuard,
    TokenBucket,
)


class ConnectionLimiterTests:
    def test_total_limit(self) -> None:
        """Connections beyond max_connections are refused until one is released."""
        limiter = ConnectionLimiter(max_connections=2)
        assert [limiter.admit(f"10.0.0.{i}") for i in range(3)] == [None, None, "total"]
        limiter.release("10.0.0.0")
        assert limiter.admit("10.0.0.9") is None
        assert limiter.refused["total"] == 1

    def test_per_peer_limit(self) -> None:
        """Each peer is held to max_per_peer; other peers are unaffected."""
        limiter = ConnectionLimiter(max_per_peer=2)
        assert [limiter.admit("a") for _ in range(3)] == [None, None, "per-peer"]
        assert limiter.admit("b") is None
        limiter.release("a")
        assert limiter.admit("a") is None

    def test_zero_means_no_limit(self) -> None:
        """Limits of 0 admit everything."""
        limiter = ConnectionLimiter()
        assert all(limiter.admit("a") is None for _ in range(10_000))

    def test_released_peers_are_forgotten(self) -> None:
        """Memory for per-peer counts does not grow with peers that have left."""
        limiter = ConnectionLimiter(max_per_peer=5)
        for i in range(1000):
            limiter.admit(str(i))
            limiter.release(str(i))
        assert len(limiter.per_peer) == 0
        assert limiter.open == 0


class SheddingTests:
    def test_full_limiter_sheds_the_newest_of_the_peer_holding_most(self) -> None:
        """
        At the total, a newcomer from an address holding at least two fewer than the
        address holding the most takes that address's newest connection, which is
        counted out at once; its later release is ignored.
        """
        limiter = ConnectionLimiter(max_connections=4)
        for key in ("a1", "a2", "a3"):
            assert limiter.admit("A", key) is None
        assert limiter.admit("B", "b1") is None
        assert limiter.shed_for("C") == "a3"
        assert limiter.admit("C", "c1") is None
        assert (limiter.open, limiter.per_peer["A"], limiter.shed) == (4, 2, 1)
        limiter.release("A", "a3")  # the shed connection's close: counted out already
        assert (limiter.open, limiter.per_peer["A"]) == (4, 2)
        assert limiter.shed_for("A") is None  # A holds the most: nothing to take
        assert limiter.admit("A", "a4") == "total"

    def test_no_shedding_below_the_total_or_between_equals(self) -> None:
        """Below the total, or against an address holding just one more, nothing is shed."""
        limiter = ConnectionLimiter(max_connections=3)
        assert limiter.admit("A", "a1") is None
        assert limiter.shed_for("B") is None
        assert limiter.admit("B", "b1") is None
        assert limiter.admit("A", "a2") is None
        assert limiter.shed_for("B") is None


class EchoBudgetTests:
    def test_per_connection_size(self) -> None:
        """A connection holding more than its echo buffer stops reading; others do not."""
        budget = EchoBudget(per_connection=4, total=0)
        assert budget.hold("a", 4) is True
        assert budget.hold("a", 5) is False
        assert budget.hold("b", 4) is True

    def test_past_the_total_one_connection_goes_on(self) -> None:
        """
        Past the total, the first connection over it goes on (up to its own size) and
        the others wait; once it is done they are all named to read again.
        """
        budget = EchoBudget(per_connection=10, total=6)
        assert [budget.hold(k, 3) for k in "abc"] == [True, True, True]
        assert budget.exempt == "c"  # "c" took the total past 6: it goes on
        assert [budget.hold("a", 4), budget.hold("c", 9)] == [False, True]
        assert budget.release("b") == []  # still over, and "c" still going on
        assert budget.release("c") == ["a"]
        assert budget.held == 4
        assert budget.exempt is None

    def test_accounting_and_peak(self) -> None:
        """What is held is the sum of what each last reported; the peak is remembered."""
        budget = EchoBudget(per_connection=0, total=0)
        budget.hold("a", 5)
        budget.hold("b", 3)
        budget.hold("a", 1)
        assert (budget.held, budget.peak) == (4, 8)
        budget.release("a")
        budget.release("a")  # twice (drained, then closed): counted once
        assert budget.held == 3


class TokenBucketTests:
    def test_burst_then_rate(self) -> None:
        """A full bucket gives its burst at once, then tokens at the refill rate."""
        bucket = TokenBucket(burst=3, rate=2.0)
        assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
        assert bucket.take(0.5)
        assert not bucket.take(0.5)
        assert bucket.take(1.0)

    def test_refill_is_capped_at_burst(self) -> None:
        """A long quiet time refills no more than the burst."""
        bucket = TokenBucket(burst=2, rate=100.0)
        bucket.take(0.0)
        assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]


class RepeatGuardTests:
    def test_loop_is_broken_within_the_burst(self) -> None:
        """
        Two servers bouncing one datagram: each sees the same datagram from the same
        source; the guard drops it after the burst, which ends the loop.
        """
        a, b = RepeatGuard(burst=32, rate=10.0), RepeatGuard(burst=32, rate=10.0)
        now, bounced = 0.0, 0
        for _ in range(1000):
            now += 20e-6  # a loop on loopback turns in tens of microseconds
            if not a.allow(("127.0.0.1", 2000), b"spoof", now):
                break
            bounced += 1
            if not b.allow(("127.0.0.1", 1999), b"spoof", now):
                break
            bounced += 1
        assert bounced < 100

    def test_several_alternating_datagrams_are_caught(self) -> None:
        """Two (or more, up to the window) spoofed datagrams looping at once also die."""
        for in_flight in (2, 10, 64):
            a, b = RepeatGuard(burst=32, rate=10.0), RepeatGuard(burst=32, rate=10.0)
            alive = {b"spoof %d" % i for i in range(in_flight)}
            now, bounced = 0.0, 0
            while alive and bounced < 100_000:
                for datagram in sorted(alive):
                    now += 20e-6
                    if not a.allow(("127.0.0.1", 2000), datagram, now) or not b.allow(
                        ("127.0.0.1", 1999), datagram, now
                    ):
                        alive.discard(datagram)
                    bounced += 2
            assert not alive, in_flight
            assert bounced < 100 * in_flight + 100, (in_flight, bounced)

    def test_distinct_datagrams_are_never_limited(self) -> None:
        """A benchmark's numbered datagrams pass however fast they come."""
        guard = RepeatGuard(burst=1, rate=0.0)
        assert all(guard.allow(("127.0.0.1", 5000), b"%d" % i, 0.0) for i in range(100_000))

    def test_slow_repeats_pass(self) -> None:
        """The same datagram repeated slower than the rate keeps being answered."""
        guard = RepeatGuard(burst=2, rate=10.0)
        assert all(guard.allow(("h", 5000), b"ping", i * 0.2) for i in range(100))

    def test_sources_are_independent(self) -> None:
        """One source's repeats do not limit another's."""
        guard = RepeatGuard(burst=1, rate=0.0)
        for _ in range(3):
            guard.allow(("h", 1), b"x", 0.0)
        assert guard.allow(("h", 2), b"x", 0.0)
        assert guard.dropped == 1

    def test_zero_burst_disables(self) -> None:
        """burst=0 turns the guard off."""
        guard = RepeatGuard(burst=0, rate=0.0)
        assert all(guard.allow(("h", 1), b"x", 0.0) for _ in range(1000))

    def test_memory_is_bounded(self) -> None:
        """Tracking many sources never holds more than max_sources of them."""
        guard = RepeatGuard(burst=1, rate=0.0, max_sources=100)
        for port in range(10_000):
            guard.allow(("h", port), b"x", 0.0)
        assert len(guard._recent) <= 100
        assert len(guard._buckets) <= 100


class EveryIntervalTests:
    def test_once_per_interval_with_count(self) -> None:
        """The first event logs; the rest are counted until the interval passes."""
        gate = EveryInterval(5.0)
        results = [gate.ready(t) for t in (0.0, 1.0, 2.0, 4.9, 5.0, 5.1, 20.0)]
        assert results == [0, None, None, None, 3, None, 1]
