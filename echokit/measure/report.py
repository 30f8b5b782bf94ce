"""
How benchmark results are shown: a table, JSON lines, a saved run and its baseline
comparison, and a latency-percentile chart.

JSON (C{--json}, and the records C{--save} writes) has one object per endpoint with
these fields, all always present (C{null} where not measured):

    ====================  =========================================================
    endpoint              the client endpoint string measured
    transport             kind: tcp, tcp6, unix, ssl, tls, udp, quic, quic-dgram
    family                IPv4, IPv6 or unix
    tls_version           e.g. TLSv1.3 (null without TLS)
    tls_cipher            e.g. TLS_AES_256_GCM_SHA384 (null without TLS)
    size                  message size in bytes
    connections           connections (or UDP sockets) in the throughput phase
    mode                  closed-loop (next message when the last came back) or
                          open-loop (fixed rate, --rate)
    rate                  open-loop: offered rate, msg/s (null in closed loop)
    connect_ms            median connect time (TCP or unix), ms (null for udp)
    tls_handshake_ms      median TLS handshake after the connect, ms
    latency_us            {p50, p90, p99, p99.9, max, mean}: round trip, microseconds;
                          open-loop: from each message's intended send time
                          (corrected for coordinated omission)
    latency_samples       round trips measured
    latency_client        which client measured latency
    latency_raw_us        open-loop: the same from the actual send (null otherwise)
    latency_rounds_p50_us compare's rounds: the p50 of each round of at least 100
                          round trips, in order (null otherwise)
    latency_floor_us      compare's rounds: the same for the floor, a plain Python
                          thread echoing over a unix socket pair, measured by the
                          same client in the same rounds: how fast the machine was
                          (L{echokit.measure.floor}; null otherwise)
    latency_floor_rounds_us  the floor's p50 in each round (of at least 100 round
                          trips), in order: how much the machine's speed moved
    send_lag_us           open-loop: {p50, p99, max} of how late each send was
    messages_per_s        throughput: echoed messages per second
    mb_per_s              throughput: echoed megabytes (10^6 bytes) per second
    client_bound          the client was the limit: open-loop, its send lag p99
                          exceeded 2 ms; closed-loop, it used >= 90% of a CPU while
                          the server (when measured) did not
    server_cpu_us_per_msg server CPU (user + system) per echoed message over the
                          measured phase, microseconds (compare --server-process,
                          bench --server-pid; null otherwise)
    client_cpu_us_per_msg the client process's own CPU per message (null when it
                          also ran the servers: compare without --server-process)
    sent, received        messages sent, and echoed intact, over the whole run (latency
                          phase, warm-up and throughput phase)
    lost, duplicated,     messages that never came back, came back twice, came back
    reordered, corrupted  out of order, or came back damaged
    error                 why the endpoint could not be measured (null if it was)
    processes             client processes (or merged runs) behind the figures: their
                          histograms were added, their counts and rates summed
    histogram             every round trip of latency_us, in B{nanoseconds}: an
                          HdrHistogram in its standard compressed base64 form
                          (C{HISTF...}; null if nothing was measured). Histograms
                          add exactly: C{echokit merge} combines saved runs with them
    histogram_raw         open-loop: latency_raw_us's histogram, the same way (null
                          otherwise)
    ====================  =========================================================
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echokit.errors import InputError, RuntimeFailure
from echokit.measure.cpu import CLIENT_BOUND_CPU
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.results import LOSSY_TRANSPORTS, EndpointResult
from echokit.measure.schedule import CLIENT_BOUND_LAG_US, format_rate

#: The fields of a JSON record, in order (see the module docstring).
JSON_FIELDS = (
    "endpoint",
    "transport",
    "family",
    "tls_version",
    "tls_cipher",
    "size",
    "connections",
    "mode",
    "rate",
    "connect_ms",
    "tls_handshake_ms",
    "latency_us",
    "latency_samples",
    "latency_client",
    "latency_raw_us",
    "latency_rounds_p50_us",
    "latency_floor_us",
    "latency_floor_rounds_us",
    "send_lag_us",
    "messages_per_s",
    "mb_per_s",
    "client_bound",
    "server_cpu_us_per_msg",
    "client_cpu_us_per_msg",
    "sent",
    "received",
    "lost",
    "duplicated",
    "reordered",
    "corrupted",
    "error",
    "processes",
    "histogram",
    "histogram_raw",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _us(result: EndpointResult, key: str) -> str:
    value = result.latency_us.get(key)
    return "-" if value is None else f"{value:,.1f}"


def _mode(result: EndpointResult) -> str:
    return "closed" if result.rate is None else f"{format_rate(result.rate)}/s"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


#: What the floor is (L{echokit.measure.floor}), as the output says.
FLOOR_DESCRIPTION = (
    "the blocking latency client (tcp's, unix's, ssl's, udp's) against a plain Python "
    "thread echoing over a unix socket pair (no event loop, no echokit server), measured "
    "in the same rounds"
)

#: A floor whose slowest round's p50 is more than this over its quickest's is a machine
#: whose speed moved during the run, and the output warns of it.
FLOOR_DRIFT_WARNING = 1.2

#: The default table's width limit, and its longest endpoint string (the whole
#: strings are listed under the table; --wide shows them in it).
TABLE_WIDTH = 120
_ENDPOINT_WIDTH = 28

#: What the table's units and abbreviations mean, printed under it.
TABLE_LEGEND = (
    "units: ms = milliseconds; us = microseconds, round trip; msg/s = messages echoed per "
    "second;\n"
    "  MB/s = 10^6 bytes of messages echoed per second; cpu = CPU microseconds per message;\n"
    "  errors (lost/dup/reord/bad) = messages lost, duplicated, reordered, corrupted"
)


@dataclass(frozen=True)
class _Column:
    """A table column: its header in the default and --wide tables, and its cells."""

    header: str
    wide_header: str
    cell: Callable[[EndpointResult], str]
    #: In the default table only when some row has a value ("-" elsewhere).
    optional: bool = False
    #: In the --wide table only.
    wide_only: bool = False


_COLUMNS = (
    _Column("load", "load", lambda r: _mode(r), optional=True),
    _Column("conn ms", "connect ms", lambda r: _ms(r.connect_ms)),
    _Column("tls ms", "tls ms", lambda r: _ms(r.tls_handshake_ms), optional=True),
    _Column("p50 us", "p50 us", lambda r: _us(r, "p50")),
    _Column("x floor", "p50 x floor", lambda r: _times(r.times_floor()), optional=True),
    _Column("p90 us", "p90 us", lambda r: _us(r, "p90"), wide_only=True),
    _Column("p99 us", "p99 us", lambda r: _us(r, "p99")),
    _Column("p99.9 us", "p99.9 us", lambda r: _us(r, "p99.9"), wide_only=True),
    _Column("max us", "max us", lambda r: _us(r, "max")),
    _Column("msg/s", "msg/s", lambda r: f"{r.messages_per_s:,.0f}"),
    _Column("MB/s", "MB/s", lambda r: f"{r.mb_per_s:,.1f}"),
    _Column("srv cpu", "srv cpu us", lambda r: _cpu(r.server_cpu_us_per_msg), optional=True),
    _Column("cli cpu", "cli cpu us", lambda r: _cpu(r.client_cpu_us_per_msg), wide_only=True),
    _Column(
        "errors",
        "lost/dup/reord/bad",
        lambda r: f"{r.lost}/{r.duplicated}/{r.reordered}/{r.corrupted}",
    ),
)


def _elide(text: str, width: int) -> str:
    """
    C{text}, shortened in the middle to C{width} characters if longer.

        >>> _elide("unix:path=/tmp/echokit-compare-k2j3h4g5/echo.sock", 28)
        'unix:path=/tmp/...echo.sock'
    """
    if len(text) <= width:
        return text
    tail = (width - 3) // 3
    return text[: width - 3 - tail] + "..." + text[len(text) - tail :]  # keeps the port


def render_table(results: Sequence[EndpointResult], wide: bool = False) -> str:
    """
    One row per endpoint (and rate): load, connect, latency percentiles, throughput,
    CPU per message, integrity; then what the units mean.

    The default table fits L{TABLE_WIDTH} columns: endpoint strings are shortened (the
    lines under the table give them whole), p90, p99.9 and the client's CPU are left to
    C{--wide} and C{--json}, and a column with nothing measured in it is left out. A
    client-bound row is marked C{*} (C{client-bound} with C{wide}). An endpoint that
    could not be measured gets its error, wrapped within the table.
    """
    measured_rows = [r for r in results if not r.error]
    columns = [
        c
        for c in _COLUMNS
        if wide
        or (not c.wide_only and (not c.optional or any(c.cell(r) != "-" for r in measured_rows)))
    ]
    if not wide and all(r.rate is None for r in measured_rows):
        columns = [c for c in columns if c.header != "load"]
    header = ("endpoint", *(c.wide_header if wide else c.header for c in columns))

    cells = [[c.cell(r) for c in columns] for r in measured_rows]
    widths = [max(len(row[i]) for row in [header[1:], *cells]) for i in range(len(columns))]
    others = sum(widths) + 2 * len(widths) + (3 if any(r.client_bound for r in results) else 0)
    longest = max([len("endpoint"), *(len(r.endpoint) for r in results)])
    room = longest if wide else max(_ENDPOINT_WIDTH, min(longest, TABLE_WIDTH - others))
    widths.insert(0, room)

    def name(r: EndpointResult) -> str:
        return _elide(r.endpoint, room)

    total = sum(widths) + 2 * (len(widths) - 1)
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in results:
        if r.error:
            indent = widths[0] + 2
            room = max(TABLE_WIDTH if not wide else total, indent + 40) - indent
            wrapped = textwrap.wrap("error: " + r.error, max(room, 40)) or ["error:"]
            lines.append(name(r).ljust(widths[0]) + "  " + wrapped[0])
            lines += [" " * indent + more for more in wrapped[1:]]
            continue
        row = [name(r).ljust(widths[0])] + [
            c.cell(r).rjust(w) for c, w in zip(columns, widths[1:], strict=True)
        ]
        if r.client_bound:
            row.append("client-bound" if wide else "*")
        lines.append("  ".join(row))
    legend = TABLE_LEGEND
    if any(r.times_floor() is not None for r in measured_rows):
        legend += "\n  x floor = p50 over the floor's p50 (the machine's own round trip, see below)"
    if not wide:
        legend += "\n  (--wide: every column, whole endpoint strings; --json: every field)"
        if any(r.client_bound for r in results):
            legend += "\n  * client-bound (see below)"
    return "\n".join(lines) + "\n\n" + legend + "\n"


def render_environment(
    environment: Mapping[str, str], results: Sequence[EndpointResult], mode: str
) -> str:
    """What shaped the numbers: mode, reactor, versions, and each endpoint's family and TLS."""
    lines = [f"mode: {mode}"]
    if any(r.rate is not None for r in results):
        lines.append(
            "load: open loop at the rate shown (msg/s over all connections, sent on a fixed "
            "schedule whether or not echoes came back); latency from each message's intended "
            "send time (corrected; raw and send lag in --json)"
        )
    else:
        lines.append(
            "load: closed loop (latency with one message in flight; msg/s with "
            "--connections in flight, each sending when its echo came back)"
        )
    if any(r.client_bound for r in results):
        lines.append(
            "client-bound: the client was the limit (open loop: send lag p99 over "
            f"{CLIENT_BOUND_LAG_US / 1000:g} ms; closed loop: client CPU >= "
            f"{CLIENT_BOUND_CPU:.0%} of one CPU while the server's was not): "
            "its figures describe the client as much as the server"
        )
    floored = [r for r in results if r.latency_floor_us]
    if floored:
        lines += _floor_lines(floored[0])
    lines += [f"{key}: {value}" for key, value in environment.items()]
    described = []
    for r in results:
        tls = f", {r.tls_version} {r.tls_cipher}" if r.tls_version else ""
        client = f"; latency by {r.latency_client}" if r.latency_client else ""
        described.append(
            f"{r.endpoint}: {r.family}{tls}; {r.size:,}-byte messages, "
            f"{r.connections} connections{client}"
        )
    lines += dict.fromkeys(described)  # once per endpoint, however many rates
    return "\n".join(lines) + "\n"


