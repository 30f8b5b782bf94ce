"""
A fuzz target for the endpoint parser, run for a bounded time: C{make fuzz}.

    python -m tests.fuzz_endpoints [SECONDS]

It drives the same property as L{tests.test_properties} (parse, or raise
L{EndpointError} with a one-line message) with Hypothesis's C{fuzz_one_input}, fed
random bytes until the time is up; with atheris installed
(C{python -m tests.fuzz_endpoints --atheris -max_total_time=60}) the same target runs
coverage-guided. A failing input is printed and the exit status is 1.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from hypothesis import HealthCheck, given, settings

from tests.test_properties import check_parses_or_explains, endpoint_like


@settings(database=None, suppress_health_check=list(HealthCheck), deadline=None)
@given(endpoint_like)
def target(text: str) -> None:
    """The fuzzed property."""
    check_parses_or_explains(text)


#: Fewer inputs than this in a run means it tested (almost) nothing: the run fails.
MIN_RUNS = 100


def fuzz_for(seconds: float) -> tuple[int, float, bytes]:
    """
    Feed random inputs to the target for C{seconds} (and on, up to four times as long,
    until L{MIN_RUNS} have run): how many ran, and the slowest one's seconds and bytes.
    """
    started = time.monotonic()
    deadline, hard_deadline = started + seconds, started + 4 * seconds
    runs, slowest, slowest_input = 0, 0.0, b""
    fuzz_one_input = target.hypothesis.fuzz_one_input  # type: ignore[attr-defined]
    while (now := time.monotonic()) < deadline or (runs < MIN_RUNS and now < hard_deadline):
        data = os.urandom(256)
        fuzz_one_input(data)
        took = time.monotonic() - now
        if took > slowest:
            slowest, slowest_input = took, data
        runs += 1
    return runs, slowest, slowest_input


def main(argv: list[str]) -> int:
    if argv[:1] == ["--atheris"]:
        atheris = importlib.import_module("atheris")
        atheris.Setup([sys.argv[0], *argv[1:]], target.hypothesis.fuzz_one_input)  # type: ignore[attr-defined]
        atheris.Fuzz()
        return 0
    seconds = float(argv[0]) if argv else 15.0
    runs, slowest, slowest_input = fuzz_for(seconds)
    if runs < MIN_RUNS:
        print(
            f"fuzz_endpoints: only {runs} inputs ran (at least {MIN_RUNS} needed): the run "
            f"tested almost nothing; the slowest took {slowest:.1f} s, from the bytes "
            f"{slowest_input.hex()} (fuzz_one_input)",
            file=sys.stderr,
        )
        return 1
    print(
        f"fuzz_endpoints: {runs} inputs in {seconds:g} s (slowest {slowest * 1000:.0f} ms), "
        "no failure"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
