"""
In-process helpers for real-socket tests: echokit servers and clients on loopback.

For L{twisted.trial.unittest.TestCase}s: everything returns Deferreds (or is a
coroutine to wrap with L{deferred_test}), and L{EchoSession} cleans up after itself so
the reactor is left clean.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task

from echokit.client.connect import ClientOptions, StreamConnection, open_datagram, open_stream
from echokit.runtime.policy import ServerPolicy
from echokit.server.listeners import Listener, plan_servers, start_listeners
from echokit.transports.certs import CertStore
from echokit.transports.datagram import EchoDatagramClient
from echokit.transports.grammar import parse_client
from echokit.transports.stream import EchoServerFactory

_STORE: CertStore | None = None


def cert_store() -> CertStore:
    """
    One generated CA and certificates for the whole test run, in a temporary directory
    removed when the run ends (it holds private keys).
    """
    global _STORE
    if _STORE is None:
        directory = Path(tempfile.mkdtemp(prefix="echokit-test-certs-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _STORE = CertStore(directory)
        _STORE.create()
    return _STORE


def deferred_test(
    f: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., defer.Deferred[Any]]:
    """Let trial run an C{async def} test: it waits on the returned Deferred."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(f(*args, **kwargs))

    return wrapper


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (on the reactor, bounded) until C{condition()} holds."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"condition not met within {seconds} s")


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def _all_closed(factory: EchoServerFactory) -> Callable[[], bool]:
    return lambda: factory.open_connections == 0


class EchoSession:
    """Servers started by a test, and the clients it opened, all cleaned up at the end."""

    def __init__(self, testcase: Any) -> None:
        self.listeners: list[Listener] = []
        self.datagram_clients: list[EchoDatagramClient] = []
        self.options = ClientOptions(certs=cert_store(), timeout=5.0)
        self.policy = ServerPolicy()
        testcase.addCleanup(lambda: defer.ensureDeferred(self.close()))

    async def serve(self, *descriptions: str) -> list[Listener]:
        plans = plan_servers(reactor, descriptions, cert_store())
        started = await start_listeners(reactor, plans, self.policy)
        self.listeners.extend(started)
        return started

    async def stream(self, listener: Listener, on_echo: Any = None) -> StreamConnection:
        return await open_stream(
            reactor, parse_client(listener.connect_string), self.options, on_echo
        )

    async def datagram(self, listener: Listener) -> EchoDatagramClient:
        client = await open_datagram(reactor, parse_client(listener.connect_string), self.options)
        self.datagram_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.datagram_clients:
            await defer.maybeDeferred(client.transport.stopListening)
        for listener in self.listeners:
            await defer.maybeDeferred(listener.port.stopListening)
            server = listener.server
            if isinstance(server, EchoServerFactory):
                await eventually(_all_closed(server))
