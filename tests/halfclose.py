"""
A client that half-closes at the moment it matters: while the server holds echo it
cannot send.

An echo server that closes at the client's FIN (a protocol without
C{IHalfCloseableProtocol}) loses only the echo still queued in its own memory; echo
already in kernel buffers is delivered anyway. So a half-close test proves something
only if, when the server reads the FIN, it has read every byte sent, its kernel send
buffer and the client's receive buffer are full, and some echo is still queued in the
server process. L{fill_until_server_holds_echo} gets there without reading anything:
it sends in steps small enough that the server never stops reading (it pauses reading
once it queues L{echokit.transports.fastpath.READ_SIZE}), waits after each step until
the server has read it, and stops once the kernel queues between server and client hold
less than was sent: the difference is in the server's memory. It sends one step more, so the server
holds at least a step's echo when the client's FIN comes.

The queues are the kernel's own counts: C{SIOCINQ}/C{SIOCOUTQ} on the client's socket,
and the server socket's C{tx_queue}/C{rx_queue} in C{/proc/net/tcp} or C{tcp6} (a unix
socket's data sits in its reader's queue, so the client's two counts tell it all).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes sent per step: well under the 256 KiB an echokit server queues before pausing.
STEP = 64 * 1024


def _ioctl_count(sock: socket.socket, request: int) -> int:
    count: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]
    return count


def unread(sock: socket.socket) -> int:
    """Bytes waiting in C{sock}'s receive queue (C{SIOCINQ})."""
    return _ioctl_count(sock, termios.FIONREAD)


def unsent(sock: socket.socket) -> int:
    """Bytes written to C{sock} that its peer has not taken: not yet acknowledged (tcp)
    or not yet read (unix) (C{SIOCOUTQ})."""
    return _ioctl_count(sock, termios.TIOCOUTQ)


def server_queues(sock: socket.socket) -> tuple[int, int]:
    """
    The kernel queues of the server's end of tcp connection C{sock}: bytes it wrote
    that the client has not acknowledged, and bytes it has not read yet.
    """
    local_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    table = "/proc/net/tcp6" if sock.family == socket.AF_INET6 else "/proc/net/tcp"
    with open(table) as lines:
        next(lines)
        for line in lines:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == server_port and (
                int(remote.rsplit(":", 1)[1], 16) == local_port
            ):
                tx, rx = queues.split(":")
                return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no server socket for port {local_port} in {table}")


@dataclass
class Held:
    """What L{fill_until_server_holds_echo} sent, and the echo the server holds."""

    sent: bytes
    in_kernel: int  # echo bytes in the kernel queues between server and client

    @property
    def in_server(self) -> int:
        """Echo bytes queued in the server process (at least; more under TLS)."""
        return len(self.sent) - self.in_kernel


def _downstream(sock: socket.socket) -> tuple[int, bool]:
    """Echo bytes in kernel queues, and whether the server has read all that was sent."""
    if sock.family == socket.AF_UNIX:
        return unread(sock), unsent(sock) == 0
    server_tx, server_rx = server_queues(sock)
    return server_tx + unread(sock), server_rx == 0 and unsent(sock) == 0


def fill_until_server_holds_echo(
    sock: socket.socket,
    send: Callable[[bytes], None] | None = None,
    limit: int = 128 << 20,
    seconds: float = 30.0,
) -> Held:
    """
    Send random bytes on C{sock}, reading nothing, until the server has read them all
    and holds some of their echo in its own memory (see the module docstring).

    @param send: how to send a step (default C{sock.sendall}); a TLS client passes its
        own, and then the counts compare plaintext sent with ciphertext queued, which
        only makes the server's share larger.
    @raise AssertionError: if that state is not reached within C{limit} bytes or
        C{seconds}, or the server stops reading before it.
    """
    sendall = send or sock.sendall
    sent = bytearray()
    deadline = time.monotonic() + seconds
    holding = False
    while len(sent) < limit and time.monotonic() < deadline:
        step = os.urandom(STEP)
        sendall(step)
        sent += step
        in_kernel = _settled(sock, len(sent))
        if holding:  # one step more than needed: the server holds at least a step
            return Held(bytes(sent), in_kernel)
        holding = in_kernel < len(sent)
    raise AssertionError(f"the server held no echo after {len(sent):,} bytes")


def _settled(sock: socket.socket, sent: int, seconds: float = 10.0) -> int:
    """
    Wait until the server has read all C{sent} bytes and the counts have held still for
    a few polls (it has written the echo of what it read); the echo bytes in kernel queues.
    """
    deadline = time.monotonic() + seconds
    readings: list[tuple[int, bool]] = []
    while time.monotonic() < deadline:
        time.sleep(0.002)
        readings = [*readings[-2:], _downstream(sock)]
        if len(readings) == 3 and readings[-1][1] and len(set(readings)) == 1:
            return readings[-1][0]
    raise AssertionError(f"the server stopped reading after {sent:,} bytes, before holding echo")


def read_to_end(sock: socket.socket, seconds: float = 30.0) -> bytes:
    """Everything C{sock} receives until the peer closes (a reset ends it too)."""
    sock.settimeout(seconds)
    received = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)
