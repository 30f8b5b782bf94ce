"""
PROXY protocol listeners, C{haproxy:ENDPOINT}: the client's address from the header.

Twisted's PROXY wrapper (C{twisted.protocols.haproxy}; C{HAProxyProtocolWrapper} is in its
private C{_wrapper} module, which this subclasses) parses the header, but it
connects the wrapped protocol as soon as the TCP connection opens, before the header
has arrived, and it does not pass half-close through. For echokit that means the
connection is logged, and counted against C{--max-per-peer}, under the proxy's address
(and released under the client's, so the proxy's count never goes down), and a client's
FIN closes the connection at once, dropping echo still queued.

L{ProxyHeaderProtocol} keeps Twisted's parsing and fixes both: the echo protocol is
connected once the header is read (so C{getPeer} is the client from the header), a
header not complete within C{handshake_timeout} seconds aborts the connection, and
half-close reaches the echo protocol.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

#: Seconds a connection may take to send its PROXY header, unless the policy says.
HEADER_TIMEOUT = 10.0


class _Held:
    """Stands in for the wrapped protocol while the header is parsed: keeps what follows it."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)


@implementer(IHalfCloseableProtocol)
class ProxyHeaderProtocol(HAProxyProtocolWrapper):
    """Twisted's PROXY wrapper, connecting the wrapped protocol once the header is read."""

    factory: ProxyHeaderFactory
    _ready = False
    _timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)  # type: ignore[no-untyped-call]  # Twisted's
        if self.factory.header_timeout:
            self._timer = self.factory.clock.callLater(self.factory.header_timeout, self._late)

    def dataReceived(self, data: bytes) -> None:
        if self._ready:
            self.wrappedProtocol.dataReceived(data)
            return
        inner, held = self.wrappedProtocol, _Held()
        self.wrappedProtocol = held  # type: ignore[assignment]
        try:
            super().dataReceived(data)
        finally:
            self.wrappedProtocol = inner
        if self._proxyInfo is None:
            return  # the header is not complete yet, or was invalid (closing)
        self._ready = True
        self._cancel()
        inner.makeConnection(self)  # type: ignore[arg-type]
        under = self._under
        if held.data and not under.disconnecting and not getattr(under, "_aborting", False):
            # (not if the wrapped protocol refused the connection in connectionMade)
            inner.dataReceived(b"".join(held.data))

    def readConnectionLost(self) -> None:
        half = IHalfCloseableProtocol(self.wrappedProtocol, None) if self._ready else None
        if half is None:
            self._under.loseConnection()
        else:
            half.readConnectionLost()

    def writeConnectionLost(self) -> None:
        half = IHalfCloseableProtocol(self.wrappedProtocol, None) if self._ready else None
        if half is None:
            self._under.loseConnection()
        else:
            half.writeConnectionLost()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel()
        if self._ready:
            HAProxyProtocolWrapper.connectionLost(self, reason)
        else:
            self.factory.unregisterProtocol(self)  # type: ignore[no-untyped-call]  # Twisted's

    @property
    def _under(self) -> Any:
        """The transport under this wrapper (a TCP or unix connection)."""
        return self.transport

    def _late(self) -> None:
        self._timer = None
        self._under.abortConnection()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class ProxyHeaderFactory(HAProxyWrappingFactory):
    """Wraps each connection of C{wrappedFactory} in a L{ProxyHeaderProtocol}."""

    protocol = ProxyHeaderProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, clock: IReactorTime) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]  # Twisted's
        self.clock = clock
        # The echo factory's policy, also from under a TLS layer (haproxy:ssl:...).
        inner = getattr(wrappedFactory, "wrapped", wrappedFactory)
        policy = getattr(wrappedFactory, "policy", getattr(inner, "policy", None))
        self.header_timeout = getattr(policy, "handshake_timeout", HEADER_TIMEOUT)


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """Listen on C{wrapped}; every connection starts with a PROXY header (v1 or v2)."""

    def __init__(self, wrapped: IStreamServerEndpoint, clock: IReactorTime) -> None:
        self.wrapped = wrapped
        self.clock = clock

    def listen(self, protocolFactory: IProtocolFactory) -> Any:
        return self.wrapped.listen(ProxyHeaderFactory(protocolFactory, self.clock))
