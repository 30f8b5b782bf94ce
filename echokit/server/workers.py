"""
C{echokit serve --workers N}: several processes serving the same listening sockets.

The first process listens as usual, then starts C{N - 1} workers and hands each of them
its listening sockets (Twisted's C{adoptStreamPort} and C{adoptDatagramPort} pattern):
every process accepts connections (and reads datagrams) from the same sockets, and the
kernel spreads them between the processes. Each worker applies the same limits and
timeouts (C{--max-connections} counts per process), drains on SIGTERM and prints its own
summary. The workers stop when the first process does.

On a 2-core machine a client on the same machine competes with the workers for the
cores: measure scaling with a client that can drive it (see C{benchmarks/}).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from echokit.errors import InputError
from echokit.runtime.policy import ServerPolicy
from echokit.server.listeners import Listener, required_client_ca
from echokit.transports.certs import CertStore
from echokit.transports.datagram import READ_SIZE
from echokit.transports.endpoints import (
    DATAGRAM_KINDS,
    ServerPlan,
    behind_proxy,
    proxied_spec,
    ssl_server_context,
    websocket_inner,
)
from echokit.transports.grammar import EndpointSpec, parse_server

_FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}


def worker_count(value: str) -> int:
    """C{--workers}: a whole number of processes, or C{auto} for one per CPU."""
    if value == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise InputError(f"--workers '{value}': give a number from 1 to 256, or auto")
    return int(value)


@dataclass(frozen=True)
class Inherited:
    """A listening socket handed to a worker: its descriptor and what it serves."""

    fd: int
    family: str
    text: str


def inheritable(listeners: Sequence[Listener]) -> list[Inherited]:
    """The listening sockets a worker can share, described for its command line."""
    shared = []
    for listener in listeners:
        address = listener.port.getHost()
        family = (
            "UNIX"
            if isinstance(address, UNIXAddress)
            else "INET6"
            if isinstance(address, IPv6Address)
            else "INET"
            if isinstance(address, IPv4Address)
            else None
        )
        fileno = getattr(listener.port, "fileno", None)
        if family is None or fileno is None:
            continue  # e.g. a plugin's endpoint: served by the first process only
        shared.append(Inherited(fileno(), family, listener.description))
    return shared


class _Worker(protocol.ProcessProtocol):
    """
    One worker process. C{ready} fires with C{True} once it serves (it writes a byte to
    C{ready_fd} when it listens with its signal handlers in place), or with C{False} if it
    exits first; C{ended} fires when it has exited.
    """

    def __init__(self, index: int, ready_fd: int) -> None:
        self.index = index
        self.ready_fd = ready_fd
        self.ready: defer.Deferred[bool] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.serving = False
        self.pid = 0
        self.process: Any = None

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self.ready_fd and not self.ready.called:
            self.serving = True
            self.ready.callback(True)

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.callback(False)
        self.ended.callback(None)


def spawn_workers(
    reactor: Any,
    count: int,
    listeners: Sequence[Listener],
    policy: ServerPolicy,
    certs: CertStore,
    global_argv: Sequence[str],
) -> list[_Worker]:
    """Start C{count} worker processes sharing C{listeners}' sockets."""
    shared = inheritable(listeners)
    config = json.dumps(
        {
            "listeners": [dataclasses.asdict(s) for s in shared],
            "policy": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(policy).items()
            },
        }
    )
    workers = []
    ready_fd = max([2, *(s.fd for s in shared)]) + 1  # a pipe the worker says "ready" on
    for index in range(1, count + 1):
        worker = _Worker(index, ready_fd)
        fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, ready_fd: "r"}
        fds.update({s.fd: s.fd for s in shared})
        argv = [
            sys.executable,
            "-m",
            "echokit",
            *global_argv,
            "worker",
            "--index",
            str(index),
            "--ready-fd",
            str(ready_fd),
            "--cert-dir",
            str(certs.directory),
            config,
        ]
        worker.process = reactor.spawnProcess(
            worker, sys.executable, argv, env=os.environ, childFDs=fds
        )
        worker.pid = worker.process.pid
        workers.append(worker)
    return workers


