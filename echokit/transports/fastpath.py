"""
echokit's ways around Twisted's per-message costs on plain sockets.

Each keeps every guarantee of the plain path (ordering, backpressure, half-close), and
each falls back to Twisted's own behaviour whenever the transport is not the plain
TCP or unix transport it expects:

    - L{SocketWriter}: send at once when nothing is queued, as asyncio does, instead of
      queueing for the next reactor turn (Twisted issue #5303: every echo would cost an
      extra epoll registration and a loop turn);
    - L{read_without_ancillary_data}: unix transports read with C{recv}, not C{recvmsg};
    - L{READ_SIZE}: 256 KiB reads (and buffering before pausing), as asyncio does,
      instead of Twisted's 64 KiB, each from the allocator's heap, never mapped and
      unmapped per read (L{read_in_large_chunks});
    - L{send_without_delay}: TCP_NODELAY on every TCP connection, server and client;
    - L{read_datagrams_as_they_come}: a UDP server that gets one datagram per wake-up
      asks the kernel whether more is queued rather than reading until a read fails.

Measured effects are in benchmarks/README.md, "History: what each change bought".
"""

from __future__ import annotations

import contextlib
import select
import socket
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import tcp, udp, unix
from twisted.logger import Logger

from echokit.runtime.memory import keep_blocks_on_the_heap

_log = Logger()

#: Bytes read per C{recv} on stream connections, and buffered before reading pauses.
READ_SIZE = 256 * 1024


def plain_socket(transport: object) -> socket.socket | None:
    """
    The socket under a plain tcp or unix transport; C{None} for anything else (TLS,
    PROXY wrappers, or a Twisted whose transport looks different).
    """
    if not isinstance(transport, tcp.Connection):
        return None
    if not all(hasattr(transport, name) for name in ("dataBuffer", "_tempDataLen", "socket")):
        return None
    sock = transport.socket
    return sock if isinstance(sock, socket.socket) else None


class SocketWriter:
    """
    Write to a plain transport, through to its socket whenever nothing is queued.

    When nothing is queued, one C{send} usually takes it all; whatever the kernel does
    not take goes through C{transport.write} as usual, so ordering, backpressure (the
    transport pauses its producer when its buffer fills) and closing behave exactly as
    with Twisted's own C{write}.
    """

    # One per connection: without an instance dictionary it takes ~90 bytes less of
    # each idle connection's memory (benchmarks/README.md, section extras).
    __slots__ = ("send", "transport")

    def __init__(self, transport: Any, sock: socket.socket) -> None:
        self.transport = transport
        self.send = sock.send

    def write(self, data: bytes) -> None:
        t = self.transport
        if t.dataBuffer or t._tempDataLen or t.disconnecting:
            t.write(data)  # keep order behind what is queued; let a closing transport decide
            return
        try:
            sent = self.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            t.write(data)  # let Twisted see and report the error
            return
        if sent < len(data):
            t.write(data[sent:])


class Writer(TypingProtocol):
    """Anything echoes can be written to: a L{SocketWriter}, or a transport itself."""

    def write(self, data: bytes) -> None: ...


def writer_for(transport: Any) -> Writer:
    """
    How to write to C{transport}: through a L{SocketWriter} if it is a plain one,
    else with the transport's own C{write}.
    """
    sock = plain_socket(transport)
    return SocketWriter(transport, sock) if sock is not None else transport


def queued_bytes(transport: object) -> int | None:
    """
    Bytes written to C{transport} and not yet sent, looking under wrappers (the TLS
    layer, the PROXY header wrapper) down to the TCP or unix connection; C{None} if
    there is no such connection underneath.
    """
    for _ in range(4):
        if isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataLen"):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        transport = getattr(transport, "transport", None)
    return None


def read_without_ancillary_data(transport: object) -> None:
    """
    Let a unix-socket transport read with C{recv} rather than C{recvmsg}.

    Twisted's unix transports read with C{recvmsg} so that protocols can receive file
    descriptors; echokit never does, and C{recvmsg} costs noticeably more per read than
    C{recv} (measured: about a tenth of the server's time at 1 KiB). Twisted's TCP read
    is exactly that plain C{recv}, so the transport gets that method.
    """
    if type(transport) is unix.Server and hasattr(tcp.Connection, "doRead"):
        # A class, not a bound method stored on the transport: that one would point back
        # at the transport, and keep every closed connection (and its unsent echo) alive
        # until the garbage collector's next full pass.
        transport.__class__ = _PlainReadUnixServer


class _PlainReadUnixServer(unix.Server):
    """Twisted's unix server transport, reading with TCP's plain C{recv}."""

    doRead = tcp.Connection.doRead  # type: ignore[assignment]


