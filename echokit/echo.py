"""
The sans-IO core of an echo: what must come back, and whether it did.

Nothing here does I/O or knows about Twisted. The protocols in L{echokit.transports.stream} and
L{echokit.transports.datagram} feed it bytes and act on what it says; the tests drive it with plain
calls.

RFC 862 asks an echo server to send back exactly the bytes it receives, in order, over
a stream, and each datagram as it came over UDP. A client checks that with an
L{EchoVerifier} (streams) or a L{DatagramLedger} (datagrams).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from echokit.errors import EchoMismatch

#: The largest UDP payload IPv4 can carry (65,535 - 20 IP header - 8 UDP header).
MAX_UDP_PAYLOAD_IPV4 = 65_507
#: The largest UDP payload IPv6 can carry without jumbograms (65,535 - 8 UDP header).
MAX_UDP_PAYLOAD_IPV6 = 65_527
#: The largest payload one QUIC DATAGRAM frame carries in a packet of aioquic's default
#: size (1,200 bytes: packet header, AEAD tag and frame header take the rest); echokit's
#: QUIC server drops larger ones, as a UDP path may.
MAX_QUIC_DATAGRAM_PAYLOAD = 1_100


def looks_like_tls(data: bytes) -> bool:
    """
    C{True} if C{data} starts like a TLS record (handshake or alert, version 3.x).

    A plaintext client talking to a TLS port gets such bytes back instead of its echo;
    a TLS client talking to a plaintext echo port gets its own ClientHello back.

        >>> looks_like_tls(b"\\x15\\x03\\x03\\x00\\x02\\x02\\x46")
        True
    """
    return len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03 and data[2] <= 0x04


class EchoVerifier:
    """
    Check that a byte stream comes back exactly as it was sent.

    Call L{sent} with each chunk as it is written and L{received} with each chunk that
    comes back, in any interleaving. Only bytes sent and not yet echoed are kept, so
    memory is bounded by what is in flight, not by the total.

        >>> v = EchoVerifier()
        >>> v.sent(b"hello ")
        >>> v.sent(b"world")
        >>> v.received(b"hello w")
        >>> v.pending
        4
        >>> v.received(b"orld")
        >>> v.complete
        True
    """

    def __init__(self) -> None:
        self._outstanding: deque[memoryview] = deque()
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def pending(self) -> int:
        """How many bytes were sent and have not come back yet."""
        return self.bytes_sent - self.bytes_received

    @property
    def complete(self) -> bool:
        """C{True} when everything sent so far has come back."""
        return self.bytes_sent == self.bytes_received

    def sent(self, data: bytes) -> None:
        """Record C{data} as written to the peer."""
        if data:
            self._outstanding.append(memoryview(data))
            self.bytes_sent += len(data)

    def received(self, data: bytes) -> None:
        """
        Check C{data}, which just came back, against what was sent.

        @raise EchoMismatch: if C{data} is not the next run of bytes sent, or if more
            came back than was sent.
        """
        view = memoryview(data)
        while view:
            if not self._outstanding:
                raise EchoMismatch(
                    f"the server sent back {len(view)} more byte(s) than were sent "
                    f"(after {self.bytes_received} matching bytes)"
                )
            head = self._outstanding[0]
            n = min(len(head), len(view))
            if head[:n] != view[:n]:
                offset = next(i for i in range(n) if head[i] != view[i])
                raise EchoMismatch(
                    f"echo differs at byte {self.bytes_received + offset}: sent "
                    f"{bytes(head[offset : offset + 1])!r}, got {bytes(view[offset : offset + 1])!r}"
                )
            self.bytes_received += n
            view = view[n:]
            if n == len(head):
                self._outstanding.popleft()
            else:
                self._outstanding[0] = head[n:]


@dataclass
class DatagramLedger:
    """
    Account for datagrams sent one at a time and the echoes that come back.

    A datagram is answered when an identical payload comes back before its deadline;
    otherwise it is lost. Replies that match nothing outstanding (a late echo of a
    datagram already counted lost, or a stranger's packet) are counted as unexpected.

        >>> ledger = DatagramLedger()
        >>> ledger.sent(b"ping")
        >>> ledger.received(b"ping")
        True
        >>> ledger.sent(b"again")
        >>> ledger.timed_out()
        >>> (ledger.answered, ledger.lost)
        (1, 1)
    """

    answered: int = 0
    lost: int = 0
    unexpected: int = 0
    _waiting: bytes | None = field(default=None, repr=False)

    @property
    def waiting(self) -> bool:
        """C{True} while a datagram is in flight."""
        return self._waiting is not None

    def sent(self, payload: bytes) -> None:
        """Record C{payload} as the datagram now in flight."""
        if self._waiting is not None:
            raise ValueError("one datagram is already in flight")
        self._waiting = payload

    def received(self, payload: bytes) -> bool:
        """
        Record a datagram that came back.

        @return: C{True} if it answers the datagram in flight.
        """
        if self._waiting is not None and payload == self._waiting:
            self._waiting = None
            self.answered += 1
            return True
        self.unexpected += 1
        return False

    def timed_out(self) -> None:
        """Count the datagram in flight as lost."""
        if self._waiting is not None:
            self._waiting = None
            self.lost += 1
