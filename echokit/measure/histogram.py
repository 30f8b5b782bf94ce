"""
A latency histogram that keeps its precision at the tail (HdrHistogram's design).

Values (nanoseconds, or any positive integers) fall into log-linear buckets: each power
of two is split into C{2**precision_bits} equal sub-buckets, so every recorded value is
known to within 1 part in C{2**precision_bits} (0.8 % with the default 7 bits), from
microseconds to minutes, in a few thousand buckets. Percentiles are read off the bucket
counts; the exact maximum and minimum are kept too. Pure Python, no I/O.

    >>> h = LatencyHistogram()
    >>> for v in range(1, 10_001):
    ...     h.record(v * 1000)
    >>> h.count, h.max
    (10000, 10000000)
    >>> abs(h.percentile(50) - 5_000_000) / 5_000_000 < 0.01
    True
"""

from __future__ import annotations

from collections.abc import Iterable


class LatencyHistogram:
    """Counts of values in log-linear buckets; see the module docstring."""

    def __init__(self, precision_bits: int = 7) -> None:
        self.precision_bits = precision_bits
        self._sub = 1 << precision_bits
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0
        self.min = 0

    def _index(self, value: int) -> int:
        if value < self._sub:
            return value  # small values are exact
        shift = value.bit_length() - self.precision_bits - 1
        return (shift + 1) * self._sub + (value >> shift) - self._sub

    def _lowest(self, index: int) -> int:
        """The smallest value that falls in bucket C{index}."""
        if index < self._sub:
            return index
        shift = index // self._sub - 1
        return (index % self._sub + self._sub) << shift

    def _highest(self, index: int) -> int:
        """The largest value that falls in bucket C{index}."""
        return self._lowest(index + 1) - 1

    def record(self, value: int) -> None:
        """Count one value (clamped to at least 0)."""
        value = max(0, int(value))
        index = self._index(value)
        self._counts[index] = self._counts.get(index, 0) + 1
        if self.count == 0 or value < self.min:
            self.min = value
        self.max = max(self.max, value)
        self.count += 1
        self.total += value

    def record_all(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> int:
        """
        The value at percentile C{p} (0 to 100): the middle of its bucket, within the
        recorded minimum and maximum; 0 if nothing was recorded.
        """
        if not self.count:
            return 0
        rank = max(1, round(p / 100 * self.count + 0.4999999))
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                middle = (self._lowest(index) + self._highest(index)) // 2
                return min(max(middle, self.min), self.max)
        return self.max

    def percentiles(self, ps: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, int]:
        """Several percentiles at once, keyed like C{"p99.9"}, plus C{"max"}."""
        out = {f"p{p:g}": self.percentile(p) for p in ps}
        out["max"] = self.max
        return out

    def cumulative(self) -> list[tuple[int, float]]:
        """(value, fraction of values at or below it) per bucket, for plotting."""
        points, seen = [], 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            points.append((self._highest(index), seen / self.count))
        return points
