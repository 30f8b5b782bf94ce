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


def fuzz_for(seconds: float) -> int:
    """Feed random inputs to the target for C{seconds}; return how many ran."""
    deadline = time.monotonic() + seconds
    runs = 0
    fuzz_one_input = target.hypothesis.fuzz_one_input  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        fuzz_one_input(os.urandom(256))
        runs += 1
    return runs


def main(argv: list[str]) -> int:
    if argv[:1] == ["--atheris"]:
        atheris = importlib.import_module("atheris")
        atheris.Setup([sys.argv[0], *argv[1:]], target.hypothesis.fuzz_one_input)  # type: ignore[attr-defined]
        atheris.Fuzz()
        return 0
    seconds = float(argv[0]) if argv else 15.0
    runs = fuzz_for(seconds)
    print(f"fuzz_endpoints: {runs} inputs in {seconds:g} s, no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
