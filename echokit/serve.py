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

import errno
import os
import resource
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet import defer, error, task
from twisted.internet.interfaces import IListeningPort

from echokit.certs import CertStore
from echokit.datagram import EchoDatagramServer
from echokit.endpoints import (
    DATAGRAM_KINDS,
    ServerPlan,
    connect_string,
    ipv6_unavailable,
    proxied_spec,
    server_endpoint,
)
from echokit.errors import EchokitError, RuntimeFailure
from echokit.grammar import EndpointSpec, parse_server
from echokit.policy import ConnectionLimiter, ServerPolicy
from echokit.stream import EchoServerFactory, describe_address


@dataclass
class Listener:
    """One listening endpoint: its string, its port, and what serves it."""

    plan: ServerPlan
    port: IListeningPort
    server: EchoServerFactory | EchoDatagramServer

    @property
    def description(self) -> str:
        return self.plan.spec.text

    @property
    def bound(self) -> str:
        """The address actually bound, e.g. C{127.0.0.1:40123}."""
        return describe_address(self.port.getHost())

    @property
    def connect_string(self) -> str:
        """The client endpoint string that reaches this listener."""
        kind = "ssl" if self.plan.is_tls else self.plan.spec.kind
        return connect_string(kind, self.port.getHost())

    def announcement(self) -> str:
        """The line C{serve} prints for this listener."""
        return (
            f"{self.description} listening on {self.bound} "
            f"-> echokit connect {shlex.quote(self.connect_string)}"
        )

    def summary(self) -> str:
        """One line of what this listener did, for the shutdown summary."""
        server = self.server
        if isinstance(server, EchoDatagramServer):
            s = server.stats
            return (
                f"{self.description}: {s.datagrams:,} datagrams ({s.bytes:,} bytes) echoed, "
                f"{s.dropped:,} dropped, {s.errors:,} errors"
            )
        c = server.stats
        return (
            f"{self.description}: {c.connections:,} connections, {c.bytes:,} bytes echoed, "
            f"{c.refused:,} refused over limits, {c.timeouts:,} timed out, {c.errors:,} errors"
        )


def plan_servers(
    reactor: Any,
    descriptions: Sequence[str | EndpointSpec],
    certs: CertStore,
    policy: ServerPolicy | None = None,
) -> list[ServerPlan]:
    """Check every server string and build its endpoint; nothing listens yet."""
    specs = [d if isinstance(d, EndpointSpec) else parse_server(d) for d in descriptions]
    client_ca = required_client_ca(policy, certs)
    return [server_endpoint(reactor, spec, certs, client_ca) for spec in specs]


def required_client_ca(policy: ServerPolicy | None, certs: CertStore) -> Path | None:
    """
    The CA that TLS clients' certificates must be signed by, or C{None} if the policy
    does not require client certificates: C{--client-ca}, else echokit's own CA.
    """
    if policy is None or not policy.require_client_cert:
        return None
    if policy.client_ca is not None:
        return policy.client_ca
    certs.ensure()
    return certs.ca_cert


def _listen_failed(
    plan: ServerPlan, e: Exception, started: Sequence[Listener] = ()
) -> RuntimeFailure:
    """
    One line for a listener that could not start: the endpoint, the system's reason,
    and, for the common reasons, what to do about it.

        cannot listen on 'tcp:8000': Address already in use: another program holds
        port 8000; stop it, or choose another port (0 picks a free one)

    C{started} are the listeners of the same command already listening: when one of them
    holds the port or path, the message names it instead of "another program".
    """
    spec = _listening_spec(plan.spec)
    cause: object = e.socketError if isinstance(e, error.CannotListenError) else e
    path = spec.get("address") if spec.kind == "unix" else None
    if isinstance(cause, OSError):
        why = cause.strerror or str(cause)
        hint = _same_command(spec, started) if cause.errno == errno.EADDRINUSE else None
        hint = hint or _listen_hint(spec, cause.errno)
    elif cause == "Cannot acquire lock" and path is not None:  # Twisted: the lock is held
        why = f"{path} is in use"
        hint = _same_command(spec, started) or _lock_holder(str(path))
    else:
        why, hint = str(e) or type(e).__name__, None
    return RuntimeFailure(
        f"cannot listen on '{plan.spec.text}': {why}" + (f": {hint}" if hint else "")
    )


def _listening_spec(spec: EndpointSpec) -> EndpointSpec:
    """The endpoint that listens: the wrapped one of C{haproxy:...}, else C{spec}."""
    if spec.kind != "haproxy":
        return spec
    try:
        return proxied_spec(spec)
    except EchokitError:
        return spec


#: Kinds that share one port space: a tcp port and an ssl port are the same TCP port.
_PORT_SPACES = (frozenset({"tcp", "tcp6", "ssl"}), DATAGRAM_KINDS)


def _same_command(spec: EndpointSpec, started: Sequence[Listener]) -> str | None:
    """If a listener of this command already holds what C{spec} wants, say which."""
    port = spec.get("port")
    for listener in started:
        other = _listening_spec(listener.plan.spec)
        if spec.kind == "unix" and other.kind == "unix":
            if other.get("address") == spec.get("address"):
                return (
                    f"the listener for '{listener.plan.spec.text}' in this command already "
                    "serves there; give each unix listener its own path"
                )
            continue
        same_space = any({spec.kind, other.kind} <= space for space in _PORT_SPACES)
        if same_space and isinstance(port, int) and port and other.get("port") == port:
            dual = " (tcp6 without interface= takes the IPv4 port too)"
            both_tcp = "tcp6" in (spec.kind, other.kind) and spec.kind != other.kind
            return (
                f"the listener for '{listener.plan.spec.text}' in this command already holds "
                f"port {port}{dual if both_tcp else ''}; give each listener its own port"
            )
    return None


