"""
The TLS layer of echokit's TLS listeners, on the standard library's C{ssl.MemoryBIO}.

L{TLSServerProtocol} is the protocol of a listener's TCP connection (ciphertext in and
out) and the transport of the protocol it wraps (plaintext), as Twisted's
C{twisted.protocols.tls.TLSMemoryBIOProtocol} is; echokit's TLS I{clients} still use
Twisted's. The server has its own because its TLS costs per record decide the echo
rate: pyOpenSSL goes through cffi for every call, the stdlib's C{ssl} module is C
(measured: 8.9 us against 4.4 us to decrypt a 1 KiB record and encrypt its echo).

What it does, for an echo server:

    - All plaintext decrypted from one read is handed to the wrapped protocol at once,
      and all ciphertext produced meanwhile leaves in one write at the end of the read
      (written through to the socket when nothing is queued: L{echokit.transports.fastpath}).
    - The peer's close_notify, and a TCP FIN without one (C{ncat --ssl} ends so), both
      mean the peer has sent all it will: the wrapped protocol's C{readConnectionLost}
      (L{IHalfCloseableProtocol}), so the echo still on its way is delivered.
    - C{loseConnection} sends everything written, then close_notify, then closes TCP
      once that is flushed; it does not wait for the peer's close_notify.
    - A TLS error (a failed handshake, a bad record) sends OpenSSL's alert, closes, and
      reaches the wrapped protocol's C{connectionLost} as the C{ssl.SSLError}.
    - Backpressure passes straight through: the wrapped protocol's producer is
      registered on the TCP connection, and pausing this transport pauses its reads.

Use it through L{TLSServerEndpoint} or L{TLSServerFactory}, with a context from
L{echokit.transports.tls.server_context}:

    endpoint = TLSServerEndpoint(TCP4ServerEndpoint(reactor, 16000), context)
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from echokit.transports.fastpath import (
    Writer,
    read_in_large_chunks,
    send_without_delay,
    writer_for,
)
from echokit.transports.stream import StreamTransport

#: The most plaintext one TLS record carries, and so one C{SSLObject.read} returns.
RECORD_SIZE = 16 * 1024

#: What a closed L{TLSServerProtocol} wraps: nothing that points back at it.
_DETACHED = Protocol()


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableProtocol)
class TLSServerProtocol(Protocol):
    """
    Server-side TLS between a TCP connection and the protocol it wraps.

    @ivar wrapped: the plaintext protocol; this object is its transport.
    @ivar disconnecting: C{True} once the connection is being closed.
    """

    transport: StreamTransport  # type: ignore[assignment]  # the TCP connection
    disconnecting = False
    _handshake_done = False
    _receiving = False
    _aborted = False
    _close_requested = False  # loseConnection was called (maybe waiting for the handshake)
    _peer_done = False  # the wrapped protocol has heard that the peer sent all it will
    _failure: Failure | None = None
    _writer: Writer  # the TCP connection's (L{echokit.transports.fastpath.writer_for}), set in makeConnection

    def __init__(self, context: ssl.SSLContext, wrapped: IProtocol) -> None:
        self.wrapped = wrapped
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._pending: list[bytes] = []  # written before the handshake completed

    # -- the TCP connection's protocol ----------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        self._writer = writer_for(transport)
        read_in_large_chunks(transport)
        send_without_delay(transport)  # each record is awaited by the peer
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        self.wrapped.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        if self.disconnecting:
            return  # closing (the TCP connection reads no more), aborted or failed
        self._incoming.write(data)
        self._receiving = True
        try:
            if self._handshake_done or self._handshake():
                self._deliver()
        finally:
            self._receiving = False
            if not self._aborted:
                self._flush()

    def readConnectionLost(self) -> None:
        """A TCP FIN: the peer has sent all it will, even without a close_notify."""
        self._peer_finished()

    def writeConnectionLost(self) -> None:
        half = IHalfCloseableProtocol(self.wrapped, None)
        if half is not None:
            half.writeConnectionLost()
        else:
            self.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.disconnecting = True
        # The wrapped protocol points back at this layer (its transport): drop it, so
        # that reference counting frees both at once, unsent echo and all, instead of
        # leaving the pair to the garbage collector's next full pass.
        wrapped, self.wrapped = self.wrapped, _DETACHED
        failure, self._failure = self._failure, None
        wrapped.connectionLost(failure or reason)

    # -- TLS ----------------------------------------------------------------------------

    def _handshake(self) -> bool:
        """Go on with the handshake; C{True} once it has completed."""
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as e:
            self._fail(e)
            return False
        self._handshake_done = True
        pending, self._pending = self._pending, []
        for data in pending:  # first what was written before, in order
            self._tls.write(data)
        if self._close_requested:
            self._close()  # loseConnection waited for the handshake to send those
            return False
        listener = IHandshakeListener(self.wrapped, None)
        if listener is not None:
            listener.handshakeCompleted()
        return not (self._aborted or self.disconnecting)

    def _deliver(self) -> None:
        """
        Decrypt everything readable and hand it over in one piece.

        A record carries at most 16 KiB of plaintext: each C{read} asks for that much
        (not more, which would only allocate a larger buffer to shrink). Once the ciphertext received is used up and OpenSSL holds no plaintext,
        another C{read} could only raise C{SSLWantReadError}: it is not made (raising
        and catching that error was about a tenth of a 1 KiB echo's instructions).
        """
        incoming, tls = self._incoming, self._tls
        read, finished = tls.read, False
        chunks: list[bytes] = []
        while True:
            if chunks and not incoming.pending and not tls.pending():
                break
            try:
                chunk = read(RECORD_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                finished = True
                break
            except ssl.SSLError as e:
                self._fail(e)
                break
            if not chunk:  # the peer's close_notify
                finished = True
                break
            chunks.append(chunk)
        if chunks and not self._aborted:
            self.wrapped.dataReceived(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if finished and not self._aborted:
            self._peer_finished()

    def _peer_finished(self) -> None:
        if self._peer_done:
            return  # a close_notify, then the FIN: the wrapped protocol hears it once
        self._peer_done = True
        half = IHalfCloseableProtocol(self.wrapped, None)
        if half is not None:
            half.readConnectionLost()
        else:
            self.loseConnection()

    def _fail(self, error: ssl.SSLError) -> None:
        """TLS cannot go on: send the alert OpenSSL wrote, close, report C{error}."""
        if self._failure is None:
            self._failure = Failure(error)
        self.disconnecting = True
        self._flush()
        self.transport.loseConnection()

    def _flush(self) -> None:
        """Send the ciphertext that is waiting, in one write."""
        if self._outgoing.pending and self.connected:
            self._writer.write(self._outgoing.read())

    def negotiated(self) -> tuple[str, str]:
        """The TLS version and cipher, once the handshake has completed."""
        cipher = self._tls.cipher()
        return self._tls.version() or "TLS", cipher[0] if cipher else "?"

    # -- the wrapped protocol's transport ---------------------------------------------

    def write(self, data: bytes) -> None:
        if self._close_requested or self.disconnecting or not self.connected:
            return
        if not self._handshake_done:
            self._pending.append(data)
            return
        try:
            self._tls.write(data)
        except ssl.SSLError as e:
            self._fail(e)
            return
        if not self._receiving:
            self._flush()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """
        Send what is written, then close_notify; close TCP once that is out. Before the
        handshake has completed, what was written waits for it (then the close follows);
        with nothing written, TCP is closed at once.
        """
        if self._close_requested or self.disconnecting or not self.connected:
            return
        self._close_requested = True
        if self._handshake_done or not self._pending:
            self._close()

    def _close(self) -> None:
        self.disconnecting = True
        if self._handshake_done:
            # Writes our close_notify; SSLWantReadError says the peer's has not come: no wait.
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
        self._flush()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self._aborted = self.disconnecting = True
        self.transport.abortConnection()

    def getPeer(self) -> IAddress:
        peer: IAddress = self.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        host: IAddress = self.transport.getHost()
        return host

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.abortConnection()  # the consumer is gone: nothing more can be sent


class TLSServerFactory(ServerFactory):
    """Wrap each connection of C{wrapped} in a L{TLSServerProtocol} with C{context}."""

    noisy = False

    def __init__(self, context: ssl.SSLContext, wrapped: IProtocolFactory) -> None:
        self.context = context
        self.wrapped = wrapped

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress) -> TLSServerProtocol | None:  # type: ignore[override]
        inner = self.wrapped.buildProtocol(addr)
        return None if inner is None else TLSServerProtocol(self.context, inner)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Listen with C{wrapped} (a TCP server endpoint) and speak TLS with C{context}:
    Twisted's C{SSL4ServerEndpoint}, with L{TLSServerProtocol} as the TLS layer.
    """

    def __init__(self, wrapped: IStreamServerEndpoint, context: ssl.SSLContext) -> None:
        self.wrapped = wrapped
        self.context = context

    def listen(self, factory: IProtocolFactory) -> Any:
        return self.wrapped.listen(TLSServerFactory(self.context, factory))
