"""
The echo protocols and endpoints for UDP.

Twisted has no endpoint strings for UDP, so echokit adds two small endpoint classes that
play the same role as Twisted's stream endpoints: L{UDPServerEndpoint} (C{udp:PORT},
C{udp6:PORT}) listens, and L{UDPClientEndpoint} (C{udp:host=...:port=...}, or
C{udp6:host=...:port=...} for IPv6 only) makes a connected UDP socket, so that an ICMP "port unreachable" shows up as "refused".

L{EchoDatagramServer} sends each datagram back to its sender, intact up to the largest
UDP payload (65,507 bytes over IPv4, 65,527 over IPv6; Twisted's default read size
would cut them at 8,192). It is not a reflection amplifier: a reply is never larger than
the request, it binds to loopback unless given an interface, it ignores datagrams from
source ports below 1024, where other echo and chargen services live, and it stops
answering a source that keeps repeating the very same datagram (L{RepeatGuard}): two
echo servers aimed at each other would otherwise bounce one datagram forever.

L{EchoDatagramClient} sends one datagram at a time and waits, up to a timeout, for its
echo; the sans-IO L{DatagramLedger} counts what was answered and what was lost.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echokit.echo import MAX_UDP_PAYLOAD_IPV4, MAX_UDP_PAYLOAD_IPV6, DatagramLedger
from echokit.errors import ConnectFailed, InputError
from echokit.runtime.policy import EveryInterval, RepeatGuard, ServerPolicy
from echokit.transports.fastpath import read_datagrams_as_they_come

#: Every server log line is in this namespace, whichever class writes it.
_log = Logger(namespace="echokit.serve")
#: Read size for UDP sockets: larger than any datagram, so none is ever truncated.
READ_SIZE = 65_536
#: Datagrams from source ports below this are dropped (see the module docstring).
LOWEST_SOURCE_PORT = 1024


def warn_dropped(
    throttle: EveryInterval, now: float, listener: str, transport: str, addr: Any, why: str
) -> None:
    """
    Log that a server on C{listener} dropped a datagram from C{addr}, and why: at most one
    line per C{throttle} interval, saying how many more were dropped since the last one.
    The UDP and QUIC servers both use it.
    """
    suppressed = throttle.ready(now)
    if suppressed is not None:
        _log.warn(
            "{listener}: dropped a datagram from {host}:{port}: {why}{more}",
            listener=listener,
            transport=transport,
            host=addr[0],
            port=addr[1],
            why=why,
            more=f" ({suppressed} more dropped since the last message)" if suppressed else "",
        )


class DatagramTransport(TypingProtocol):
    """What echokit's datagram protocols use of Twisted's UDP port (C{IUDPTransport})."""

    def write(self, packet: bytes, addr: Any = None) -> None: ...
    def stopListening(self) -> Any: ...


class EchoDatagramServer(DatagramProtocol):
    """
    Echo each datagram back to the address it came from, unless it would feed a loop.

    Dropped without reply: datagrams from source ports below 1024, and identical
    datagrams repeated by one source beyond the L{RepeatGuard}'s budget.

    @ivar stats: datagrams and bytes echoed, datagrams dropped, send errors.
    """

    noisy = False
    transport: DatagramTransport  # type: ignore[assignment]

    def __init__(
        self,
        listener: str,
        clock: IReactorTime,
        policy: ServerPolicy | None = None,
        verbose: bool = False,
    ) -> None:
        self.listener = listener
        self.clock = clock
        policy = policy or ServerPolicy()
        self.guard = RepeatGuard(policy.udp_repeat_burst, policy.udp_repeat_rate)
        self.verbose = verbose
        self.stats = DatagramStats()
        self._drops = EveryInterval(10.0)

    def startProtocol(self) -> None:
        read_datagrams_as_they_come(self.transport)
        sock = getattr(self.transport, "socket", None)
        # Straight to the socket where there is one: Twisted's write re-checks the address
        # on every datagram, and the address came from the kernel a moment ago.
        self._send: Callable[[bytes, tuple[str, int]], object] = (
            sock.sendto if isinstance(sock, socket.socket) else self.transport.write
        )

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if addr[1] < LOWEST_SOURCE_PORT:
            self._drop(addr, "its source port is below 1024")
            return
        guard = self.guard
        if guard.is_repeat(addr, datagram) and not guard.allow_repeat(addr, self.clock.seconds()):
            self._drop(addr, "it repeats the same datagram too often (a reflection loop?)")
            return
        try:
            self._send(datagram, addr)
        except BlockingIOError:
            self.stats.errors += 1  # the send buffer is full: this datagram is dropped
            return
        except OSError as e:
            self.stats.errors += 1
            _log.warn(
                "{listener}: could not echo to {host}:{port}: {error}",
                listener=self.listener,
                transport="udp",
                host=addr[0],
                port=addr[1],
                error=e,
            )
            return
        self.stats.datagrams += 1
        self.stats.bytes += len(datagram)
        if self.verbose:
            _log.debug(
                "{listener}: echoed {size} bytes to {host}:{port}",
                listener=self.listener,
                transport="udp",
                size=len(datagram),
                host=addr[0],
                port=addr[1],
            )

    def _drop(self, addr: tuple[str, int], why: str) -> None:
        self.stats.dropped += 1
        warn_dropped(self._drops, self.clock.seconds(), self.listener, "udp", addr, why)


@dataclass
class DatagramStats:
    """What one UDP listener did: for the summary printed at shutdown."""

    datagrams: int = 0
    bytes: int = 0
    dropped: int = 0
    errors: int = 0


@dataclass(frozen=True)
class DatagramEcho:
    """One datagram's fate: its echo and round-trip time, or C{None} for both if lost."""

    payload: bytes
    echo: bytes | None
    rtt: float | None


