"""
Which reactor runs echokit, and echokit's own lean variant of Twisted's epoll reactor.

C{--reactor} chooses:

    - C{lean} (the default on Linux): L{LeanEPollReactor}, Twisted's epoll reactor
      without the per-event log-context bookkeeping (see below);
    - C{epoll}: Twisted's own epoll reactor, unchanged;
    - C{asyncio}: Twisted's asyncio reactor on the standard event loop;
    - C{uvloop}: Twisted's asyncio reactor on uvloop, if uvloop is installed.

Twisted's reactors run every read and write event inside C{log.callWithLogger}, which
asks the transport for its log prefix and copies a context dictionary so that legacy
C{log.msg} calls made during the event are labelled with it. For an echo server that is
the largest single cost per message after the system calls (measured with py-spy:
about a quarter of the server's time at 1 KiB). echokit logs through
C{twisted.logger} with explicit fields, so it does not need that label;
L{LeanEPollReactor} dispatches events directly and keeps Twisted's error handling
(an exception in a read or write is logged and disconnects that transport, as before).

Installing a reactor is the CLI's business alone (L{install}); everything else takes the
reactor as an argument.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

REACTORS = ("lean", "epoll", "asyncio", "uvloop")
DEFAULT = "lean" if sys.platform.startswith("linux") else "asyncio"

_log = Logger(namespace="echokit.reactor")


class LeanEPollReactor(EPollReactor):
    """An L{EPollReactor} that dispatches I/O events without a log context per event."""

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch: Any = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                # _doReadOrWrite logs and disconnects on errors from the transport or
                # the protocol; this guard only keeps the loop alive if it fails itself.
                try:
                    dispatch(selectable, fd, event)
                except BaseException:
                    _log.failure(
                        "error dispatching an event for {selectable}", selectable=selectable
                    )

    doIteration = doPoll


class ReactorUnavailable(Exception):
    """The chosen reactor cannot run here."""


def install(name: str) -> Any:
    """
    Install the reactor called C{name} (one of L{REACTORS}) as the global reactor.

    @raise ReactorUnavailable: with a one-line reason.
    """
    from twisted.internet.main import installReactor

    if name == "lean":
        reactor: Any = LeanEPollReactor()  # type: ignore[no-untyped-call]  # Twisted's __init__
        installReactor(reactor)
        return reactor
    if name == "epoll":
        from twisted.internet import epollreactor

        epollreactor.install()
    elif name in ("asyncio", "uvloop"):
        import asyncio

        if name == "uvloop":
            try:
                import uvloop  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                raise ReactorUnavailable(
                    "--reactor uvloop needs uvloop: pip install uvloop"
                ) from None
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    else:
        raise ReactorUnavailable(f"unknown reactor '{name}': choose one of {', '.join(REACTORS)}")
    from twisted.internet import reactor as installed

    return installed