def _floor_lines(result: EndpointResult) -> list[str]:
    """What the floor measured with C{result} says: its figures, and a warning if it moved."""
    floor = result.latency_floor_us or {}
    rounds = [p50 for p50 in result.latency_floor_rounds_us or () if p50 > 0]
    spread = f" (its p50 round by round: {min(rounds):,.1f} to {max(rounds):,.1f} us)"
    lines = [
        f"floor: p50 {floor.get('p50', 0):,.1f} us, p99 {floor.get('p99', 0):,.1f} us"
        f"{spread if rounds else ''}: {FLOOR_DESCRIPTION}; its speed is the machine's at "
        "the time, and a transport's x floor is what can be compared with another run's"
    ]
    drift = result.floor_drift()
    if drift is not None and drift > FLOOR_DRIFT_WARNING:
        lines.append(
            f"warning: the machine's own round trip moved during this run (the floor's "
            f"slowest round {drift:.2f}x its quickest): every p50 here mixes its speeds; "
            "compare the transports within this run, and rerun to compare with another"
        )
    return lines


def as_records(results: Sequence[EndpointResult]) -> list[dict[str, Any]]:
    """The documented JSON record of each result."""
    records = []
    for r in results:
        data = r.as_json()
        records.append({name: data[name] for name in JSON_FIELDS})
    return records