class EchoDatagramClient(DatagramProtocol):
    """
    Send datagrams one at a time over a connected UDP socket and wait for each echo.

    @ivar ledger: answered, lost and unexpected counts.
    @ivar repeats: how many identical datagrams in a row were sent, the last included.
    """

    transport: DatagramTransport  # type: ignore[assignment]

    def __init__(self, clock: IReactorTime, timeout: float, max_payload: int) -> None:
        self.clock = clock
        self.timeout = timeout
        self.max_payload = max_payload
        self.noisy = False
        self.ledger = DatagramLedger()
        self._waiting: defer.Deferred[DatagramEcho] | None = None
        self._timer: IDelayedCall | None = None
        self._payload = b""
        self.repeats = 0
        self._sent_at = 0.0
        self.refused = False
        self.stopped = False
        self._port: DatagramTransport | None = None

    def request(self, payload: bytes) -> defer.Deferred[DatagramEcho]:
        """
        Send C{payload} as one datagram and wait for its echo.

        @return: a Deferred firing with a L{DatagramEcho} (C{echo=None} if it was lost),
            or failing with L{ConnectFailed} if nothing listens at the address.
        """
        if len(payload) > self.max_payload:
            raise InputError(
                f"a {len(payload)}-byte message does not fit in one UDP datagram: "
                f"the limit is {self.max_payload} bytes"
            )
        assert self._waiting is None, "one datagram at a time"
        if self.stopped:
            return defer.fail(
                ConnectFailed(
                    "UDP datagram refused (ICMP port unreachable): is a UDP server there?"
                )
                if self.refused
                else ConnectFailed("the UDP socket was closed")
            )
        self._waiting = defer.Deferred()
        self.repeats = self.repeats + 1 if self.repeats and payload == self._payload else 1
        self._payload = payload
        self.ledger.sent(payload)
        self._sent_at = self.clock.seconds()
        self._timer = self.clock.callLater(self.timeout, self._timed_out)
        try:
            self.transport.write(payload)
        except OSError as e:
            self._settle_failure(ConnectFailed(f"cannot send UDP datagram: {e}"))
        return self._waiting

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self.ledger.received(datagram) and self._waiting is not None:
            rtt = self.clock.seconds() - self._sent_at
            self._settle(DatagramEcho(self._payload, datagram, rtt))

    def connectionRefused(self) -> None:
        self.refused = True
        self._settle_failure(
            ConnectFailed("UDP datagram refused (ICMP port unreachable): is a UDP server there?")
        )

    def startProtocol(self) -> None:
        # Twisted clears self.transport before calling stopProtocol: keep the port.
        self._port = self.transport

    def stopProtocol(self) -> None:
        """
        The port closed. Twisted's epoll reactor closes a connected UDP port whose socket
        reports an error (EPOLLERR) instead of calling L{connectionRefused}, so read the
        socket's pending error here, while it is still open, and report it the same way.
        """
        self.stopped = True
        sock = getattr(self._port, "socket", None)
        pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock is not None else 0
        if pending == errno.ECONNREFUSED:
            self.connectionRefused()
        elif pending:
            self._settle_failure(ConnectFailed(f"UDP socket error: {os.strerror(pending)}"))
        else:
            self._settle_failure(ConnectFailed("the UDP socket was closed"))

    def _timed_out(self) -> None:
        self._timer = None
        self.ledger.timed_out()
        self._settle(DatagramEcho(self._payload, None, None))

    def _settle(self, result: DatagramEcho) -> None:
        waiting, self._waiting = self._waiting, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if waiting is not None:
            waiting.callback(result)

    def _settle_failure(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if waiting is not None:
            waiting.errback(error)


class UDPServerEndpoint:
    """
    Listen for UDP datagrams, the way a Twisted server endpoint listens for streams.

        >>> from twisted.internet.testing import MemoryReactor
        >>> UDPServerEndpoint(MemoryReactor(), 16000, "127.0.0.1").port
        16000
    """

    def __init__(self, reactor: IReactorUDP, port: int, interface: str) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface

    def listen(self, protocol: DatagramProtocol) -> defer.Deferred[IListeningPort]:
        """Bind the port and start C{protocol}; fails like C{listenUDP} does."""
        return defer.execute(
            self.reactor.listenUDP,
            self.port,
            protocol,
            interface=self.interface,
            maxPacketSize=READ_SIZE,
        )


class UDPClientEndpoint:
    """
    A connected UDP socket to C{host}:C{port}; C{host} may be a name or an IP literal.

    @ivar ipv6_only: reach C{host} over IPv6 only (C{udp6:}); else IPv4 is preferred.
    """

    def __init__(self, reactor: IReactorUDP, host: str, port: int, ipv6_only: bool = False) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.ipv6_only = ipv6_only

    @defer.inlineCallbacks
    def connect(self, protocol: EchoDatagramClient):  # type: ignore[no-untyped-def]
        """Resolve the host, bind an ephemeral port and connect it; fire with C{protocol}."""
        address = yield self._resolve()
        family_any = "::" if ":" in address else "0.0.0.0"
        protocol.max_payload = min(
            protocol.max_payload, MAX_UDP_PAYLOAD_IPV6 if ":" in address else MAX_UDP_PAYLOAD_IPV4
        )
        port = self.reactor.listenUDP(0, protocol, interface=family_any, maxPacketSize=READ_SIZE)
        port.connect(address, self.port)  # type: ignore[attr-defined]
        return protocol

    def _resolve(self) -> defer.Deferred[str]:
        try:
            literal = ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            if self.ipv6_only and literal.version != 6:
                return defer.fail(
                    ConnectFailed(
                        f"udp6: reaches IPv6 addresses, and {self.host} is IPv4: use udp: for it"
                    )
                )
            return defer.succeed(str(literal))
        family = socket.AF_INET6 if self.ipv6_only else socket.AF_UNSPEC

        def lookup() -> str:
            try:
                infos = socket.getaddrinfo(self.host, self.port, family, socket.SOCK_DGRAM)
            except socket.gaierror as e:
                raise ConnectFailed(f"cannot resolve host '{self.host}': {e.strerror}") from None
            # Prefer IPv4, as echokit's udp:PORT listens on 127.0.0.1 by default.
            infos.sort(key=lambda info: info[0] != socket.AF_INET)
            return str(infos[0][4][0])

        pool = self.reactor.getThreadPool()  # type: ignore[attr-defined]
        return threads.deferToThreadPool(self.reactor, pool, lookup)  # type: ignore[arg-type]
