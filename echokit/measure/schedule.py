"""
The fixed-rate schedule: when each message of an open-loop run is due, and where.

Sans-IO (no Twisted, no clock of its own): L{Schedule} takes times and hands out message
numbers; L{echokit.measure.openloop} drives it on a reactor. Also the C{--rate} parser,
which the command line uses before any Twisted is imported.

    >>> s = Schedule(rate=1000, connections=4, start_ns=0, total=10)
    >>> list(s.due(2_500_000))
    [0, 1, 2]
    >>> s.place(2), s.intended_ns(2)
    ((2, 0), 2000000)
    >>> s.next_ns()
    3000000
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from echokit.errors import InputError

#: Send lag (microseconds, at p99) above which a row is marked client-bound: the client
#: could not keep its schedule. Twice epoll's timer resolution, which alone makes ~1 ms.
CLIENT_BOUND_LAG_US = 2000
#: The highest rate accepted, msg/s.
MAX_RATE = 10_000_000

_RATE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_rates(text: str) -> tuple[float, ...]:
    """
    Rates in msg/s from C{--rate}'s text: one, or a comma-separated list, each a number
    with an optional k (thousand) or m (million).

        >>> parse_rates("2000"), parse_rates("50k"), parse_rates("1k,2.5k,1m")
        ((2000.0,), (50000.0,), (1000.0, 2500.0, 1000000.0))

    @raise InputError: on anything else, zero, negative, or above L{MAX_RATE}.
    """
    rates = []
    for part in text.split(","):
        item = part.strip().lower()
        unit = item[-1:] if item[-1:] in ("k", "m") else ""
        number = item[: len(item) - len(unit)]
        try:
            value = float(number) * _RATE_UNITS[unit]
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0 or value > MAX_RATE:
            raise InputError(
                f"--rate '{part.strip()}' is not a rate: give messages per second above 0 "
                f"and at most 10m, like 2000, 50k or 1m, or a list like 1k,10k,50k"
            )
        rates.append(value)
    return tuple(rates)


def format_rate(rate: float) -> str:
    """A rate as short text: C{50k}, C{1m}, C{2500}."""
    for unit, scale in (("m", 1_000_000), ("k", 1_000)):
        if rate >= scale and rate % (scale // 100 or 1) == 0:
            return f"{rate / scale:g}{unit}"
    return f"{rate:g}"


class Schedule:
    """
    When each message of a fixed-rate run is meant to be sent, and on which connection.

    Message C{k} (counting from 0 over all connections) is due at C{start_ns + k / rate}
    seconds; it goes on connection C{k % connections} with sequence number
    C{k // connections}. L{due} hands out each number once, in order.
    """

    def __init__(self, rate: float, connections: int, start_ns: int, total: int) -> None:
        self.rate = rate
        self.connections = connections
        self.start_ns = start_ns
        self.total = total
        self.interval_ns = 1e9 / rate
        self.taken = 0

    def intended_ns(self, index: int) -> int:
        """The time message C{index} is meant to be sent."""
        return self.start_ns + int(index * self.interval_ns)

    def place(self, index: int) -> tuple[int, int]:
        """(connection, sequence number) of message C{index}."""
        return index % self.connections, index // self.connections

    def index(self, connection: int, seq: int) -> int:
        """The message number of sequence number C{seq} on C{connection}."""
        return seq * self.connections + connection

    def first_at(self, when_ns: int) -> int:
        """The number of the first message due at or after C{when_ns}."""
        return max(0, math.ceil((when_ns - self.start_ns) / self.interval_ns))

    def due(self, now_ns: int) -> range:
        """The messages due by C{now_ns} and not handed out yet; they are now taken."""
        upto = min(self.total, math.floor((now_ns - self.start_ns) / self.interval_ns) + 1)
        first, self.taken = self.taken, max(self.taken, upto)
        return range(first, self.taken)

    @property
    def finished(self) -> bool:
        return self.taken >= self.total

    def next_ns(self) -> int:
        """When the next message not yet handed out is due."""
        return self.intended_ns(self.taken)

    def batches(self, indices: range) -> Iterable[tuple[int, int, int]]:
        """
        Split consecutive message numbers into one batch per connection:
        (connection, first sequence number, count).

            >>> list(Schedule(1, 3, 0, 100).batches(range(4, 9)))
            [(0, 2, 1), (1, 1, 2), (2, 1, 2)]
        """
        n = self.connections
        for connection in range(n):
            first = indices.start + (connection - indices.start) % n
            if first < indices.stop:
                yield connection, first // n, (indices.stop - 1 - first) // n + 1