def render_json(results: Sequence[EndpointResult]) -> str:
    """One JSON object per line, one line per endpoint."""
    return "".join(json.dumps(record) + "\n" for record in as_records(results))


def save(
    path: Path,
    results: Sequence[EndpointResult],
    environment: Mapping[str, str],
    mode: str | None = None,
) -> None:
    """
    Write a run to C{path}, for a later C{--baseline}: C{mode} (where servers and
    clients ran, as the table's C{mode:} line says), the environment and the records.
    """
    data = {"mode": mode, "environment": dict(environment), "results": as_records(results)}
    try:
        path.write_text(json.dumps(data, indent=1) + "\n")
    except OSError as e:
        raise InputError(f"cannot write --save file '{path}': {e.strerror}") from None


def load(path: Path) -> list[dict[str, Any]]:
    """Read a run written by L{save}."""
    try:
        data = json.loads(path.read_text())
        results = data["results"]
        assert isinstance(results, list)
        return results
    except OSError as e:
        raise InputError(f"cannot read --baseline file '{path}': {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AssertionError):
        raise InputError(
            f"--baseline file '{path}' is not a run saved by echokit's --save"
        ) from None


def _change(new: float | None, old: float | None) -> str:
    if new is None or old is None or old == 0:
        return "-"
    return f"{(new - old) / old * 100:+.1f}%"


def _tail(result: EndpointResult, before: Mapping[str, Any]) -> str:
    """
    With both histograms: the share of this run's round trips slower than the
    baseline's p99 (1% of the baseline's were): the distributions compared, not two
    numbers.
    """
    text = before.get("histogram")
    if not text or not result.histogram.count:
        return ""
    try:
        old = LatencyHistogram.decode(text)
    except ValueError:
        return ""
    share = result.histogram.fraction_above(old.percentile(99))
    return f"; {share:.2%} of round trips slower than the baseline's p99 (there: at most 1%)"


def render_baseline(
    results: Sequence[EndpointResult], baseline: Sequence[Mapping[str, Any]]
) -> str:
    """The change of each endpoint's key figures against the same endpoint in a saved run."""
    old = {record["endpoint"]: record for record in baseline}
    # compare's servers get new ports every run: fall back to the transport when unique.
    kinds = [record["transport"] for record in baseline]
    by_transport = {r["transport"]: r for r in baseline if kinds.count(r["transport"]) == 1}
    lines = [
        "change against the baseline (latency: lower is better; throughput: higher is better):"
    ]
    for r in results:
        before = old.get(r.endpoint) or by_transport.get(r.transport)
        if before is None:
            lines.append(f"  {r.endpoint}: not in the baseline")
            continue
        p50 = _change(r.latency_us.get("p50"), (before.get("latency_us") or {}).get("p50"))
        p99 = _change(r.latency_us.get("p99"), (before.get("latency_us") or {}).get("p99"))
        rate = _change(r.messages_per_s, before.get("messages_per_s"))
        lines.append(f"  {r.endpoint}: p50 {p50}, p99 {p99}, msg/s {rate}{_tail(r, before)}")
    return "\n".join(lines) + "\n"


class PlotUnavailable(InputError):
    """C{--plot} without matplotlib."""


def check_plotting() -> None:
    """
    Make sure C{--plot} can draw (matplotlib imports), before anything is measured.

    @raise PlotUnavailable: saying how to install it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'echokit[plot]' (or pip install matplotlib)"
        ) from None


def plot(path: Path, results: Sequence[EndpointResult], mode: str = "") -> None:
    """
    Draw every endpoint's latency distribution on one latency-percentile chart; for
    fixed-rate runs, the latency-load curve instead (L{_plot_load}). Each line is
    labelled with its endpoint string; under the title, the message size, the
    connections and C{mode} (where servers and clients ran).

    @raise InputError: if matplotlib is missing (C{pip install 'echokit[plot]'}) or the
        file type is not .png or .svg.
    """
    if path.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"--plot writes .png or .svg files, not '{path.name}'")
    check_plotting()
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    if any(r.rate is not None for r in results):
        _plot_load(axes, results)
    else:
        _plot_percentiles(axes, results)
    figure.text(0.5, 0.01, _settings_caption(results, mode), ha="center", fontsize="small")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    try:
        figure.savefig(path)
    except OSError as e:
        raise InputError(f"cannot write --plot file '{path}': {e.strerror}") from None
    finally:
        plt.close(figure)


def _plot_load(axes: Any, results: Sequence[EndpointResult]) -> None:
    """
    The latency-load curve: corrected p50 (dashed) and p99 (solid) against the offered
    rate, one colour per endpoint, both axes logarithmic; where a line turns up is
    the rate the endpoint cannot take. Client-bound points are drawn hollow.
    """
    endpoints = list(dict.fromkeys(r.endpoint for r in results if r.rate is not None))
    for number, endpoint in enumerate(endpoints):
        rows = sorted(
            (r for r in results if r.endpoint == endpoint and r.rate and r.latency_us),
            key=lambda r: r.rate or 0,
        )
        if not rows:
            continue
        colour = f"C{number % 10}"
        rates = [r.rate for r in rows]
        label = endpoint
        for key, style in (("p99", "-"), ("p50", "--")):
            axes.plot(
                rates,
                [r.latency_us[key] for r in rows],
                style,
                color=colour,
                label=f"{label} {key}",
            )
            bound = [r for r in rows if r.client_bound]
            axes.scatter(
                [r.rate for r in bound],
                [r.latency_us[key] for r in bound],
                facecolors="none",
                edgecolors=colour,
            )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (messages/s, fixed schedule)")
    axes.set_ylabel("round trip from intended send (microseconds)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title("echokit: latency against load (open loop; hollow: client-bound)")


def _plot_percentiles(axes: Any, results: Sequence[EndpointResult]) -> None:
    """Each endpoint's latency by percentile, the tail on a 'nines' scale."""
    for r in results:
        points = r.histogram.cumulative()
        if not points:
            continue
        # x: the percentile on a "nines" scale, so the tail gets the room it deserves.
        xs = [1 / max(1 - fraction, 1e-6) for _, fraction in points]
        ys = [value / 1000 for value, _ in points]
        axes.step(xs, ys, where="post", label=r.endpoint)
    axes.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    axes.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
    axes.set_xlabel("percentile")
    axes.set_ylabel("round trip (microseconds)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title("echokit: round-trip latency by percentile, one message in flight")


def fail_if_broken(results: Sequence[EndpointResult]) -> None:
    """
    After reporting: exit 1 if an endpoint could not be measured, or a stream's echo lost,
    duplicated, reordered or damaged a message (UDP's and QUIC datagrams' loss is a
    measurement, not a failure); an endpoint whose measuring stopped at a loss is named
    as damaged, not as unreachable.
    """
    damaged = [
        r.endpoint
        for r in results
        if r.transport not in LOSSY_TRANSPORTS
        and (r.lost or r.duplicated or r.reordered or r.corrupted)
    ]
    unreachable = [r.endpoint for r in results if r.error and r.endpoint not in damaged]
    if unreachable or damaged:
        problems = []
        if unreachable:
            problems.append(f"could not measure {', '.join(unreachable)}")
        if damaged:
            problems.append(f"the echo was not intact over {', '.join(damaged)}")
        raise RuntimeFailure("; ".join(problems))


def _settings_caption(results: Sequence[EndpointResult], mode: str) -> str:
    """
    What the chart measured, for under it: sizes, connections, mode.

        >>> _settings_caption([EndpointResult("tcp:host=h:port=1", "tcp", size=64, connections=4)], "m")
        '64-byte messages; 4 connections (throughput phase); m'
    """
    sizes = ", ".join(f"{size:,}" for size in sorted({r.size for r in results}))
    connections = ", ".join(str(n) for n in sorted({r.connections for r in results}))
    parts = [f"{sizes}-byte messages", f"{connections} connections (throughput phase)"]
    if mode:
        parts.append(mode)
    return "; ".join(parts)
