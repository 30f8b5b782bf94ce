"""
CPU time spent by the client and by a local server process over a measured phase.

The kernel's per-process accounting (C{/proc/PID/stat}: user and system time, in clock
ticks, usually 10 ms) is read at the start and at the end of the phase. A server's CPU
is summed over its process tree (C{--workers} children, socat's forks, nginx's workers),
each process counted with the CPU of its children already reaped, so that a child that
exits during the phase keeps its share. The client's own CPU comes from
C{getrusage(RUSAGE_SELF)} (all its threads, microsecond resolution).

Divided by the messages echoed in the phase this gives CPU microseconds per message:
what a transport (or a server) costs, apart from how fast it went.

    >>> parse_stat(b"42 (a b) S 1 " + b"0 " * 9 + b"150 50 30 20 0")
    (1, 2.5, False)
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from echokit.errors import InputError, RuntimeFailure

#: A client that used at least this fraction of one CPU during a closed-loop throughput
#: phase (while the server used less) was the limit: its row is marked client-bound.
CLIENT_BOUND_CPU = 0.9

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcessGone(RuntimeFailure):
    """The server process being measured ended."""


def parse_stat(data: bytes) -> tuple[int, float, bool]:
    """
    From one C{/proc/PID/stat}: (parent pid, CPU seconds of the process and of its
    reaped children: utime + stime + cutime + cstime, whether it has ended: a zombie).
    """
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data.rsplit(b")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[1]), ticks / _TICK, fields[0] in (b"Z", b"X")


def _all_stats() -> dict[int, tuple[int, float, bool]]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stats[int(name)] = parse_stat(f.read())
            except (OSError, IndexError, ValueError):
                continue  # ended while we looked
    return stats


def _gone(pid: int) -> ProcessGone:
    return ProcessGone(f"the server process {pid} ended during the run")


def tree(pid: int) -> list[int]:
    """
    C{pid} and all its descendants, found by reading every C{/proc/*/stat} (a few
    milliseconds: not while a fixed-rate sender must keep its schedule).

    @raise ProcessGone: if C{pid} is no longer running.
    """
    stats = _all_stats()
    if pid not in stats or stats[pid][2]:
        raise _gone(pid)
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """
    CPU seconds used so far by C{pids} (the first is the root: it must still run; a
    descendant that ended counts in its parent once reaped, and as 0 here).

    @raise ProcessGone: if the root is no longer running.
    """
    total = 0.0
    for index, pid in enumerate(pids):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                _, seconds, ended = parse_stat(f.read())
        except (OSError, IndexError, ValueError):
            seconds, ended = 0.0, True
        if ended and index == 0:
            raise _gone(pid)
        total += seconds
    return total


def tree_cpu_seconds(pid: int) -> float:
    """
    CPU seconds used so far by C{pid} and all its descendants.

    @raise ProcessGone: if C{pid} is no longer running.
    """
    return cpu_seconds(tree(pid))


def check_server_pid(pid: int) -> None:
    """
    Check that C{--server-pid} names a process this user can read.

    @raise InputError: if it does not exist or cannot be read.
    """
    if pid <= 0:
        raise InputError(f"--server-pid {pid}: give the process id of a running server")
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ended = parse_stat(f.read())[2]
    except FileNotFoundError:
        ended = True
    except OSError as e:
        raise InputError(f"--server-pid {pid}: cannot read its CPU time: {e.strerror}") from None
    if ended:
        raise InputError(
            f"--server-pid {pid}: no such process: give the pid of a running local server"
        )


def client_cpu_seconds() -> float:
    """This process's CPU seconds so far (user and system, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuUse:
    """CPU seconds over one phase of C{wall} seconds (None: not measured)."""

    wall: float
    client: float | None
    server: float | None

    def per_message(self, messages: int) -> tuple[float | None, float | None]:
        """(server, client) CPU microseconds per message."""
        if messages <= 0:
            return None, None
        server = None if self.server is None else self.server * 1e6 / messages
        client = None if self.client is None else self.client * 1e6 / messages
        return server, client

    def client_saturated(self, server_processes: int = 1) -> bool:
        """
        Whether the client used (nearly) all of one CPU while the server did not use
        as much of each of its processes' (see L{CLIENT_BOUND_CPU}).
        """
        if self.client is None or self.wall <= 0:
            return False
        busy = self.client / self.wall >= CLIENT_BOUND_CPU
        if self.server is None:
            return busy
        return busy and self.server / self.wall < CLIENT_BOUND_CPU * server_processes


class CpuMeter:
    """
    Measure one phase's CPU: call L{start} as it begins and L{stop} as it ends.

    @param server_pids: the server's root process ids (None: no server known).
    @param client: whether to measure this process (not when it runs the servers too).
    """

    def __init__(self, server_pids: Callable[[], Sequence[int]] | None, client: bool) -> None:
        self.server_pids = server_pids
        self.client = client
        self._start: tuple[float, float | None, float | None] | None = None
        self._trees: list[list[int]] | None = None

    def _now(self) -> tuple[float, float | None, float | None]:
        server = None
        if self.server_pids is not None:
            trees = self._trees or [tree(pid) for pid in self.server_pids()]
            server = sum(cpu_seconds(pids) for pids in trees)
        return time.monotonic(), client_cpu_seconds() if self.client else None, server

    def track(self) -> None:
        """
        Find the server's processes now, so that L{start} and L{stop} only read theirs
        (a fixed-rate run calls this before it starts sending: scanning every process
        then would make its sends late). Processes started later are not counted.
        """
        if self.server_pids is not None:
            self._trees = [tree(pid) for pid in self.server_pids()]

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> CpuUse:
        """
        The CPU used since L{start}.

        @raise ProcessGone: if the server process ended during the phase.
        """
        assert self._start is not None, "stop() before start()"
        wall, client, server = self._now()
        wall0, client0, server0 = self._start
        self._trees = None
        return CpuUse(
            wall - wall0,
            None if client is None or client0 is None else client - client0,
            None if server is None or server0 is None else server - server0,
        )


def pin_process(pid: int | None, cpus: set[int]) -> None:
    """
    Keep every thread of process C{pid} (None: this one), and the threads and children
    it starts later, on C{cpus}. Silently does nothing where affinity cannot be set.
    """
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid or 'self'}/task")]
    except OSError:
        threads = [pid or 0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except (OSError, AttributeError):
            continue


def pin_plan(server_process: bool) -> tuple[int, int] | None:
    """
    The CPUs C{compare} pins to under load: (client, server), or None with fewer than
    two CPUs allowed where a child server is asked for (nothing to separate). In one
    process both are the same CPU. For the latency phase (one message in flight) a
    child server's client joins it on the server's CPU.

    Pinned, a round trip no longer pays for the kernel moving a thread or waking an idle
    CPU, which on a VM is what an unpinned latency measures most (tcp p50 46 us unpinned
    against 20 us pinned on the 2-CPU VM where echokit is developed); under load a child
    server on a CPU of its own also makes each side's CPU use, and client-bound,
    unambiguous.
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None
    if not allowed:
        return None
    if not server_process:
        return allowed[-1], allowed[-1]
    if len(allowed) < 2:
        return None
    return allowed[0], allowed[-1]
