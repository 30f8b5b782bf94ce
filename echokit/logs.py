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
import time
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
    textFileLogObserver,
)
from zope.interface import implementer

from echokit.policy import EveryInterval

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


def start_logging(out: IO[str], level_name: str) -> None:
    """Send log events at or above C{level_name} to C{out}, filtered as described above."""
    level = LogLevel.levelWithName(level_name)
    text = textFileLogObserver(out)
    shown = FilteringLogObserver(
        text, [QuietTwisted(level), LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo([shown, AcceptTroubleWarnings(text)], redirectStandardIO=False)
