"""
echokit compare run twice in a row: each transport's p50 in both runs, and their ratio.

`echokit compare --json` (compare's defaults: every transport whose library is installed,
latency in rounds taking turns), twice, back to back. The target (the open-loop issue's
"numbers that hold still"): each transport's p50 within 20% run to run, and unix and udp
not reported slower than tcp. Beside each p50, its ratio to the floor compare measured in
the same rounds (C{latency_floor_us}: the machine's own round trip at the time) and how
that ratio moved: when the floor itself moved between the runs, the p50s moved with it,
and the ratio says whether the transports did anything more. About 90 s (--quick:
--duration 0.5, about 30 s). On a loaded machine the runs see different loads: rerun on
a quiet one for figures to quote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import (
    ECHOKIT,
    Report,
    Settings,
    command_text,
    json_rows,
    make_certs,
    number,
    render,
    say,
)

#: The largest run-to-run change of a p50 the issue accepts.
TARGET_SPREAD = 1.2
#: A floor that moved less than this within and between the runs: the machine held still.
FLOOR_HELD = 1.2


def _compare(argv: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    return {row["transport"]: row for row in json_rows(argv, timeout)}


def _p50(run: dict[str, dict[str, Any]], transport: str) -> float | None:
    row = run.get(transport)
    value = None if row is None or row["error"] else row["latency_us"].get("p50")
    return None if value is None else float(value)


def _times_floor(run: dict[str, dict[str, Any]], transport: str) -> float | None:
    p50, row = _p50(run, transport), run.get(transport)
    floor = None if row is None else (row.get("latency_floor_us") or {}).get("p50")
    return None if p50 is None or not floor else p50 / float(floor)


def _floor(run: dict[str, dict[str, Any]]) -> float | None:
    floors = [(row.get("latency_floor_us") or {}).get("p50") for row in run.values()]
    found = [float(f) for f in floors if f]
    return found[0] if found else None


def _drift(run: dict[str, dict[str, Any]]) -> float | None:
    """The floor's slowest round's p50 over its quickest's in C{run} (1.0: held still)."""
    for row in run.values():
        rounds = [float(p) for p in row.get("latency_floor_rounds_us") or () if p]
        if len(rounds) > 1:
            return max(rounds) / min(rounds)
    return None


def _spread(first: float | None, second: float | None) -> float | None:
    if first is None or second is None:
        return None
    return max(first, second) / min(first, second)


def run(settings: Settings, report: Report, workdir: Path) -> None:
    """echokit compare twice in a row: each transport's p50 run to run."""
    say("== k) stability: echokit compare twice in a row, each transport's p50 ==")
    argv = [ECHOKIT, "compare", "--json", "--cert-dir", str(make_certs(workdir))]
    if settings.rounds == 1:  # --quick
        argv += ["--duration", "0.5", "--warmup", "0.1"]
    say(f"$ {command_text(argv)}    # twice")
    runs = [_compare(argv, 180) for _ in range(2)]
    rows, spreads, floor_spreads, slower = [], {}, {}, []
    for transport in runs[0]:  # compare's order
        first, second = (_p50(r, transport) for r in runs)
        x_first, x_second = (_times_floor(r, transport) for r in runs)
        spread, x_spread = _spread(first, second), _spread(x_first, x_second)
        row = [transport, number(first, 1), number(second, 1)]
        if spread is None or first is None or second is None:
            row += ["-", "-"]
        else:
            spreads[transport] = spread
            row += [f"{second / first:.2f}", "met" if spread <= TARGET_SPREAD else "NOT met"]
        if x_spread is None or x_first is None or x_second is None:
            row += ["-", "-", "-"]
        else:
            floor_spreads[transport] = x_spread
            row += [f"{x_first:.2f}", f"{x_second:.2f}", f"{x_second / x_first:.2f}"]
        rows.append(row)
    for index, r in enumerate(runs, 1):
        tcp = _p50(r, "tcp")
        for transport in ("unix", "udp"):
            value = _p50(r, transport)
            if tcp is not None and value is not None and value > tcp:
                slower.append(f"run {index}: {transport} {value:.1f} us > tcp {tcp:.1f} us")
    headers = ["transport", "p50 us, run 1", "run 2", "2 / 1", "within 20%"]
    say(render([*headers, "x floor, run 1", "run 2", "2 / 1"], rows))
    floors = [_floor(r) for r in runs]
    say(
        "floor p50 (the machine's own round trip, measured in each run's rounds): "
        + ", ".join(f"run {i}: {number(f, 1)} us" for i, f in enumerate(floors, 1))
        + (
            f" ({floors[1] / floors[0]:.2f}x)"
            if floors[0] is not None and floors[1] is not None
            else ""
        )
    )
    drifts = [_drift(r) for r in runs]
    say(
        "the floor's slowest round over its quickest, within each run: "
        + ", ".join(f"run {i}: {number(d, 2)}x" for i, d in enumerate(drifts, 1))
    )
    steady = all(d is not None and d <= FLOOR_HELD for d in drifts)
    same = (
        floors[0] is not None
        and floors[1] is not None
        and max(floors[0], floors[1]) / min(floors[0], floors[1]) <= FLOOR_HELD
    )
    met = sum(1 for spread in spreads.values() if spread <= TARGET_SPREAD)
    x_met = sum(1 for spread in floor_spreads.values() if spread <= TARGET_SPREAD)
    say(f"p50 within 20% run to run: {met} of {len(spreads)} transports")
    say(f"x floor within 20% run to run: {x_met} of {len(floor_spreads)} transports")
    if floors[0] is None or floors[1] is None:
        verdict = "a run measured no floor: nothing says whether the machine held still"
    elif not steady:
        verdict = (
            "a run mixed the machine's speeds (its floor moved over 1.2x between rounds): "
            "its p50s are medians of two speeds; rerun for figures to compare"
        )
    elif same:
        verdict = "the machine held still in and between the runs: compare the p50s"
    else:
        verdict = (
            "each run held one speed, but not the same one: the p50s moved with the "
            "machine; compare the x floor figures"
        )
    say("verdict: " + verdict)
    say(
        "unix and udp slower than tcp: "
        + ("; ".join(slower) if slower else "in neither run (target met)")
    )
    clients = {row.get("latency_client", "?") for row in runs[0].values()}
    say("latency measured by: " + "; ".join(sorted(clients)))
    say(
        "Both runs share this machine with anything else running: rerun on a quiet "
        "machine for figures to quote."
    )
    report.sections["stability"] = {
        "command": argv,
        "p50_us": {t: [_p50(r, t) for r in runs] for t in runs[0]},
        "spread": spreads,
        "floor_p50_us": floors,
        "times_floor": {t: [_times_floor(r, t) for r in runs] for t in runs[0]},
        "times_floor_spread": floor_spreads,
        "floor_drift": drifts,
        "steady_runs": steady,
        "same_speed": same,
        "verdict": verdict,
        "unix_or_udp_slower_than_tcp": slower,
    }