#: Seconds a worker may take to start serving before it is given up (and stopped).
READY_TIMEOUT = 30.0


async def wait_until_serving(
    reactor: Any, workers: Sequence[_Worker], stop: defer.Deferred[Any]
) -> list[_Worker]:
    """
    Wait until every worker serves, has exited, or took over L{READY_TIMEOUT} seconds,
    or until C{stop} fires (a signal); stop the workers that do not serve. The serving ones.
    """
    stopped: defer.Deferred[None] = defer.Deferred()

    def seen(result: Any) -> Any:
        if not stopped.called:
            stopped.callback(None)
        return result  # C{stop} keeps its result for whoever awaits it next

    stop.addBoth(seen)
    for worker in workers:
        worker.ready.addTimeout(READY_TIMEOUT, reactor, onTimeoutCancel=lambda *_: False)
    everyone: defer.Deferred[None] = defer.DeferredList(
        [w.ready for w in workers], consumeErrors=True
    ).addCallback(lambda _: None)
    await defer.DeferredList([everyone, stopped], fireOnOneCallback=True, consumeErrors=True)
    failed = [w for w in workers if not w.serving]
    stop_workers(failed)
    return [w for w in workers if w.serving]


def stop_workers(workers: Sequence[_Worker]) -> None:
    """Ask every worker still running to stop gracefully (SIGTERM)."""
    for worker in workers:
        if not worker.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                worker.process.signalProcess("TERM")


@implementer(IStreamServerEndpoint)
class AdoptedStreamEndpoint:
    """A server endpoint that serves an inherited listening socket."""

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self.reactor, self.fd, self.family = reactor, fd, family

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return defer.execute(self.reactor.adoptStreamPort, self.fd, self.family, factory)


class AdoptedDatagramEndpoint:
    """A datagram "endpoint" that reads an inherited UDP socket."""

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self.reactor, self.fd, self.family = reactor, fd, family

    def listen(self, datagram_protocol: Any) -> defer.Deferred[Any]:
        return defer.execute(
            self.reactor.adoptDatagramPort, self.fd, self.family, datagram_protocol, READ_SIZE
        )


def worker_plans(
    reactor: Any, config: str, certs: CertStore
) -> tuple[list[ServerPlan], ServerPolicy]:
    """Rebuild, in a worker, the plans for the sockets its parent handed over."""
    data = json.loads(config)
    raw = data["policy"]
    if raw.get("client_ca"):
        raw["client_ca"] = Path(raw["client_ca"])
    policy = ServerPolicy(**raw)
    client_ca = required_client_ca(policy, certs)
    plans = []
    for item in data["listeners"]:
        spec = parse_server(item["text"])
        family = _FAMILIES[item["family"]]
        if spec.kind in DATAGRAM_KINDS:
            endpoint: Any = AdoptedDatagramEndpoint(reactor, item["fd"], family)
        else:
            endpoint = adopted_stream(reactor, spec, item["fd"], family, certs, client_ca)
        plans.append(ServerPlan(spec, endpoint))
    return plans, policy


def adopted_stream(
    reactor: Any,
    spec: EndpointSpec,
    fd: int,
    family: int,
    certs: CertStore,
    client_ca: Path | None,
) -> IStreamServerEndpoint:
    """The worker's endpoint for C{spec} on the socket C{fd}: with the parent's layers
    (TLS for C{ssl:}, a PROXY header for C{haproxy:}, both for C{haproxy:ssl:})."""
    if spec.kind == "haproxy":
        inner = adopted_stream(reactor, proxied_spec(spec), fd, family, certs, client_ca)
        return behind_proxy(reactor, inner)
    if spec.kind in ("ws", "wss"):  # the WebSocket layer is the listener's factory
        return adopted_stream(reactor, websocket_inner(spec), fd, family, certs, client_ca)
    adopted = AdoptedStreamEndpoint(reactor, fd, family)
    if spec.kind == "ssl":
        from echokit.transports.tlslayer import TLSServerEndpoint

        context = ssl_server_context(spec, certs, client_ca, prompt=False)[0]
        return TLSServerEndpoint(adopted, context)
    return adopted
