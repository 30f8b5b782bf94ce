"""
Latency histograms that add exactly: HdrHistogram (the C{hdrhistogram} package).

Every round trip is recorded in B{nanoseconds} into an HdrHistogram with 3 significant
digits (each value known to within 0.1 %) from 1 ns to an hour. Two histograms add
exactly, bucket by bucket, so the percentiles of histograms merged from several processes
or hosts are the percentiles of all their samples: never an average of percentiles.

A histogram travels as HdrHistogram's standard compressed base64 form (V2, the
C{HISTF...} strings), the form HdrHistogram's Java, C, Go and Rust libraries and its
tools (HistogramLogProcessor, HistogramLogAnalyzer) read. Nanoseconds are also those
tools' default unit (they show milliseconds by dividing by 10^6).

    >>> h = LatencyHistogram()
    >>> for v in range(1, 10_001):
    ...     h.record(v * 1000)
    >>> h.count
    10000
    >>> h.percentile(50)
    5001215
    >>> LatencyHistogram.decode(h.encode()).percentile(50)
    5001215
"""

from __future__ import annotations

import ctypes
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

#: The values recorded, for the documentation of every C{histogram} field.
UNIT = "nanoseconds"
#: The smallest and largest values kept apart (a larger value counts as the largest).
LOWEST = 1
HIGHEST = 3600 * 10**9
#: Decimal digits every value is kept to.
DIGITS = 3
#: array typecodes of unsigned counts by their size in bytes.
_TYPECODES = {2: "H", 4: "I", 8: "Q"}


