"""
echokit's lean variant of Twisted's epoll reactor (C{--reactor lean}, the default on Linux).

Twisted's reactors run every read and write event inside C{log.callWithLogger}, which
asks the transport for its log prefix and copies a context dictionary so that legacy
C{log.msg} calls made during the event are labelled with it. For an echo server that is
the largest single cost per message after the system calls (measured with py-spy:
about a quarter of the server's time at 1 KiB). echokit logs through
C{twisted.logger} with explicit fields, so it does not need that label;
L{LeanEPollReactor} dispatches events directly and keeps Twisted's error handling
(an exception in a read or write is logged and disconnects that transport, as before).

Only L{echokit.runtime.reactors.install} creates one; importing this module imports Twisted's
epoll reactor, which is why C{echokit.runtime.reactors} imports it only when it is chosen.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

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
