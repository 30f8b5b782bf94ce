"""
What a measurement is asked and what it found: L{BenchSettings} and L{EndpointResult}.

Kept apart from L{echokit.measure.bench} (which measures, on Twisted) so that what only
reads results, C{echokit merge} and the reports, starts without importing Twisted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

from echokit.echo import MAX_QUIC_DATAGRAM_PAYLOAD, MAX_UDP_PAYLOAD_IPV4, MAX_UDP_PAYLOAD_IPV6
from echokit.errors import InputError
from echokit.measure.cpu import CpuUse
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.integrity import MIN_SIZE, MessageChecker

#: Transports whose lost messages are a measurement, not a broken echo.
LOSSY_TRANSPORTS = frozenset({"udp", "udp6", "quic-dgram"})


@dataclass(frozen=True)
class BenchSettings:
    """
    How long and how hard to measure.

    @ivar duration: seconds per measuring phase (latency, throughput), unless C{count}.
    @ivar count: messages per phase instead of a duration.
    @ivar warmup: seconds of throughput traffic before measuring, not counted.
    @ivar timeout: seconds before a UDP message with no echo counts as lost.
    @ivar rates: fixed rates (msg/s) to measure at, one row each; none: closed loop.
    @ivar start_at: the Unix time to start at (L{echokit.measure.starttime}), or now.
    """

    size: int = 64
    connections: int = 4
    duration: float = 2.0
    count: int | None = None
    warmup: float = 0.5
    timeout: float = 1.0
    rates: tuple[float, ...] = ()
    start_at: float | None = None

    def check(self) -> None:
        if self.rates and self.count is not None:
            raise InputError(
                "--rate and --count do not go together: a fixed-rate run lasts --duration"
            )
        if self.size < MIN_SIZE:
            raise InputError(f"--size must be at least {MIN_SIZE} bytes (a message's header)")
        if self.size > 64 * 1024 * 1024:
            raise InputError("--size must be at most 64m")


def too_large(transport: str, size: int, ipv6: bool = False) -> str | None:
    """
    Why C{size}-byte messages cannot be measured over C{transport} (a transport name as
    in the table: C{udp}, C{udp6}, C{quic-dgram}, ...), or C{None} if they can: one
    datagram carries one message, and a datagram has a largest size.

        >>> print(too_large("udp", 65_507))
        None
        >>> too_large("quic-dgram", 5000)
        'a QUIC DATAGRAM frame echokit echoes carries at most 1,100 bytes, not 5,000'
    """
    if transport in ("udp", "udp6"):
        limit = MAX_UDP_PAYLOAD_IPV6 if ipv6 or transport == "udp6" else MAX_UDP_PAYLOAD_IPV4
        what = f"a UDP datagram over IPv{6 if limit == MAX_UDP_PAYLOAD_IPV6 else 4}"
    elif transport == "quic-dgram":
        limit, what = MAX_QUIC_DATAGRAM_PAYLOAD, "a QUIC DATAGRAM frame echokit echoes"
    else:
        return None
    return None if size <= limit else f"{what} carries at most {limit:,} bytes, not {size:,}"


@dataclass
class EndpointResult:
    """Everything measured for one endpoint; L{as_json} gives the documented fields."""

    endpoint: str
    transport: str
    family: str = "?"
    tls_version: str | None = None
    tls_cipher: str | None = None
    size: int = 0
    connections: int = 0
    mode: str = "closed-loop"
    rate: float | None = None
    connect_ms: float | None = None
    tls_handshake_ms: float | None = None
    latency_us: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
    latency_client: str = ""
    latency_raw_us: dict[str, float] | None = None
    latency_rounds_p50_us: list[float] | None = None
    latency_floor_us: dict[str, float] | None = None
    latency_floor_rounds_us: list[float] | None = None
    send_lag_us: dict[str, float] | None = None
    messages_per_s: float = 0.0
    mb_per_s: float = 0.0
    client_bound: bool = False
    server_cpu_us_per_msg: float | None = None
    client_cpu_us_per_msg: float | None = None
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    error: str | None = None
    processes: int = 1
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)
    histogram_raw: LatencyHistogram = field(default_factory=LatencyHistogram, repr=False)

    def as_json(self) -> dict[str, Any]:
        # Not asdict: it would deep-copy the histogram's counts only to throw them away.
        data = {f.name: copy.copy(getattr(self, f.name)) for f in fields(self)}
        for name in ("histogram", "histogram_raw"):
            histogram = getattr(self, name)
            data[name] = histogram.encode() if histogram.count else None
        return data

    def times_floor(self) -> float | None:
        """
        This endpoint's p50 over the floor's p50 (L{echokit.measure.floor}), if both
        were measured.

            >>> r = EndpointResult("tcp:localhost:1", "tcp", latency_us={"p50": 30.0})
            >>> print(r.times_floor())
            None
            >>> r.latency_floor_us = {"p50": 12.0}
            >>> r.times_floor()
            2.5
        """
        floor = (self.latency_floor_us or {}).get("p50")
        mine = self.latency_us.get("p50")
        return None if not floor or mine is None else mine / floor

    def floor_drift(self) -> float | None:
        """
        How far the floor moved during the run: its slowest round's p50 over its
        quickest's (1.0: the machine held still), if measured in several rounds.

            >>> r = EndpointResult("tcp:localhost:1", "tcp", latency_floor_rounds_us=[8, 12])
            >>> r.floor_drift()
            1.5
        """
        found = [p50 for p50 in self.latency_floor_rounds_us or () if p50 > 0]
        return max(found) / min(found) if len(found) > 1 else None

    def add_cpu(self, use: CpuUse, messages: int) -> None:
        """CPU per message over a phase that echoed C{messages}; a saturated client."""
        self.server_cpu_us_per_msg, self.client_cpu_us_per_msg = use.per_message(messages)
        if self.mode == "closed-loop" and use.client_saturated():
            self.client_bound = True

    def fill_latency(self) -> None:
        """Set C{latency_us} and C{latency_samples} from the histogram (ns to us)."""
        self.latency_samples = self.histogram.count
        self.latency_us = percentiles_us(self.histogram) if self.histogram.count else {}
        if self.histogram_raw.count:
            self.latency_raw_us = percentiles_us(self.histogram_raw)

    def add_audit(self, checker: MessageChecker, sent: int) -> None:
        self.sent += sent
        for name, value in checker.counts().items():
            setattr(self, name, getattr(self, name) + value)


def percentiles_us(
    histogram: LatencyHistogram, keys: tuple[str, ...] = ("p50", "p90", "p99", "p99.9", "max")
) -> dict[str, float]:
    """A histogram's percentiles (and mean) in microseconds, as the JSON has them."""
    values = {k: v / 1000 for k, v in histogram.percentiles().items() if k in keys}
    if "p99.9" in keys:
        values["mean"] = histogram.mean / 1000
    return values