class LatencyHistogram:
    """
    Round-trip times in nanoseconds; see the module docstring.

    @param hdr: an C{hdrh.histogram.HdrHistogram} to wrap (a new, empty one if omitted).
    """

    def __init__(self, hdr: Any = None) -> None:
        self._hdr = hdr if hdr is not None else HdrHistogram(LOWEST, HIGHEST, DIGITS)
        # Values not yet counted: the package's record_value costs ~4 us in Python, an
        # append ~0.05 us, so the hot path appends and the counting happens in batches.
        self._pending: list[int] = []
        self._tap: list[int] | None = None

    @property
    def hdr(self) -> Any:
        """The C{hdrh.histogram.HdrHistogram} holding every value recorded so far."""
        if self._pending:
            self._flush()
        return self._hdr

    def _flush(self) -> None:
        # Another thread may be appending (the blocking latency probe): take a prefix and
        # delete it, both atomic under the GIL, rather than swap the list under its feet.
        pending = self._pending
        taken = len(pending)
        values = [min(max(0, int(value)), HIGHEST) for value in pending[:taken]]
        del pending[:taken]
        hdr = self._hdr
        if hdr.unit_magnitude:  # a decoded histogram whose lowest value is above 1
            for value in values:
                hdr.record_value(value)
            return
        # HdrHistogram's counts index (hdrh's _counts_index_for, for a unit magnitude of 0):
        # bucket b = bits above the sub-bucket range, index = ((b + 1) << half) + (v >> b) - half.
        half = hdr.sub_bucket_half_count_magnitude
        mask, base = hdr.sub_bucket_mask, hdr.sub_bucket_half_count
        shift = half + 1
        counts = hdr.counts
        for index, count in Counter(
            (((b := (v | mask).bit_length() - shift) + 1) << half) + (v >> b) - base for v in values
        ).items():
            counts[index] += count
        hdr.total_count += len(values)
        hdr.min_value = min(hdr.min_value, *values)
        hdr.max_value = max(hdr.max_value, *values)

    def record(self, value: int) -> None:
        """Count one value in nanoseconds (clamped to 0 .. L{HIGHEST})."""
        self._pending.append(value)
        if self._tap is not None:
            self._tap.append(value)
        if len(self._pending) >= 65536:
            self._flush()

    def since_last(self) -> Callable[[], LatencyHistogram]:
        """
        A function that returns, at each call, a histogram of the values recorded since
        its previous call (the first: since C{since_last} was called). For live
        intervals; safe while another thread records.
        """
        tap: list[int] = []
        self._tap = tap

        def take() -> LatencyHistogram:
            taken = len(tap)
            interval = LatencyHistogram()
            interval.record_all(tap[:taken])
            del tap[:taken]
            return interval

        return take

    def stop_since_last(self) -> None:
        """Stop keeping values for L{since_last}'s function (which then returns empties)."""
        self._tap = None

    def record_corrected(self, value: int, expected_interval: int) -> None:
        """
        Count one value, and the values that coordinated omission hid: if C{value}
        exceeds the C{expected_interval} between sends, also C{value - interval},
        C{value - 2 * interval}, ... down to the interval (HdrHistogram's correction).
        """
        self.hdr.record_corrected_value(min(max(0, int(value)), HIGHEST), int(expected_interval))

    def record_counts(self, counts: Mapping[int, int]) -> None:
        """Count each value (ns) of C{counts} as many times as it says."""
        hdr = self.hdr
        for value, count in counts.items():
            if count > 0:
                hdr.record_value(min(max(0, int(value)), HIGHEST), count)

    def record_all(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def add(self, other: LatencyHistogram) -> None:
        """Add C{other}'s counts to this histogram's, exactly."""
        self.hdr.add(other.hdr)

    @property
    def count(self) -> int:
        return int(self.hdr.get_total_count())

    @property
    def max(self) -> int:
        """The largest value recorded, to HdrHistogram's precision (0 if none)."""
        return int(self.hdr.get_max_value())

    @property
    def min(self) -> int:
        """The smallest value recorded, to HdrHistogram's precision (0 if none)."""
        return int(self.hdr.get_min_value()) if self.count else 0

    @property
    def mean(self) -> float:
        """The mean, each value taken as the middle of its bucket (HdrHistogram's way)."""
        total = self.count
        if not total:
            return 0.0
        hdr = self.hdr
        middle = hdr._hdr_median_equiv_value
        weighted = sum(c * middle(hdr.get_value_from_index(i)) for i, c in self._nonzero())
        return float(weighted / total)

    def _nonzero(self) -> list[tuple[int, int]]:
        """(counts index, count) of every bucket holding values, in order."""
        counts = self.hdr.counts
        # Reading the ctypes array item by item costs ~1 us each: copy it out at once.
        words = array(_TYPECODES[ctypes.sizeof(counts._type_)], bytes(counts))
        return [(i, c) for i, c in enumerate(words) if c]

    def percentile(self, p: float) -> int:
        """The value at percentile C{p} (0 to 100), as HdrHistogram reads it; 0 if empty."""
        return self.percentiles([p])[f"p{float(p):g}"]

    def percentiles(self, ps: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, int]:
        """
        Several percentiles at once, keyed like C{"p99.9"}, plus C{"max"}: the same values
        as hdrh's C{get_value_at_percentile} (the highest value of the bucket where the
        count reaches the percentile), read from the buckets that hold values only, so
        that reporting an interval does not hold the interpreter for tens of ms.
        """
        wanted = [float(p) for p in ps]
        out = dict.fromkeys((f"p{p:g}" for p in wanted), 0)
        total = self.count
        if total:
            hdr = self.hdr
            targets = sorted((max(int(min(p, 100.0) * total / 100 + 0.5), 1), p) for p in wanted)
            seen, next_target = 0, 0
            for index, count in self._nonzero():
                seen += count
                while next_target < len(targets) and seen >= targets[next_target][0]:
                    p = targets[next_target][1]
                    value = hdr.get_value_from_index(index)
                    out[f"p{p:g}"] = int(
                        hdr.get_highest_equivalent_value(value)
                        if p
                        else hdr.get_lowest_equivalent_value(value)
                    )
                    next_target += 1
                if next_target == len(targets):
                    break
        out["max"] = self.max
        return out

    def fraction_above(self, value: int) -> float:
        """
        The fraction of values recorded above C{value} (ns), counting the buckets that
        lie wholly above it: how much of this distribution is slower than, say, another
        run's p99.
        """
        total = self.count
        if not total:
            return 0.0
        hdr = self.hdr
        above = sum(c for i, c in self._nonzero() if hdr.get_value_from_index(i) > value)
        return above / total

    def cumulative(self) -> list[tuple[int, float]]:
        """(value, fraction of values at or below it) per recorded bucket, for plotting."""
        hdr = self.hdr
        points, seen, total = [], 0, self.count
        for index, count in self._nonzero():
            seen += count
            value = hdr.get_highest_equivalent_value(hdr.get_value_from_index(index))
            points.append((int(value), seen / total))
        return points

    def encode(self) -> str:
        """HdrHistogram's standard compressed base64 form (V2, C{HISTF...})."""
        return str(self.hdr.encode().decode("ascii"))

    @classmethod
    def decode(cls, text: str) -> LatencyHistogram:
        """
        Read L{encode}'s form (from echokit or any HdrHistogram library).

        @raise ValueError: if C{text} is not an encoded HdrHistogram.
        """
        try:
            if not isinstance(text, str) or not text.startswith("HIST"):
                raise ValueError
            return cls(HdrHistogram.decode(text.encode("ascii")))
        except Exception as e:  # binascii, zlib, hdrh's HdrCookieException, HdrLengthException...
            raise ValueError("not an encoded HdrHistogram") from e
