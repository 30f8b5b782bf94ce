"""
One result from many: the measurements of several client processes (C{bench --processes})
or of runs saved on several hosts (C{echokit merge}), combined as if one client had made
them all. Sans-IO: records in, results out.

How each figure combines, per endpoint:

    - latency: the HdrHistograms (field C{histogram}, and any other histogram field) are
      added, and the percentiles read from the sum: never an average of percentiles;
    - counts and rates (messages/s, MB/s, sent, received, lost, duplicated, reordered,
      corrupted, connections, processes) add up: the runs are taken to have measured
      the same window (C{--start-at}, or processes started together);
    - connect and TLS handshake times: the median of the runs' medians;
    - CPU per message: each run's own (the client's) as their total CPU over their total
      messages; a server's, which each run measured over the same window, as that CPU
      over all the runs' messages;
    - a run that could not measure the endpoint makes the merged row an error row that
      names it: never a silently smaller total.

    >>> a = {"endpoint": "tcp:host=h:port=7", "transport": "tcp", "size": 64,
    ...      "sent": 10, "received": 10, "messages_per_s": 5.0, "histogram": None}
    >>> merged = merge_records([a, dict(a)], ["a", "b"])
    >>> merged.sent, merged.messages_per_s, merged.processes
    (20, 10.0, 2)
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TextIO

from echokit.errors import InputError
from echokit.measure.histogram import LatencyHistogram
from echokit.measure.results import EndpointResult

#: Fields that must be equal for records to be merged (absent from all is equal too).
MATCHED = ("endpoint", "transport", "size", "mode")
#: Fields added up.
SUMMED = (
    "connections",
    "messages_per_s",
    "mb_per_s",
    "sent",
    "received",
    "lost",
    "duplicated",
    "reordered",
    "corrupted",
    "processes",
)
#: Fields merged as the median of the runs' values.
MEDIANS = ("connect_ms", "tls_handshake_ms")
#: The runs' own CPU per message: their total CPU over their total messages (each run's
#: weighted by its msg/s).
PER_MESSAGE = ("client_cpu_us_per_msg",)
#: A server's CPU per message that every run measured over the same window: that CPU
#: over all the runs' messages, 1 / sum(1 / each).
SHARED_PER_MESSAGE = ("server_cpu_us_per_msg",)
#: Percentiles that come with no histogram to add: dropped from a merge of several runs.
UNMERGEABLE = (
    "send_lag_us",
    "latency_rounds_p50_us",
    "latency_floor_us",
    "latency_floor_rounds_us",
)

Record = Mapping[str, Any]


def _histogram_fields() -> list[str]:
    """The names of L{EndpointResult}'s histogram fields (C{histogram}, ...)."""
    sample = EndpointResult(endpoint="", transport="")
    return [f.name for f in fields(sample) if isinstance(getattr(sample, f.name), LatencyHistogram)]


def merge_records(records: Sequence[Record], labels: Sequence[str]) -> EndpointResult:
    """
    Merge the records of one endpoint, one per run; C{labels} name the runs in errors.

    @raise InputError: if a record's histogram is not an encoded HdrHistogram.
    """
    first = records[0]
    known = {f.name for f in fields(EndpointResult)}
    histograms = _histogram_fields()
    derived = {*SUMMED, *MEDIANS, *PER_MESSAGE, *SHARED_PER_MESSAGE, "rate"}
    derived |= {"latency_us", "latency_samples"}
    plain = {
        name: value
        for name, value in first.items()
        if name in known and name not in histograms and name not in derived
    }
    result = EndpointResult(**plain)
    rates = [r["rate"] for r in records if r.get("rate") is not None]
    result.rate = sum(rates) if rates else None
    result.client_bound = any(r.get("client_bound") for r in records)
    weights = [r.get("messages_per_s") or 0.0 for r in records]
    for name in PER_MESSAGE:
        pairs = [(r[name], w) for r, w in zip(records, weights, strict=True) if r.get(name)]
        if pairs and len(pairs) == len(records) and sum(w for _, w in pairs) > 0:
            setattr(result, name, sum(v * w for v, w in pairs) / sum(w for _, w in pairs))
    for name in SHARED_PER_MESSAGE:
        shared = [r[name] for r in records if r.get(name) is not None]
        if shared and len(shared) == len(records):
            # A run whose window saw no CPU tick of the server (/proc counts in 10 ms
            # ticks) bounds the shared figure at 0: the formula's limit, not a gap.
            merged = 0.0 if 0 in shared else 1 / sum(1 / value for value in shared)
            setattr(result, name, merged)
    if len(records) > 1:
        for name in UNMERGEABLE:
            if hasattr(result, name):
                setattr(result, name, None)
    for name in SUMMED:
        default = 1 if name == "processes" else 0
        total = sum(default if r.get(name) is None else r[name] for r in records)
        setattr(result, name, total)
    for name in MEDIANS:
        found: list[float] = [r[name] for r in records if r.get(name) is not None]
        setattr(result, name, statistics.median(found) if found else None)
    for name in histograms:
        merged = LatencyHistogram()
        for record, label in zip(records, labels, strict=True):
            text = record.get(name)
            if not text:
                continue
            try:
                merged.add(LatencyHistogram.decode(text))
            except ValueError:
                raise InputError(
                    f"{label}: {first.get('endpoint')}: field '{name}' is not an encoded "
                    "HdrHistogram"
                ) from None
        setattr(result, name, merged)
    result.fill_latency()
    errors = [
        f"{label}: {r['error']}" for r, label in zip(records, labels, strict=True) if r.get("error")
    ]
    result.error = "; ".join(errors) or None
    return result


