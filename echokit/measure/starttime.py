"""
C{echokit bench --start-at TIME}: start a run at a wall-clock time, so that several hosts
started by the user's own tools (ssh, pdsh, Ansible, a Kubernetes Job) measure the same
window, and C{echokit merge} can add what they measured.

L{parse_start_at} is sans-IO (the current time is a parameter); L{wait_until} waits on a
reactor's timers.

    >>> parse_start_at("2026-11-29T18:00:00Z", now=1795960000.0)
    1795975200.0
    >>> parse_start_at("1795975200", now=1795960000.0)
    1795975200.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from twisted.internet import task

from echokit.errors import InputError

#: How far ahead a start may be: further is more likely a typo than a plan.
MAX_AHEAD = 24 * 3600.0


def parse_start_at(text: str, now: float) -> float:
    """
    The Unix time C{text} names: ISO 8601 (C{2026-11-29T18:00:00Z}; without a zone, the
    local time) or a Unix timestamp (C{1795975200}, fractions allowed).

    @raise InputError: if it is neither, is not after C{now}, or is more than
        L{MAX_AHEAD} seconds after it.
    """
    given = text.strip()
    try:
        when = float(given)
    except ValueError:
        try:
            moment = datetime.fromisoformat(given)
        except ValueError:
            raise InputError(
                f"--start-at '{text}' is not a time: give ISO 8601 (2026-11-29T18:00:00Z) "
                "or a Unix timestamp (date +%s)"
            ) from None
        when = (moment if moment.tzinfo else moment.astimezone()).timestamp()
    if not when > now:
        raise InputError(
            f"--start-at {given} is in the past ({now - when:,.1f} s ago): give a time "
            "ahead, e.g. --start-at $(( $(date +%s) + 30 ))"
        )
    if when - now > MAX_AHEAD:
        raise InputError(
            f"--start-at {given} is {(when - now) / 3600:,.1f} hours ahead: at most "
            f"{MAX_AHEAD / 3600:.0f} hours"
        )
    return when


async def wait_until(reactor: Any, when: float, clock: Callable[[], float] = time.time) -> float:
    """Wait until the wall clock reads C{when}; return how late we are then (seconds)."""
    while (left := when - clock()) > 0:
        await task.deferLater(reactor, min(left, 1.0), lambda: None)
    return clock() - when
