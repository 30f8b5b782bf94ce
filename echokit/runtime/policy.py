"""
What a server allows, and the sans-IO pieces that enforce it.

L{ServerPolicy} holds the limits and timeouts C{echokit serve} applies, with their
defaults; the classes below decide, given the time and the counts, what to do. None of
them does I/O or reads a clock: callers pass the time in, so tests drive them with
plain numbers.

Defaults:

    =====================  ==========  ===================================================
    setting                default     meaning
    =====================  ==========  ===================================================
    idle_timeout           300 s       close a stream connection silent for this long (up
                                       to min(idle_timeout/10, 1 s) later: one sweep)
    handshake_timeout      10 s        close a TLS connection whose handshake takes longer
    close_grace            5 s         abort a connection whose graceful close stalls
    max_connections        10,000      open stream connections, all listeners together; once
                                       reached, a newcomer from an address holding fewer
                                       takes the newest connection of the one holding most
    max_per_peer           0 (off)     open stream connections from one IP address (unix
                                       sockets: from one user id, by SO_PEERCRED)
    echo_buffer            4 MiB       unsent echo one connection may hold and still be read
    max_buffered           64 MiB      unsent echo of all connections together; past it one
                                       connection at a time goes on to its echo buffer, the
                                       others holding over 256 KiB stop being read meanwhile
    drain                  5 s         on SIGINT/SIGTERM, let open echoes finish this long
    udp_repeat_burst       32          identical datagrams in a row from one source ...
    udp_repeat_rate        10 /s       ... beyond which they are answered this often
    require_client_cert    off         TLS listeners demand a client certificate ...
    client_ca              (none)      ... signed by this CA (default: echokit's CA)
    =====================  ==========  ===================================================
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerPolicy:
    """
    Limits and timeouts for C{echokit serve}; see the module docstring for defaults.

    A value of 0 turns a timeout or limit off.
    """

    idle_timeout: float = 300.0
    handshake_timeout: float = 10.0
    close_grace: float = 5.0
    max_connections: int = 10_000
    max_per_peer: int = 0
    echo_buffer: int = 4 << 20
    max_buffered: int = 64 << 20
    drain: float = 5.0
    udp_repeat_burst: int = 32
    udp_repeat_rate: float = 10.0
    require_client_cert: bool = False
    client_ca: Path | None = None


#: The limits C{echokit serve} and C{twistd echokit} both take as options, from one table:
#: (option name, L{ServerPolicy} field, C{int} or C{float}, help). Each must be >= 0.
LIMIT_OPTIONS: list[tuple[str, str, type[int] | type[float], str]] = [
    (
        "idle-timeout",
        "idle_timeout",
        float,
        "Close a stream connection silent for this many seconds (0: never); one sweep "
        "per listener finds them, up to min(S/10, 1 s) late.",
    ),
    (
        "handshake-timeout",
        "handshake_timeout",
        float,
        "Abort a TLS connection whose handshake takes longer (0: never).",
    ),
    (
        "max-connections",
        "max_connections",
        int,
        "Open stream connections allowed, all listeners of a process together; once reached, "
        "a client from an address holding fewer takes the newest connection of the address "
        "holding the most (0: no limit).",
    ),
    (
        "max-per-peer",
        "max_per_peer",
        int,
        "Open stream connections allowed from one IP address, or over unix sockets from one "
        "user id (0: no limit).",
    ),
    (
        "echo-buffer",
        "echo_buffer",
        int,
        "Bytes of unsent echo one connection may hold while the server still reads from it "
        "(a client that reads only after sending gets this much back at least; 0: no limit).",
    ),
    (
        "max-buffered",
        "max_buffered",
        int,
        "Bytes of unsent echo all connections of a process may hold together; past it, one "
        "connection at a time goes on to its --echo-buffer and the others holding over "
        "256 KiB stop being read until it has sent its echo (0: no limit).",
    ),
    (
        "drain",
        "drain",
        float,
        "On SIGINT/SIGTERM, seconds to let open echoes finish before closing.",
    ),
    (
        "udp-repeat-burst",
        "udp_repeat_burst",
        int,
        "Repeats of its recent datagrams one UDP source may send before being limited "
        "(0: no guard).",
    ),
    (
        "udp-repeat-rate",
        "udp_repeat_rate",
        float,
        "Repeats per second answered once the burst is spent.",
    ),
]


@dataclass
class ConnectionLimiter:
    """
    Admit stream connections while under the total and per-peer limits.

        >>> limiter = ConnectionLimiter(max_connections=2, max_per_peer=1)
        >>> limiter.admit("10.0.0.1"), limiter.admit("10.0.0.1"), limiter.admit("10.0.0.2")
        (None, 'per-peer', None)
        >>> limiter.admit("10.0.0.3")
        'total'

    No peer can lock the others out by holding every slot: when the total is reached,
    L{shed_for} names the newest connection of the peer holding the most (if that peer
    holds at least two more than the newcomer's), to be closed to make room.

        >>> limiter = ConnectionLimiter(max_connections=3)
        >>> [limiter.admit("10.0.0.1", key) for key in ("a", "b", "c")]
        [None, None, None]
        >>> limiter.shed_for("10.0.0.2"), limiter.admit("10.0.0.2", "d")
        ('c', None)
        >>> limiter.shed_for("10.0.0.2")  # 2 against 1: no more room taken
        >>> limiter.admit("10.0.0.2", "e")
        'total'

    @ivar shed: how many connections L{shed_for} named.
    """

    max_connections: int = 0
    max_per_peer: int = 0
    open: int = 0
    shed: int = 0
    per_peer: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    _keys: dict[str, dict[object, None]] = field(default_factory=dict)

    def admit(self, peer: str, key: object = None) -> str | None:
        """
        Count a new connection from C{peer} in, or say which limit refuses it.

        @param key: what stands for the connection (its protocol), so that
            L{shed_for} can name it; C{None} for a connection never to be shed.
        @return: C{None} if admitted (call L{release} when it closes), else the name of
            the limit that refused it (C{"total"} or C{"per-peer"}).
        """
        if self.max_connections and self.open >= self.max_connections:
            self.refused["total"] += 1
            return "total"
        if self.max_per_peer and self.per_peer[peer] >= self.max_per_peer:
            self.refused["per-peer"] += 1
            return "per-peer"
        self.open += 1
        self.per_peer[peer] += 1
        if key is not None:
            self._keys.setdefault(peer, {})[key] = None
        return None

    def shed_for(self, peer: str) -> object | None:
        """
        If the total is reached, make room for a connection from C{peer}: the key of
        the newest connection of the peer holding the most, if it holds at least two
        more than C{peer}; that connection is counted out now (close it), and its
        L{release} later is ignored. C{None} if there is room, or none to take.
        """
        if not self.max_connections or self.open < self.max_connections:
            return None
        top = max(self._keys, key=lambda p: self.per_peer[p], default=None)
        if top is None or self.per_peer[top] < self.per_peer[peer] + 2:
            return None
        keys = self._keys[top]
        victim = next(reversed(keys))
        self._count_out(top, victim)
        self.shed += 1
        return victim

    def release(self, peer: str, key: object = None) -> None:
        """An admitted connection from C{peer} closed (ignored if it was shed)."""
        keys = self._keys.get(peer)
        if key is not None and (keys is None or key not in keys):
            return  # shed: counted out already
        self._count_out(peer, key)

    def _count_out(self, peer: str, key: object) -> None:
        self.open -= 1
        self.per_peer[peer] -= 1
        if self.per_peer[peer] <= 0:
            del self.per_peer[peer]
        keys = self._keys.get(peer)
        if keys is not None and key is not None:
            keys.pop(key, None)
            if not keys:
                del self._keys[peer]


@dataclass
class EchoBudget:
    """
    Unsent echo held by each connection, against a per-connection size and a total.

    A connection reports what it holds (L{hold}) whenever its write buffer is over the
    read size, and is told whether it may keep reading:

        - not if it holds more than C{per_connection};
        - once all together hold more than C{total}, only one connection at a time (the
          first to get there, "exempt" until it has sent its echo or closed) goes on
          reading up to C{per_connection}, so that one client that reads only after
          sending everything gets its echo and frees its share; the others stop until
          L{release} names them again.

    Memory held is thus bounded by C{total + per_connection} plus what each connection
    reads at once.

        >>> budget = EchoBudget(per_connection=4, total=6)
        >>> budget.hold("a", 3), budget.hold("b", 3)
        (True, True)
        >>> budget.hold("a", 4), budget.hold("b", 4)  # over 6: "a" goes on, "b" waits
        (True, False)
        >>> budget.hold("a", 5)  # over its own 4
        False
        >>> budget.release("a")  # "a" has sent its echo: "b" may read again
        ['b']

    @ivar held: bytes held by all connections together, as last reported.
    @ivar peak: the most C{held} has been.
    """

    per_connection: int
    total: int
    held: int = 0
    peak: int = 0
    exempt: object | None = None
    holders: dict[object, int] = field(default_factory=dict)
    waiting: dict[object, None] = field(default_factory=dict)

    def hold(self, key: object, size: int) -> bool:
        """C{key} now holds C{size} bytes; C{True} if it may keep reading."""
        self.held += size - self.holders.get(key, 0)
        self.holders[key] = size
        self.peak = max(self.peak, self.held)
        if self.per_connection and size > self.per_connection:
            return False
        if self.total and self.held > self.total:
            if self.exempt is None:
                self.exempt = key
            if key != self.exempt:
                self.waiting[key] = None
                return False
        return True

    def release(self, key: object) -> list[object]:
        """
        C{key} holds nothing now (its echo was sent, or it closed).

        @return: the connections stopped by the total that may read again (all of them,
            once the exempt one is done or the total is no longer exceeded).
        """
        self.held -= self.holders.pop(key, 0)
        self.waiting.pop(key, None)
        if key == self.exempt:
            self.exempt = None
        over = self.total and self.held > self.total
        if not self.waiting or (over and self.exempt is not None):
            return []
        woken = list(self.waiting)
        self.waiting.clear()
        return woken


@dataclass
class TokenBucket:
    """
    A token bucket: C{burst} tokens, refilled at C{rate} per second.

        >>> bucket = TokenBucket(burst=2, rate=1.0)
        >>> [bucket.take(now=0.0) for _ in range(3)]
        [True, True, False]
        >>> bucket.take(now=1.0)
        True
    """

    burst: float
    rate: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> bool:
        """Take one token if there is one; C{now} is the current time in seconds."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class RepeatGuard:
    """
    Stop UDP reflection loops: limit datagrams a source repeats.

    Two echo servers aimed at each other (one spoofed datagram is enough) bounce a
    datagram back and forth forever, each receiving the very datagram it sent a moment
    ago. Each source gets a L{TokenBucket} spent only by a datagram identical to one of
    its last C{window} datagrams; when it runs dry such datagrams are dropped, and a
    dropped datagram is a loop ended. Up to C{window} distinct spoofed datagrams looping
    at once are caught this way. Datagrams a source has not sent recently (a benchmark's,
    numbered) are never limited, however fast they come, and cost no clock reading.

        >>> guard = RepeatGuard(burst=2, rate=0.0)
        >>> [guard.allow(("127.0.0.1", 5000), b"ping", now=0.0) for _ in range(4)]
        [True, True, True, False]
        >>> guard.allow(("127.0.0.1", 5000), b"pong", now=0.0)
        True
    """

    burst: int
    rate: float
    window: int = 64
    max_sources: int = 4096
    _recent: dict[tuple[str, int], dict[int, None]] = field(default_factory=dict)
    _buckets: dict[tuple[str, int], TokenBucket] = field(default_factory=dict)
    dropped: int = 0

    def is_repeat(self, source: tuple[str, int], datagram: bytes) -> bool:
        """Record C{datagram}; C{True} if C{source} sent it among its last C{window}."""
        if self.burst <= 0:
            return False
        key = hash(datagram)
        recent = self._recent.get(source)
        if recent is None:
            if len(self._recent) >= self.max_sources:
                oldest = next(iter(self._recent))  # bounded memory: forget the oldest source
                del self._recent[oldest]
                self._buckets.pop(oldest, None)
            recent = self._recent[source] = {}
        elif key in recent:
            return True
        recent[key] = None
        if len(recent) > self.window:
            del recent[next(iter(recent))]
        return False

    def allow_repeat(self, source: tuple[str, int], now: float) -> bool:
        """Spend one of C{source}'s repeat tokens; C{False} (and counted) if none is left."""
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(self.burst, self.rate)
        if bucket.take(now):
            return True
        self.dropped += 1
        return False

    def allow(self, source: tuple[str, int], datagram: bytes, now: float) -> bool:
        """C{True} if the datagram from C{source} may be echoed (both steps in one)."""
        return not self.is_repeat(source, datagram) or self.allow_repeat(source, now)


@dataclass
class EveryInterval:
    """
    Say whether to log now, at most once per C{interval} seconds, counting the rest.

        >>> gate = EveryInterval(interval=10.0)
        >>> gate.ready(now=0.0), gate.ready(now=1.0), gate.ready(now=2.0)
        (0, None, None)
        >>> gate.ready(now=11.0)
        2
    """

    interval: float
    _next: float = float("-inf")
    _suppressed: int = 0

    def ready(self, now: float) -> int | None:
        """
        @return: C{None} to stay quiet, or how many events were suppressed since the
            last time it said to log (log this one and mention them).
        """
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