def differences(runs: Sequence[tuple[str, Sequence[Record]]]) -> list[str]:
    """
    What keeps C{runs} (label, records) from being one measurement: each a short phrase.

    Runs match when they measured the same endpoints in the same order with the same
    message size and mode, and every record that measured latency carries its histogram.
    """
    found: list[str] = []
    first_label, first = runs[0]
    for label, records in runs:
        if len(records) != len(first):
            found.append(f"{label} has {len(records)} endpoints, {first_label} {len(first)}")
        for record, reference in zip(records, first, strict=False):
            for name in MATCHED:
                if record.get(name) != reference.get(name):
                    found.append(
                        f"{label}: {name} {record.get(name)} (in {first_label}: "
                        f"{reference.get(name)})"
                    )
        for record in records:
            if record.get("latency_samples") and not record.get("histogram"):
                found.append(f"{label}: {record.get('endpoint')} has no histogram")
    return found


def merge_runs(
    runs: Sequence[tuple[str, Sequence[Record]]], force: bool = False
) -> tuple[list[EndpointResult], list[str]]:
    """
    Merge saved runs, endpoint by endpoint (row by row): the results and what differed.

    @raise InputError: if there is no run, or the runs do not match (see L{differences})
        and C{force} is false.
    """
    if not runs:
        raise InputError("nothing to merge: name the files written by --save or --json")
    found = differences(runs)
    if found and not force:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise InputError(
            f"these runs do not match: {found[0]}{more}; merge runs of the same endpoints, "
            "size and mode, or add --force"
        )
    rows = max(len(records) for _, records in runs)
    results = []
    for row in range(rows):
        present = [(label, records[row]) for label, records in runs if row < len(records)]
        results.append(
            merge_records([record for _, record in present], [label for label, _ in present])
        )
    return results, found


def parse_run(text: str, label: str) -> list[dict[str, Any]]:
    """
    The endpoint records in a saved run: a C{--save} file (an object with C{results}) or
    C{--json} output (one object per line).

    @raise InputError: if C{text} is neither, or holds no record.
    """
    what = f"'{label}' is not a run saved by echokit (--save or --json)"
    records: Any
    try:
        data = json.loads(text)
        records = data.get("results") if isinstance(data, dict) and "results" in data else data
        records = records if isinstance(records, list) else [records]
    except ValueError:
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise InputError(f"{what}: not JSON, or cut short ({e.msg}, line {e.lineno})") from None
    if isinstance(records, list):  # --interval's live lines are not results
        records = [r for r in records if not (isinstance(r, dict) and "interval" in r)]
    if not isinstance(records, list) or not records:
        raise InputError(f"{what}: it holds no result")
    for record in records:
        if not isinstance(record, dict) or not {"endpoint", "transport"} <= record.keys():
            raise InputError(f"{what}: a result without endpoint and transport")
    return records


def merge_files(
    paths: Sequence[Path], out: TextIO, as_json: bool, plot: Path | None, force: bool
) -> list[EndpointResult]:
    """
    C{echokit merge}: read the saved runs at C{paths}, merge them, report the result
    (a table, or JSON lines) on C{out}, and draw it to C{plot} if given.

    @raise InputError: if a file cannot be read or is not a saved run, or the runs do
        not match and C{force} is false.
    @raise RuntimeFailure: after reporting, if a merged endpoint is an error row.
    """
    from echokit.measure import report

    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"--plot writes .png or .svg files, not '{plot.name}'")
    runs = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as e:
            raise InputError(f"cannot read '{path}': {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise InputError(f"'{path}' is not a run saved by echokit (--save or --json)") from None
        runs.append((str(path), parse_run(text, str(path))))
    results, found = merge_runs(runs, force)
    if found:
        sys.stderr.write(f"echokit: warning: --force: merged although {'; '.join(found)}\n")
    if as_json:
        out.write(report.render_json(results))
    else:
        out.write(report.render_table(results))
        out.write(f"\nmerged {len(runs)} runs: {', '.join(label for label, _ in runs)}\n")
    if plot is not None:
        report.plot(plot, results)
        if not as_json:
            out.write(f"latency chart written to {plot}\n")
    out.flush()
    report.fail_if_broken(results)
    return results
