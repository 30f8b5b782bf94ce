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

from collections import Counter
from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

#: The values recorded, for the documentation of every C{histogram} field.
UNIT = "nanoseconds"
#: The smallest and largest values kept apart (a larger value counts as the largest).
LOWEST = 1
HIGHEST = 3600 * 10**9
#: Decimal digits every value is kept to.
DIGITS = 3


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
        if len(self._pending) >= 65536:
            self._flush()

    def record_corrected(self, value: int, expected_interval: int) -> None:
        """
        Count one value, and the values that coordinated omission hid: if C{value}
        exceeds the C{expected_interval} between sends, also C{value - interval},
        C{value - 2 * interval}, ... down to the interval (HdrHistogram's correction).
        """
        self.hdr.record_corrected_value(min(max(0, int(value)), HIGHEST), int(expected_interval))

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
        return float(self.hdr.get_mean_value())

    def percentile(self, p: float) -> int:
        """The value at percentile C{p} (0 to 100), as HdrHistogram reads it; 0 if empty."""
        return int(self.hdr.get_value_at_percentile(p)) if self.count else 0

    def percentiles(self, ps: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, int]:
        """Several percentiles at once, keyed like C{"p99.9"}, plus C{"max"}."""
        wanted = [float(p) for p in ps]
        values = self.hdr.get_percentile_to_value_dict(wanted) if self.count else {}
        out = {f"p{p:g}": int(values.get(p, 0)) for p in wanted}
        out["max"] = self.max
        return out

    def cumulative(self) -> list[tuple[int, float]]:
        """(value, fraction of values at or below it) per recorded bucket, for plotting."""
        points, seen, total = [], 0, self.count
        for item in self.hdr.get_recorded_iterator():
            seen += item.count_at_value_iterated_to
            points.append((int(item.value_iterated_to), seen / total))
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
