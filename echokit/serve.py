"""
What C{echokit serve} does: listen on every endpoint given, in one reactor.

Every string is checked before anything listens, so a typo in the third endpoint never
leaves the first two running. Once all listen, one line per listener says the address
it actually bound (port 0 resolved) and the exact C{echokit connect} string that
reaches it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort

from echokit.certs import CertStore
from echokit.datagram import EchoDatagramServer
from echokit.endpoints import ServerPlan, connect_string, server_endpoint
from echokit.errors import RuntimeFailure
from echokit.grammar import EndpointSpec, parse_server
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
        return connect_string(self.plan.spec.kind, self.port.getHost())

    def announcement(self) -> str:
        """The line C{serve} prints for this listener."""
        return (
            f"{self.description} listening on {self.bound} "
            f"-> echokit connect {shlex.quote(self.connect_string)}"
        )


def plan_servers(
    reactor: Any, descriptions: Sequence[str | EndpointSpec], certs: CertStore
) -> list[ServerPlan]:
    """Check every server string and build its endpoint; nothing listens yet."""
    specs = [d if isinstance(d, EndpointSpec) else parse_server(d) for d in descriptions]
    return [server_endpoint(reactor, spec, certs) for spec in specs]


def _listen_failed(plan: ServerPlan, e: Exception) -> RuntimeFailure:
    if isinstance(e, error.CannotListenError) and isinstance(e.socketError, OSError):
        why = e.socketError.strerror or str(e.socketError)
    else:
        why = str(e) or type(e).__name__
    return RuntimeFailure(f"cannot listen on '{plan.spec.text}': {why}")


async def start_listeners(plans: Sequence[ServerPlan], verbose: bool = False) -> list[Listener]:
    """
    Listen on every planned endpoint; if one fails, stop those already started.

    @raise RuntimeFailure: naming the endpoint that could not listen and why.
    """
    listeners: list[Listener] = []
    for plan in plans:
        server: EchoServerFactory | EchoDatagramServer
        if plan.is_datagram:
            server = EchoDatagramServer(plan.spec.text, verbose)
        else:
            server = EchoServerFactory(plan.spec.text, plan.spec.kind, verbose)
        try:
            port = await plan.endpoint.listen(server)  # type: ignore[arg-type]
        except Exception as e:
            for started in listeners:
                await defer.maybeDeferred(started.port.stopListening)
            raise _listen_failed(plan, e) from None
        listeners.append(Listener(plan, port, server))
    return listeners


async def serve(
    reactor: Any,
    descriptions: Sequence[str | EndpointSpec],
    certs: CertStore,
    out: TextIO,
    verbose: bool = False,
) -> list[Listener]:
    """
    Listen on every endpoint in C{descriptions} and announce each on C{out}.

    @return: the listeners, serving until the reactor stops.
    """
    plans = plan_servers(reactor, descriptions, certs)
    for plan in plans:
        if plan.created_certs is not None:
            out.write(
                f"created a CA and certificates in {plan.created_certs} "
                f"(clients trust {plan.created_certs / 'ca.pem'})\n"
            )
    listeners = await start_listeners(plans, verbose)
    for listener in listeners:
        out.write(listener.announcement() + "\n")
    out.flush()
    return listeners
