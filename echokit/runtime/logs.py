"""
Where echokit's log lines go, and which ones are shown.

Logging uses C{twisted.logger}. C{start_logging} sends events at or above a level to a
text file (stderr), hides Twisted's own informational chatter ("starting on", "Stopping
factory", "Main loop terminated"; shown with C{-v}), and turns Twisted's reports of
running out of file descriptors on accept into one echokit warning per interval, so an
overloaded server says why without flooding its log.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from echokit.errors import InputError
from echokit.runtime.policy import EveryInterval

#: Twisted's log formats that mean accept() failed for lack of resources.
_ACCEPT_TROUBLE = ("EMFILE encountered", "Could not accept new connection")


def _is_twisted_chatter(event: LogEvent) -> bool:
    namespace = event.get("log_namespace", "")
    internal = namespace == "log_legacy" or namespace.startswith("twisted.")
    return (
        internal
        and event.get("log_level", LogLevel.info) < LogLevel.warn
        and not event.get("isError")
    )


@implementer(ILogFilterPredicate)
class QuietTwisted:
    """Hide Twisted's informational events unless C{level} is debug."""

    def __init__(self, level: Any) -> None:
        self.level = level

    def __call__(self, event: LogEvent) -> Any:
        if self.level > LogLevel.debug and _is_twisted_chatter(event):
            return PredicateResult.no
        return PredicateResult.maybe


@implementer(ILogObserver)
class AcceptTroubleWarnings:
    """
    Turn Twisted's "could not accept" events into one warning per C{interval} seconds.

    Twisted keeps serving when accept() fails with EMFILE (it closes the new connection
    using a reserved descriptor), but says so at info level, once per connection.
    """

    def __init__(self, observer: ILogObserver, interval: float = 10.0) -> None:
        self.observer = observer
        self.gate = EveryInterval(interval)

    def __call__(self, event: LogEvent) -> None:
        text = str(event.get("log_format", ""))
        if not text.startswith(_ACCEPT_TROUBLE):
            return
        suppressed = self.gate.ready(time.monotonic())
        if suppressed is None:
            return
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        self.observer(
            {
                "log_format": (
                    "cannot accept new connections: out of file descriptors (open files "
                    "limit {soft}); new connections are being closed{more}. Raise the limit "
                    "(ulimit -n) or lower --max-connections"
                ),
                "soft": soft,
                "more": more,
                "log_level": LogLevel.warn,
                "log_namespace": "echokit.serve",
                "log_system": "echokit.serve",
                "log_time": event.get("log_time", time.time()),
            }
        )


def open_log(path: Path | None) -> IO[str]:
    """The file log lines go to: C{path} (appended to, line-buffered) or stderr."""
    if path is None:
        return sys.stderr
    try:
        return open(path, "a", buffering=1, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot open log file '{path}': {e.strerror}") from None


def start_logging(level_name: str, log_format: str = "text", path: Path | None = None) -> None:
    """
    Send log events at or above C{level_name} to C{path} (or stderr), filtered as above.

    @param log_format: C{"text"} for Twisted's usual lines, C{"json"} for one JSON object
        per line (C{twisted.logger}'s JSON form, newline-delimited): every connection
        event carries its C{listener}, C{transport} and C{peer} fields.
    """
    level = LogLevel.levelWithName(level_name)
    out = open_log(path)
    observer: ILogObserver
    if log_format == "json":
        observer = jsonFileLogObserver(out, recordSeparator="")
    else:
        observer = textFileLogObserver(out)
    shown = FilteringLogObserver(
        observer, [QuietTwisted(level), LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo(
        [shown, AcceptTroubleWarnings(observer)], redirectStandardIO=False
    )