def _lock_holder(path: str) -> str:
    """Who holds the lock of unix socket C{path} (Twisted's lock: a symlink to a pid)."""
    try:
        pid = os.readlink(f"{path}.lock")
    except OSError:
        return "another process is serving there; stop it, or choose another path"
    return (
        f"process {pid} holds {path}.lock; stop it, or choose another path (if process "
        f"{pid} serves nothing there, remove {path}.lock)"
    )


def _listen_hint(spec: EndpointSpec, code: int | None) -> str | None:
    """What to do when listening on C{spec} failed with errno C{code}, if echokit knows."""
    port, interface = spec.get("port"), spec.get("interface")
    if spec.kind == "unix":
        path = spec.get("address")
        if code == errno.EADDRINUSE:
            return f"a socket file is at {path}: stop what serves there, or remove the file"
        locked = spec.get("lockfile", True)
        if code in (errno.EACCES, errno.EPERM) and locked and os.path.lexists(f"{path}.lock"):
            return (
                f"{path}.lock belongs to a process this user may not check; stop it, or "
                "choose another path"
            )
        if code in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS):
            files = f"{path} or {path}.lock" if locked else f"{path}"
            return (
                f"cannot create {files}: choose a path in a directory you can write "
                "(/tmp, $XDG_RUNTIME_DIR)"
            )
        return None
    if not isinstance(port, int):
        return None  # kinds echokit passes to Twisted as they are (systemd, ...)
    if code == errno.EADDRINUSE and port:
        return (
            f"another program holds port {port}; stop it, or choose another port "
            "(0 picks a free one)"
        )
    if code in (errno.EACCES, errno.EPERM) and 0 < port < 1024:
        return (
            f"port {port} is below 1024 and needs root or CAP_NET_BIND_SERVICE; choose a "
            "port from 1024 up"
        )
    if code == errno.EADDRNOTAVAIL and interface is not None:
        return _interface_hint(spec.kind, str(interface))
    return None


def _interface_hint(kind: str, interface: str) -> str:
    """Why C{interface} cannot be listened on, and which address to give instead."""
    if interface == "::1" and (no_ipv6 := ipv6_unavailable()):
        return f"this machine has {no_ipv6}; listen on 127.0.0.1 with tcp:, ssl: or udp:"
    loopback = {"tcp": "127.0.0.1", "udp": "127.0.0.1", "tcp6": "\\:\\:1", "udp6": "\\:\\:1"}
    example = loopback.get(kind, "127.0.0.1 or \\:\\:1")
    without = "on loopback only" if kind in DATAGRAM_KINDS else "on every address"
    return (
        f"{interface} is not an address of this machine; give one of its addresses "
        f"({example} for loopback), or leave interface= out to listen {without}"
    )


async def start_listeners(
    reactor: Any,
    plans: Sequence[ServerPlan],
    policy: ServerPolicy | None = None,
    verbose: bool = False,
) -> list[Listener]:
    """
    Listen on every planned endpoint; if one fails, stop those already started.

    Stream listeners share one L{ConnectionLimiter}, so C{max_connections} counts every
    listener's connections together.

    @raise RuntimeFailure: naming the endpoint that could not listen and why.
    """
    policy = policy or ServerPolicy()
    limiter = ConnectionLimiter(policy.max_connections, policy.max_per_peer)
    listeners: list[Listener] = []
    for plan in plans:
        server: EchoServerFactory | EchoDatagramServer
        if plan.is_datagram:
            server = EchoDatagramServer(plan.spec.text, reactor, policy, verbose)
        else:
            server = EchoServerFactory(
                plan.spec.text, plan.spec.kind, reactor, policy, limiter, verbose, plan.is_tls
            )
        try:
            port = await plan.endpoint.listen(server)  # type: ignore[arg-type]
        except Exception as e:
            for started in listeners:
                await defer.maybeDeferred(started.port.stopListening)
            raise _listen_failed(plan, e, listeners) from None
        listeners.append(Listener(plan, port, server))
    return listeners


async def drain(reactor: Any, listeners: Sequence[Listener], seconds: float) -> int:
    """
    Stop accepting, let open connections finish for up to C{seconds}, abort the rest.

    @return: how many connections had to be aborted.
    """
    for listener in listeners:
        await defer.maybeDeferred(listener.port.stopListening)
    factories = [x.server for x in listeners if isinstance(x.server, EchoServerFactory)]
    for _ in range(max(0, int(seconds / 0.05))):
        if not any(f.open_protocols for f in factories):
            return 0
        await task.deferLater(reactor, 0.05, lambda: None)
    aborted = 0
    for factory in factories:
        for protocol in list(factory.open_protocols):
            protocol.closed_by = "shutdown"
            protocol.transport.abortConnection()
            aborted += 1
    # Aborted connections report their loss on a later reactor turn: wait (briefly) for
    # that, so the summary counts them.
    for _ in range(40):
        if not any(f.open_protocols for f in factories):
            break
        await task.deferLater(reactor, 0.005, lambda: None)
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
    for plan in plans:
        if plan.created_certs is not None:
            out.write(
                f"created a CA and certificates in {plan.created_certs} "
                f"(clients trust {plan.created_certs / 'ca.pem'})\n"
            )
    listeners = await start_listeners(reactor, plans, policy, verbose)
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
        the same listening sockets (see L{echokit.workers}); they stop with this one.
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
        from echokit.workers import spawn_workers, stop_workers, wait_until_serving

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
