"""
What C{echokit serve} does: listen on every endpoint given, in one reactor, and stop well.

Every string is checked before anything listens, so a typo in the third endpoint never
leaves the first two running. Once all listen, one line per listener says the address
it actually bound (port 0 resolved) and the exact C{echokit connect} string that
reaches it.

L{EchoService} is the server as a Twisted service, shared by C{echokit serve} and
C{twistd echokit}. On SIGINT or SIGTERM it stops accepting, lets open connections
finish their echo for up to C{drain} seconds, aborts what is left, and prints a summary
per listener; under C{echokit serve} a second signal exits at once.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet import defer, task

from echokit.runtime.memory import give_back_freed_memory
from echokit.runtime.policy import ServerPolicy
from echokit.server.listeners import Listener, plan_servers, start_listeners
from echokit.transports.certs import CertStore
from echokit.transports.endpoints import (
    ServerPlan,
)
from echokit.transports.grammar import EndpointSpec


async def drain(reactor: Any, listeners: Sequence[Listener], seconds: float) -> int:
    """
    Stop accepting, let open connections finish for up to C{seconds}, abort the rest.

    @return: how many connections had to be aborted.
    """
    # A quic: listener's stopListening fires only once its connections have ended, so
    # every listener stops accepting now and is waited for after the drain.
    stopped = [defer.maybeDeferred(listener.port.stopListening) for listener in listeners]
    # Stream factories and QUIC servers both keep their open connections in open_protocols.
    factories = [x.server for x in listeners if hasattr(x.server, "open_protocols")]
    aborted = 0
    for _ in range(max(0, int(seconds / 0.05))):
        if not any(f.open_protocols for f in factories):
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    else:
        for factory in factories:
            for protocol in list(factory.open_protocols):
                protocol.closed_by = "shutdown"
                protocol.transport.abortConnection()
                aborted += 1
        # Aborted connections report their loss on a later reactor turn: wait (briefly)
        # for that, so the summary counts them.
        for _ in range(40):
            if not any(f.open_protocols for f in factories):
                break
            await task.deferLater(reactor, 0.005, lambda: None)
    await defer.gatherResults(stopped)
    return aborted


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; return (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


@dataclass
class _Stopping:
    """Signals seen so far, and a Deferred that fires (on C{reactor}) on the first."""

    reactor: Any
    requested: defer.Deferred[int] = field(default_factory=defer.Deferred)
    count: int = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            os._exit(128 + signum)  # a second signal: exit at once, as promised
        self.reactor.callFromThread(self.requested.callback, signum)


async def serve(
    reactor: Any,
    descriptions: Sequence[str | EndpointSpec | ServerPlan],
    certs: CertStore,
    out: TextIO,
    policy: ServerPolicy | None = None,
    verbose: bool = False,
    announce: bool = True,
) -> list[Listener]:
    """
    Listen on every endpoint in C{descriptions} and announce each on C{out}.

    @param descriptions: endpoint strings, checked ones, or ready L{ServerPlan}s.
    @param announce: print the listening lines (workers, which share the parent's
        sockets, do not).
    @return: the listeners, serving until the reactor stops.
    """
    ready = [d for d in descriptions if isinstance(d, ServerPlan)]
    to_plan = [d for d in descriptions if not isinstance(d, ServerPlan)]
    plans = ready + plan_servers(reactor, to_plan, certs, policy)
    told: set[Path] = set()
    for plan in plans:
        if plan.created_certs is not None:
            out.write(
                f"created a CA and certificates in {plan.created_certs} "
                f"(clients trust {plan.created_certs / 'ca.pem'})\n"
            )
            told.add(plan.created_certs)
    for plan in plans:
        # Every start says where its certificates are: clients must trust the same CA.
        if announce and plan.cert_dir is not None and plan.cert_dir not in told:
            out.write(
                f"using the certificates in {plan.cert_dir} "
                f"(clients trust {plan.cert_dir / 'ca.pem'})\n"
            )
            told.add(plan.cert_dir)
    listeners = await start_listeners(reactor, plans, policy, verbose)
    # Start-up (imports, parsing, certificates) leaves freed heap behind: about 1 MiB of
    # an idle server's RSS, handed back once before serving.
    give_back_freed_memory()
    if announce:
        for listener in listeners:
            out.write(listener.announcement() + "\n")
        out.flush()
    return listeners


class EchoService(Service):
    """
    echokit's server as a Twisted service: the one thing both entry points run.

    C{echokit serve} starts it under its own signal handling (L{serve_until_signalled});
    C{twistd echokit} (see C{twisted/plugins/echokit_plugin.py}) hands it to twistd.
    Starting listens on every endpoint and announces each on C{out}; stopping stops
    accepting, drains open connections for up to C{policy.drain} seconds and writes a
    summary on C{out}.

    @ivar ready: fires with the listeners once all listen, or fails (for example
        L{RuntimeFailure} when a port is taken).
    """

    def __init__(
        self,
        reactor: Any,
        descriptions: Sequence[str | EndpointSpec | ServerPlan],
        certs: CertStore,
        out: TextIO,
        policy: ServerPolicy | None = None,
        verbose: bool = False,
        announce: bool = True,
        name: str = "",
    ) -> None:
        self.reactor = reactor
        self.announce = announce
        self.name = name
        self.descriptions = list(descriptions)
        self.certs = certs
        self.out = out
        self.policy = policy or ServerPolicy()
        self.verbose = verbose
        self.listeners: list[Listener] = []
        self.ready: defer.Deferred[list[Listener]] = defer.Deferred()

    def startService(self) -> None:
        Service.startService(self)
        raise_open_files_limit()
        started = defer.ensureDeferred(
            serve(
                self.reactor,
                self.descriptions,
                self.certs,
                self.out,
                self.policy,
                self.verbose,
                self.announce,
            )
        )
        started.addCallback(self._listening).chainDeferred(self.ready)

    def _listening(self, listeners: list[Listener]) -> list[Listener]:
        self.listeners = listeners
        return listeners

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return defer.ensureDeferred(self._drain_and_summarize())

    async def _drain_and_summarize(self) -> None:
        aborted = await drain(self.reactor, self.listeners, self.policy.drain)
        self.out.write(f"summary{' of ' + self.name if self.name else ''}:\n")
        for listener in self.listeners:
            self.out.write(f"  {listener.summary()}\n")
        if aborted:
            self.out.write(f"  {aborted} connection(s) still open after the drain were aborted\n")
        self.out.flush()


async def serve_until_signalled(
    reactor: Any,
    descriptions: Sequence[str | EndpointSpec | ServerPlan],
    certs: CertStore,
    out: TextIO,
    policy: ServerPolicy | None = None,
    verbose: bool = False,
    workers: int = 1,
    worker_argv: Sequence[str] = (),
    name: str = "",
    ready_fd: int | None = None,
) -> None:
    """
    C{echokit serve}: run an L{EchoService} until SIGINT or SIGTERM, then stop it.

    @param workers: with more than 1, start C{workers - 1} more processes that serve
        the same listening sockets (see L{echokit.server.workers}); they stop with this one.
    @param worker_argv: the global command-line options for those processes.
    @param name: how the summary names this process (workers say which they are).
    @param ready_fd: a worker's pipe to its parent: one byte on it says "serving".
    """
    announce = not name  # a worker shares its parent's (announced) sockets
    service = EchoService(reactor, descriptions, certs, out, policy, verbose, announce, name)
    # The reactor installs its own handlers (stop at once) when it starts running: wait
    # for that, replace them with the graceful ones, and only then listen and announce,
    # so that a signal sent once the listeners are announced is always graceful.
    await task.deferLater(reactor, 0, lambda: None)
    stopping = _Stopping(reactor)
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, stopping)
    service.startService()
    listeners = await service.ready
    if ready_fd is not None:
        os.write(ready_fd, b"+")
        os.close(ready_fd)
    children = []
    if workers > 1:
        from echokit.server.workers import spawn_workers, stop_workers, wait_until_serving

        children = spawn_workers(
            reactor, workers - 1, listeners, service.policy, certs, worker_argv
        )
        # Announce them once they serve (a signal before that would find them defenceless).
        serving = await wait_until_serving(reactor, children, stopping.requested)
        for child in children:
            if child not in serving and not stopping.requested.called:
                sys.stderr.write(
                    f"echokit: worker {child.index} (pid {child.pid}) did not start serving "
                    "(its message, if any, is above); serving without it\n"
                )
        if serving:
            out.write(
                f"{1 + len(serving)} worker processes share these listeners (pids: this one, "
                f"{', '.join(str(c.pid) for c in serving)})\n"
            )
        out.flush()
    signum = await stopping.requested
    if children:
        stop_workers(children)
    out.write(
        f"{signal.Signals(signum).name}: stopped accepting; letting open connections finish "
        f"for up to {service.policy.drain:g} s (a second signal exits at once)\n"
    )
    out.flush()
    await service.stopService()
    if children:
        await defer.DeferredList([child.ended for child in children])
