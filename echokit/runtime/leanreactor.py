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

An event that is only "readable" (the one an echo server gets per message) is handled
in the loop itself, as C{_doReadOrWrite} handles it (the descriptor still open? read;
an exception is logged and disconnects; a read that returns a reason disconnects),
which saves that method's call and its tests for the rarer events: about 6% of the
server's instructions per message at 1 KiB (benchmarks/README.md, section costs).
Every other event goes through C{_doReadOrWrite} unchanged.

Only L{echokit.runtime.reactors.install} creates one; importing this module imports Twisted's
epoll reactor, which is why C{echokit.runtime.reactors} imports it only when it is chosen.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.logger import Logger
from twisted.python import log

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
            if selectable is None:
                continue
            # _doReadOrWrite logs and disconnects on errors from the transport or the
            # protocol, and so does the read-only case here; this outer guard only keeps
            # the loop alive if either fails itself.
            try:
                if event == EPOLLIN:
                    try:
                        why = selectable.doRead() if selectable.fileno() != -1 else _NO_FILEDESC
                    except BaseException:
                        why = sys.exc_info()[1]
                        log.err()
                    if why:
                        self._disconnectSelectable(  # type: ignore[no-untyped-call]
                            selectable, why, why is not _NO_FILEDESC
                        )
                else:
                    dispatch(selectable, fd, event)
            except BaseException:
                _log.failure("error dispatching an event for {selectable}", selectable=selectable)

    doIteration = doPoll
