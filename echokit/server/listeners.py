"""
Listeners: check server strings, listen on them, and say what went wrong when one cannot.

L{plan_servers} checks every string and builds its endpoint before anything listens;
L{start_listeners} listens on each plan and, when one cannot (port held, interface not on
this machine, unix path served by another process), stops the ones already started and
raises a one-line error that says what to do. A L{Listener} is one listening endpoint:
its string, its port and its protocol factory, and the line C{serve} prints for it.

Both C{echokit serve} (L{echokit.server.serve}) and its worker processes
(L{echokit.server.workers}) stand on this module; it imports neither.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort

from echokit.errors import EchokitError, RuntimeFailure
from echokit.runtime.policy import ConnectionLimiter, EchoBudget, ServerPolicy
from echokit.transports.certs import CertStore
from echokit.transports.datagram import EchoDatagramServer
from echokit.transports.endpoints import (
    DATAGRAM_KINDS,
    ServerPlan,
    connect_string,
    ipv6_unavailable,
    proxied_spec,
    server_endpoint,
    websocket_connect_string,
    websocket_inner,
    websocket_module,
)
from echokit.transports.grammar import EndpointSpec, parse_server
from echokit.transports.stream import EchoServerFactory, describe_address


@dataclass
class Listener:
    """One listening endpoint: its string, its port, and what serves it."""

    plan: ServerPlan
    port: IListeningPort
    server: EchoServerFactory | EchoDatagramServer | Any  # Any: a quic QuicEchoServer

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
        path = self.plan.websocket_path
        if path is not None:
            return websocket_connect_string(self.plan.is_tls, self.port.getHost(), path)
        kind = "ssl" if self.plan.is_tls else self.plan.spec.kind
        return connect_string(kind, self.port.getHost())

    @property
    def connect_strings(self) -> list[str]:
        """Every client string that reaches it: a quic: listener takes datagrams too."""
        if self.plan.spec.kind == "quic":
            return [self.connect_string, self.connect_string + ":datagram=yes"]
        return [self.connect_string]

    def announcement(self) -> str:
        """The line C{serve} prints for this listener."""
        return (
            f"{self.description} listening on {self.bound} "
            f"-> echokit connect {shlex.quote(self.connect_string)}"
            + ("  (add :datagram=yes for QUIC datagrams)" if self.plan.spec.kind == "quic" else "")
        )

    def summary(self) -> str:
        """One line of what this listener did, for the shutdown summary."""
        server = self.server
        if self.plan.spec.kind == "quic":
            q: Any = server.stats  # echokit.transports.quic.QuicStats
            return (
                f"{self.description}: {q.connections:,} connections, {q.streams:,} streams, "
                f"{q.bytes:,} bytes and {q.datagrams:,} datagrams echoed, {q.refused:,} "
                f"refused over limits, {q.timeouts:,} timed out, {q.errors:,} errors, "
                f"{q.dropped:,} datagrams dropped"
            )
        if isinstance(server, EchoDatagramServer):
            s = server.stats
            return (
                f"{self.description}: {s.datagrams:,} datagrams ({s.bytes:,} bytes) echoed, "
                f"{s.dropped:,} dropped, {s.errors:,} errors"
            )
        c = server.stats
        return (
            f"{self.description}: {c.connections:,} connections, {c.bytes:,} bytes echoed, "
            f"{c.refused:,} refused over limits, {c.shed:,} shed for other addresses, "
            f"{c.timeouts:,} timed out, {c.errors:,} errors"
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
    """The endpoint that listens: the wrapped one of C{haproxy:...} or C{ws:...}, else C{spec}."""
    if spec.kind in ("ws", "wss"):
        return _listening_spec(websocket_inner(spec))
    if spec.kind != "haproxy":
        return spec
    try:
        return proxied_spec(spec)
    except EchokitError:
        return spec


#: Kinds that share one port space: a tcp port and an ssl port are the same TCP port.
_PORT_SPACES = (frozenset({"tcp", "tcp6", "ssl"}), DATAGRAM_KINDS | {"quic"})


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
    """
    Who holds the lock of unix socket C{path} (Twisted's lock: a symlink whose target
    is the holder's pid, made by the holder). The link is read, never followed; one
    made by another user than the one running that pid is not a server's lock.
    """
    lock = f"{path}.lock"
    try:
        pid = os.readlink(lock)
        made_by = os.lstat(lock).st_uid
    except OSError:
        return "another process is serving there; stop it, or choose another path"
    try:
        runs_as: int | None = os.stat(f"/proc/{int(pid)}").st_uid
    except (OSError, ValueError):
        runs_as = None
    if runs_as is not None and runs_as != made_by:
        return (
            f"{lock} names process {pid}, but was made by user id {made_by}, not by the "
            f"user running process {pid} (user id {runs_as}): it is no server's lock; "
            f"remove {lock} (or have its owner remove it), or choose another path"
        )
    return (
        f"process {pid} holds {lock}; stop it, or choose another path (if process "
        f"{pid} serves nothing there, remove {lock})"
    )


def _what_is_at(path: str) -> str:
    """What occupies unix socket C{path}, named as what it is (never following a link)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return f"something is at {path}: stop what serves there, or remove it"
    if stat.S_ISLNK(mode):
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:
            target = ""
        return (
            f"a symbolic link is at {path}{target}: echokit binds no socket through a "
            "link; remove the link, or choose another path"
        )
    if stat.S_ISREG(mode):
        return (
            f"a regular file is at {path}: echokit removes only stale sockets; remove the "
            "file, or choose another path"
        )
    if stat.S_ISDIR(mode):
        return f"a directory is at {path}: choose another path"
    if stat.S_ISSOCK(mode):
        return f"a socket file is at {path}: stop what serves there, or remove the file"
    return f"a special file is at {path}: choose another path"


def remove_own_lock(spec: EndpointSpec) -> None:
    """
    Remove the lock of unix listener C{spec} if this process made it: Twisted takes the
    lock before it binds, and leaves it behind when the bind fails.
    """
    spec = _listening_spec(spec)
    if spec.kind != "unix" or not spec.get("lockfile", True):
        return
    lock = f"{spec.get('address')}.lock"
    with contextlib.suppress(OSError):
        if os.readlink(lock) == str(os.getpid()):
            os.unlink(lock)


def _listen_hint(spec: EndpointSpec, code: int | None) -> str | None:
    """What to do when listening on C{spec} failed with errno C{code}, if echokit knows."""
    port, interface = spec.get("port"), spec.get("interface")
    if spec.kind == "unix":
        path = spec.get("address")
        if code == errno.EADDRINUSE:
            return _what_is_at(str(path))
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
    without = "on loopback only" if kind in {*DATAGRAM_KINDS, "quic"} else "on every address"
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

    Stream listeners share one L{ConnectionLimiter} and one L{EchoBudget}, so
    C{max_connections} and C{max_buffered} count every listener's connections together.

    @raise RuntimeFailure: naming the endpoint that could not listen and why.
    """
    policy = policy or ServerPolicy()
    limiter = ConnectionLimiter(policy.max_connections, policy.max_per_peer)
    budget = EchoBudget(policy.echo_buffer, policy.max_buffered)
    listeners: list[Listener] = []
    for plan in plans:
        server: EchoServerFactory | EchoDatagramServer | Any
        if plan.spec.kind == "quic":
            quic_endpoint: Any = plan.endpoint  # echokit.transports.quic.QuicServerEndpoint
            server = quic_endpoint.make_server(plan.spec.text, policy, limiter, verbose)
        elif plan.is_datagram:
            server = EchoDatagramServer(plan.spec.text, reactor, policy, verbose)
        elif plan.websocket_path is not None:
            server = websocket_module(plan.spec).WebSocketEchoFactory(
                plan.spec.text,
                "wss" if plan.is_tls else "ws",
                reactor,
                policy,
                limiter,
                verbose,
                plan.is_tls,
                path=plan.websocket_path,
            )
        else:
            server = EchoServerFactory(
                plan.spec.text,
                plan.spec.kind,
                reactor,
                policy,
                limiter,
                verbose,
                plan.is_tls,
                budget,
            )
        try:
            port = await plan.endpoint.listen(server)  # type: ignore[arg-type]
        except Exception as e:
            for started in listeners:
                await defer.maybeDeferred(started.port.stopListening)
            failure = _listen_failed(plan, e, listeners)
            remove_own_lock(plan.spec)
            raise failure from None
        listeners.append(Listener(plan, port, server))
    return listeners
