"""
Numbered, checksummed benchmark messages, and the checker that audits their echoes.

A benchmark message is a 20-byte header and a payload, C{size} bytes in all::

    magic  b"EK"      2 bytes
    flags             2 bytes (0)
    seq               8 bytes, big-endian, counting from 0 on each connection or socket
    size              4 bytes, the whole message's length
    crc32             4 bytes, over the header's first 16 bytes and the payload

L{MessageChecker} takes what came back (a byte stream in any chunks, or one datagram
per message) and counts messages that arrived intact and in order, and those lost,
duplicated, reordered or corrupted. Over a stream all but the first must stay zero; over
UDP loss is real. No I/O here.

    >>> maker = MessageMaker(64)
    >>> checker = MessageChecker(64)
    >>> checker.feed_stream(maker.make(0) + maker.make(1))
    2
    >>> checker.feed_datagram(maker.make(3))
    >>> checker.counts()
    {'received': 3, 'lost': 1, 'duplicated': 0, 'reordered': 0, 'corrupted': 0}
"""

from __future__ import annotations

import os
import struct
import zlib

HEADER = struct.Struct(">2sHQII")
MAGIC = b"EK"
#: The smallest message: the header alone.
MIN_SIZE = HEADER.size


class MessageMaker:
    """Make messages of one size; the payload is random but the same for every message."""

    def __init__(self, size: int) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"a benchmark message is at least {MIN_SIZE} bytes")
        self.size = size
        self.payload = os.urandom(size - HEADER.size)

    def make(self, seq: int) -> bytes:
        """Message number C{seq}."""
        head = struct.pack(">2sHQI", MAGIC, 0, seq, self.size)
        crc = zlib.crc32(self.payload, zlib.crc32(head))
        return head + struct.pack(">I", crc) + self.payload


class MessageChecker:
    """Audit echoed messages of one size: received, lost, duplicated, reordered, corrupted."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.received = 0
        self.duplicated = 0
        self.reordered = 0
        self.corrupted = 0
        self._next = 0
        self._missing: set[int] = set()
        self._buffer = bytearray()

    @property
    def lost(self) -> int:
        """Messages skipped over and not (yet) seen late."""
        return len(self._missing)

    @property
    def partial(self) -> int:
        """Bytes of the next message that have come back so far (over a stream)."""
        return len(self._buffer)

    def counts(self) -> dict[str, int]:
        return {
            "received": self.received,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "corrupted": self.corrupted,
        }

    def close(self, sent: int) -> None:
        """
        No more echoes will come: messages up to number C{sent - 1} not seen are lost.
        """
        self._missing.update(range(self._next, sent))
        self._next = max(self._next, sent)

    def feed_stream(self, data: bytes) -> int:
        """Take bytes from a stream; return how many whole messages they completed."""
        self._buffer += data
        done = 0
        while len(self._buffer) >= self.size:
            self.feed_datagram(bytes(self._buffer[: self.size]))
            del self._buffer[: self.size]
            done += 1
        return done

    def feed_datagram(self, message: bytes | memoryview) -> int | None:
        """
        Take one whole message: its sequence number, or C{None} if damaged or seen before.

        A damaged message came back, so it is counted corrupted and not also lost: it
        stands for the message its header names if that one is due or missing, else
        (the header may be damaged too) for the message due next.
        """
        if len(message) != self.size or len(message) < HEADER.size:
            self._damaged(None)
            return None
        magic, _, seq, size, crc = HEADER.unpack_from(message)
        body = memoryview(message)[HEADER.size :]
        if magic != MAGIC or size != self.size or zlib.crc32(body, zlib.crc32(message[:16])) != crc:
            self._damaged(seq)
            return None
        self.received += 1
        return self._arrived(seq, intact=True)

    def _damaged(self, claimed: int | None) -> None:
        self.corrupted += 1
        usable = claimed is not None and (claimed == self._next or claimed in self._missing)
        self._arrived(claimed if usable and claimed is not None else self._next, intact=False)

    def _arrived(self, seq: int, intact: bool) -> int | None:
        """Message C{seq} came back: account for it, and for those it skipped over."""
        if seq == self._next:
            self._next += 1
        elif seq > self._next:
            self._missing.update(range(self._next, seq))
            self._next = seq + 1
        elif seq in self._missing:
            self._missing.discard(seq)
            self.reordered += intact
        else:
            self.duplicated += intact
            return None
        return int(seq)