def read_in_large_chunks(transport: object) -> None:
    """
    Read (and buffer before pausing) L{READ_SIZE} bytes at a time on C{transport}, with
    each read's block served from the C allocator's heap (L{keep_blocks_on_the_heap}).

    C{recv(READ_SIZE)} allocates a 256 KiB bytes object for every read, even of 64
    bytes, and shrinks it to what was read. Above glibc's initial mmap threshold (128
    KiB), a fresh process maps each such block and unmaps it again: mmap, mremap,
    munmap and a page fault on every read, until the process first frees one whole (its
    first connection closing), which raises the threshold. Measured on the 2-vCPU
    development VM with C{compare --server-process}: tcp p50 42-45 us before any
    connection had closed, 13-20 us after; a latency that depended on the process's
    history. Raising the threshold before the first read makes every read cost the
    same from the start: reading into one shared buffer and copying out what was read
    did too, but cost tcp 18% more instructions per 1 KiB echo (23.0k against 27.1k,
    section costs).
    """
    if isinstance(transport, tcp.Connection):
        keep_blocks_on_the_heap(READ_SIZE)
        transport.bufferSize = READ_SIZE


def send_without_delay(transport: object) -> None:
    """
    Turn Nagle's algorithm off (TCP_NODELAY) on a TCP transport, TLS-wrapped or not.

    An echo is a small write its peer waits for. With Nagle on, a write made while an
    earlier segment is unacknowledged waits for that ACK, which the peer delays by up to
    40 ms: a TLS record split in two segments ran at about 300 msg/s. Transports without
    the option (unix sockets, UDP, in-memory ones) are left alone.
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is None:
        return
    with contextlib.suppress(OSError):  # EOPNOTSUPP: unix sockets, where Twisted passes it on
        setter(True)


def read_datagrams_as_they_come(port: object) -> None:
    """
    Let a UDP port skip the read that finds its socket empty while datagrams come one
    per wake-up (L{_BatchAwareUDPPort}); other ports are left alone.
    """
    if type(port) is udp.Port:
        port.__class__ = _BatchAwareUDPPort  # a class, like read_without_ancillary_data


#: The errors that end a UDP port's reading for this wake-up (Twisted's two lists).
_READ_ENDS = frozenset(udp._sockErrReadIgnore + udp._sockErrReadRefuse)


class _BatchAwareUDPPort(udp.Port):
    """
    Twisted's UDP port, asking the kernel whether more is queued after a lone datagram
    instead of reading the socket until it fails.

    Twisted's port reads datagrams until C{recvfrom} fails with EAGAIN (or 256 KiB were
    read). With one datagram in flight, as a latency probe or a request-response client
    has, every wake-up finds one datagram, so every round trip pays for a read that
    fails: a system call and a Python exception, 1.4 us on the development VM (a tcp
    connection reads once per wake-up). After a wake-up that found just one datagram,
    this port reads one and then polls its socket without waiting (C{poll} with a zero
    timeout, 0.43 us there): if more is queued it reads on until empty, as Twisted does,
    and stays in that mode; if not it returns to the reactor. No datagram waits either
    way, and under load, where wake-ups find several datagrams, it reads exactly as
    Twisted's port does.
    """

    _one_at_a_time = False
    _poller: Any = None

    def doRead(self) -> None:
        if self._one_at_a_time:
            try:
                data, addr = self.socket.recvfrom(self.maxPacketSize)
            except OSError as e:
                self._read_failed(e)
                return
            # Asked before the echo goes out: the poll lets other threads of this
            # process run, and once the echo is sent one may be waiting for it (a
            # latency probe's), which would then hold up the rest of this read.
            more = self._more_queued()
            self._hand_on(data, addr)
            if not more:
                return
            self._one_at_a_time = False  # a queue built up: read in batches again
        self._one_at_a_time = self._read() == 1

    def _read(self) -> int:
        """
        Read datagrams and hand each to the protocol until the socket is empty or
        C{maxThroughput} bytes were read: how many were read. Twisted's own loop,
        counting.
        """
        recvfrom, size, protocol = self.socket.recvfrom, self.maxPacketSize, self.protocol
        trim = self.addressFamily == socket.AF_INET6
        read = count = 0
        while read < self.maxThroughput:
            try:
                data, addr = recvfrom(size)
            except OSError as e:
                self._read_failed(e)
                break
            read, count = read + len(data), count + 1
            if trim:
                addr = addr[:2]  # (host, port), as Twisted's port gives it
            try:
                protocol.datagramReceived(data, addr)
            except BaseException:
                _log.failure("a datagram's protocol failed")
        return count

    def _hand_on(self, data: bytes, addr: Any) -> None:
        """Give one datagram to the protocol, as L{_read} does."""
        if self.addressFamily == socket.AF_INET6:
            addr = addr[:2]
        try:
            self.protocol.datagramReceived(data, addr)
        except BaseException:
            _log.failure("a datagram's protocol failed")

    def _read_failed(self, error: OSError) -> None:
        """A read failed: nothing more to read now (EAGAIN, refused), or raise it."""
        if error.args[0] in udp._sockErrReadRefuse and self._connectedAddr:
            self.protocol.connectionRefused()
        elif error.args[0] not in _READ_ENDS:
            raise error

    def connectionLost(self, reason: Any = None) -> None:
        self._poller = None  # it watched this socket's descriptor, closed now
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _more_queued(self) -> bool:
        """Whether the socket has another datagram ready, without waiting."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.socket.fileno(), select.POLLIN)
        return bool(self._poller.poll(0))
