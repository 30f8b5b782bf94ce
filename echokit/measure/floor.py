"""
The machine's own round trip, measured beside the transports: C{echokit compare}'s floor.

On a VM the cost of a loopback round trip changes by itself: on the 2-CPU VM where
echokit is developed, a native C ping-pong pinned to one CPU read p50 8 us for a few
seconds, then 11 us, with nothing else running. Every transport's p50 moves with it, so
two runs of C{compare} a minute apart can disagree by a third about every transport
while agreeing about how they compare. A figure that says how fast the machine was
during the run lets a reader tell the two apart.

L{FloorProbe} is that figure: the same blocking client that measures tcp, unix, ssl and
udp (L{BlockingProbe}), sending the same messages, but to a plain Python thread that
echoes over a unix socket pair: no event loop, no echokit server, no protocol. What is
left is what every transport pays: two threads of one Python process woken by the
kernel, the system calls, the copies. It takes turns in the same rounds as the
transports (L{echokit.measure.interleave}), so it sees the same stretches of the
machine's speed as they do.

Only for messages up to 64 KiB, as for the blocking probe: a larger message written
whole before its echo is read would fill the socket pair's buffers both ways.

A transport's p50 divided by the floor's p50 (C{x floor} in the table; the floor's
percentiles are C{latency_floor_us} in JSON) is then what that transport costs over the
bare machine, a figure that can be compared from run to run when the absolute ones
cannot (L{EndpointResult.times_floor}).
"""

from __future__ import annotations

import socket
import threading

from echokit.client.connect import ClientOptions
from echokit.measure.bench import BenchSettings, BlockingProbe, EndpointResult
from echokit.transports.grammar import EndpointSpec

#: How the floor is named where a probe's name shows (its errors).
FLOOR_NAME = "floor"


class FloorProbe(BlockingProbe):
    """
    A L{BlockingProbe} whose peer is a thread of this process echoing over a unix
    socket pair. Like any probe its methods block (call them in a worker thread);
    L{close} stops the echo thread too.
    """

    def __init__(self, options: ClientOptions, settings: BenchSettings) -> None:
        result = EndpointResult(endpoint=FLOOR_NAME, transport="unix", size=settings.size)
        super().__init__(EndpointSpec(FLOOR_NAME, "unix"), options, settings, result)
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Make the socket pair and start the thread that echoes on its far end."""
        near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        thread = threading.Thread(
            target=_echo, args=(far, self.settings.size), name="echokit-floor", daemon=True
        )
        try:
            near.settimeout(self.options.timeout)
            thread.start()
        except BaseException:  # (RuntimeError: no thread) neither end is left open
            near.close()
            far.close()
            raise
        self._sock, self.result.family, self._thread = near, "unix", thread

    def close(self) -> None:
        """Close the near end (the echo thread sees end of file and ends); wait for it."""
        super().close()
        if self._thread is not None:
            self._thread.join(self.options.timeout)
            self._thread = None


def _echo(sock: socket.socket, size: int) -> None:
    """Echo what C{sock} receives until end of file, in blocking calls; then close it."""
    buffer = bytearray(max(size, 65536))
    view = memoryview(buffer)
    with sock:
        try:
            while got := sock.recv_into(buffer):
                sock.sendall(view[:got])
        except OSError:
            pass  # the near end went away mid-echo: nothing is waiting for the rest
