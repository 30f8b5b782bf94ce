"""
Tests for echokit's speed levers: writing through to the socket, plain C{recv} on unix
sockets, and the lean reactor. Each keeps every guarantee of the plain path.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echokit.client.connect import StreamConnection
from echokit.server.listeners import Listener
from echokit.transports.endpoints import ipv6_unavailable
from echokit.transports.fastpath import SocketWriter
from echokit.transports.stream import EchoServerFactory, EchoServerProtocol
from tests.realnet import EchoSession, deferred_test, eventually, random_bytes
from tests.support import ECHOKIT, echokit_server, run_echokit, skip_reason
from tests.test_hardening import roundtrip


class PartialSocket:
    """A socket whose send takes at most C{limit} bytes, then would block."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent = bytearray()

    def send(self, data: bytes) -> int:
        if self.limit <= 0:
            raise BlockingIOError()
        n = min(self.limit, len(data))
        self.sent += data[:n]
        self.limit -= n
        return n


class RecordingTransport:
    """Just enough of a Twisted transport to watch what the protocol queues."""

    def __init__(self) -> None:
        self.dataBuffer = b""
        self._tempDataLen = 0
        self.disconnecting = False
        self.queued = bytearray()

    def write(self, data: bytes) -> None:
        self.queued += data
        self._tempDataLen += len(data)


class WriteThroughTests(SynchronousTestCase):
    def protocol(self, limit: int) -> tuple[EchoServerProtocol, PartialSocket, RecordingTransport]:
        protocol = EchoServerProtocol()
        protocol.factory = EchoServerFactory("tcp:0", "tcp", Clock())
        sock, transport = PartialSocket(limit), RecordingTransport()
        protocol.transport = transport  # type: ignore[assignment]
        protocol._writer = SocketWriter(transport, sock)  # type: ignore[arg-type]
        return protocol, sock, transport

    def test_what_the_kernel_does_not_take_is_queued_in_order(self) -> None:
        """A partial send queues the rest; later data queues behind it, never ahead."""
        protocol, sock, transport = self.protocol(limit=3)
        protocol.dataReceived(b"abcdef")
        protocol.dataReceived(b"ghi")
        self.assertEqual(bytes(sock.sent), b"abc")
        self.assertEqual(bytes(transport.queued), b"defghi")
        self.assertEqual(bytes(sock.sent + transport.queued), b"abcdefghi")

    def test_would_block_queues_everything(self) -> None:
        """When the socket takes nothing, everything goes through the transport."""
        protocol, sock, transport = self.protocol(limit=0)
        protocol.dataReceived(b"xyz")
        self.assertEqual((bytes(sock.sent), bytes(transport.queued)), (b"", b"xyz"))

    def test_closing_transport_is_not_bypassed(self) -> None:
        """Once the transport is closing, writes go through it (it decides what happens)."""
        protocol, sock, transport = self.protocol(limit=100)
        transport.disconnecting = True
        protocol.dataReceived(b"late")
        self.assertEqual((bytes(sock.sent), bytes(transport.queued)), (b"", b"late"))


async def connected_pair(
    session: EchoSession, listener: Listener
) -> tuple[StreamConnection, EchoServerProtocol]:
    """A client connection to C{listener}, and the server's protocol for it."""
    connection = await session.stream(listener)
    factory = listener.server
    assert isinstance(factory, EchoServerFactory)
    await eventually(lambda: bool(factory.open_protocols))
    [server_side] = list(factory.open_protocols)
    return connection, server_side


class FastPathEngagementTests(TestCase):
    """On real sockets the fast path is on for tcp, unix, and under TLS."""

    @deferred_test
    async def test_engaged_where_it_applies(self) -> None:
        """tcp and unix server connections write through, and so does ssl's TLS layer."""
        session = EchoSession(self)
        listeners = await session.serve(
            "tcp:0:interface=127.0.0.1", f"unix:{self.mktemp()}.sock", "ssl:0:interface=127.0.0.1"
        )
        engaged = {}
        for listener in listeners:
            connection, server_side = await connected_pair(session, listener)
            writer = server_side._writer
            if listener.plan.spec.kind == "ssl":  # the TLS layer writes its ciphertext through
                writer = server_side.transport._writer  # type: ignore[attr-defined]
            engaged[listener.plan.spec.kind] = isinstance(writer, SocketWriter)
            if listener.plan.spec.kind == "unix":  # recv, as TCP reads, not recvmsg
                read: Any = getattr(server_side.transport, "doRead")  # noqa: B009
                self.assertEqual(read.__func__.__qualname__, "Connection.doRead")
            payload = random_bytes(3 << 20)
            connection.protocol.send(payload)
            connection.protocol.finish()
            await connection.protocol.done
            self.assertEqual(connection.protocol.verifier.bytes_received, len(payload))
        self.assertEqual(engaged, {"tcp": True, "unix": True, "ssl": True})


def tcp_under(transport: Any) -> Any:
    """The TCP or unix connection under C{transport}, TLS layers peeled off."""
    while not hasattr(transport, "socket"):
        transport = transport.transport
    return transport


def nodelay(transport: Any) -> bool:
    """Whether the TCP socket under C{transport} (TLS layers peeled off) has TCP_NODELAY."""
    sock = tcp_under(transport).socket
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def minor_faults(pid: int) -> int:
    """A process's minor page faults so far (C{/proc/PID/stat}, field 10)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[7])


class LargeReadsOnTheHeapTests:
    """A fresh server's 256 KiB reads reuse heap memory from the first read on."""

    @pytest.mark.parametrize("kind", ["tcp", "unix"])
    def test_fresh_server_reads_without_a_page_fault_each(self, tmp_path: Path, kind: str) -> None:
        """
        1,000 echoes of 1 KiB, one at a time, on the first connection of a fresh
        C{echokit serve} (no connection has closed yet) cost the server far fewer than
        one page fault each: its C{recv(256 KiB)} blocks come from the heap, not a fresh
        mapping per read (mmap, mremap, munmap and a fault: p50 42-45 us against 13-20 us
        once a connection had closed and glibc raised its threshold).
        """
        description = "tcp:0:interface=127.0.0.1" if kind == "tcp" else f"unix:{tmp_path}/s"
        with echokit_server([description], tmp_path) as server:
            spec = server.connect_strings[0]
            if kind == "tcp":
                address: Any = ("127.0.0.1", int(spec.rsplit("port=", 1)[1]))
                family = socket.AF_INET
            else:
                address, family = spec.split("path=", 1)[1], socket.AF_UNIX
            message = random_bytes(1024)
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(10)
                client.connect(address)

                def echo(times: int) -> None:
                    for _ in range(times):
                        assert roundtrip(client, message) == message

                echo(20)  # the connection's own first allocations
                before = minor_faults(server.process.pid)
                echo(1000)
                faults = minor_faults(server.process.pid) - before
            assert faults < 100, f"{faults} page faults over 1,000 echoes"


class NoNagleTests(TestCase):
    """No Nagle stalls: TCP connections have TCP_NODELAY on both ends, TLS or not."""

    @deferred_test
    async def test_server_and_client_ends_have_nodelay(self) -> None:
        """
        Server connections accepted on tcp, tcp6 (where this machine has IPv6) and ssl
        listeners, and the client connections echokit opens to them, have TCP_NODELAY set
        on their sockets.
        """
        session = EchoSession(self)
        kinds = ["tcp", "ssl"] + ([] if skip_reason(ipv6_unavailable()) else ["tcp6"])
        descriptions = {
            "tcp": "tcp:0:interface=127.0.0.1",
            "ssl": "ssl:0:interface=127.0.0.1",
            "tcp6": "tcp6:0:interface=\\:\\:1",
        }
        listeners = await session.serve(*(descriptions[kind] for kind in kinds))
        found = {}
        for listener in listeners:
            connection, server_side = await connected_pair(session, listener)
            found[listener.plan.spec.kind] = (
                nodelay(server_side.transport),
                nodelay(connection.protocol.transport),
            )
            connection.protocol.finish()
            await connection.protocol.done
        self.assertEqual(found, {kind: (True, True) for kind in kinds})


class ReactorChoiceTests:
    @pytest.mark.parametrize("name", ["lean", "epoll", "asyncio"])
    def test_every_reactor_serves_exactly(self, name: str, tmp_path: Path) -> None:
        """echokit serve on each reactor echoes 1 MiB exactly over tcp and unix."""
        sock = Path("/tmp") / f"echokit-fast-{os.getpid()}-{name}.sock"
        with echokit_server(
            ["tcp:0:interface=127.0.0.1", f"unix:{sock}"], tmp_path, extra=["--reactor", name]
        ) as server:
            payload = os.urandom(1 << 20)
            for target in server.connect_strings:
                result = run_echokit(["connect", target], stdin=payload)
                assert result.returncode == 0, result.stderr.decode()
                assert result.stdout == payload

    @pytest.mark.parametrize(
        "extra, flags, expected",
        [
            ([], [], "echokit.runtime.leanreactor.LeanEPollReactor"),
            (["--reactor", "epoll"], [], "twisted.internet.epollreactor.EPollReactor"),
            ([], ["--reactor", "asyncio"], "twisted.internet.asyncioreactor."),
            (["--reactor", "epoll"], ["--reactor", "asyncio"], "twisted.internet.asyncioreactor."),
        ],
        ids=["default-lean", "global-option", "after-the-command", "after-the-command-wins"],
    )
    def test_the_reactor_that_runs(
        self, extra: list[str], flags: list[str], expected: str, tmp_path: Path
    ) -> None:
        """
        The reactor serving is the one chosen: lean by default on Linux, else what
        C{--reactor} names before or after the command (after wins); C{-v} logs it.
        """
        if not extra and not sys.platform.startswith("linux"):
            pytest.skip("lean is the default on Linux only")
        with echokit_server(
            ["tcp:0:interface=127.0.0.1"], tmp_path, extra=["-v", *extra], flags=flags
        ) as server:
            result = run_echokit(["connect", server.connect_strings[0]], stdin=b"which loop")
            assert result.stdout == b"which loop", result.stderr.decode()
            logged = server.stop()
        loops = [line for line in logged.splitlines() if "event loop: " in line]
        assert len(loops) == 1, logged
        assert f"({expected}" in loops[0], loops[0]

    def test_unknown_reactor_is_a_usage_error(self) -> None:
        """--reactor with a name echokit does not know: exit 2, one line."""
        result = subprocess.run(
            [*ECHOKIT, "--reactor", "bogus", "demo"], capture_output=True, check=False
        )
        assert result.returncode == 2
        assert len(result.stderr.decode().splitlines()) == 1


class LeanReactorErrorTests(TestCase):
    """An exception in a protocol on the lean reactor is logged and drops only its connection."""

    def test_reactor_under_test_is_twisteds_default_not_the_lean_one(self) -> None:
        """In-process tests run on Twisted's default reactor (epoll on Linux), not on
        the lean one, which only the CLI installs: the tests below build their own."""
        from echokit.runtime.leanreactor import LeanEPollReactor

        self.assertNotIsInstance(reactor, LeanEPollReactor)
        if sys.platform == "linux":
            from twisted.internet.epollreactor import EPollReactor

            self.assertIs(type(reactor), EPollReactor)

    def test_dispatch_survives_a_failing_selectable(self) -> None:
        """A selectable whose doRead raises is disconnected; the next one still runs."""
        from echokit.runtime.leanreactor import LeanEPollReactor

        lean = LeanEPollReactor()
        calls: list[str] = []

        class Boom:
            def fileno(self) -> int:
                return 1001

            def doRead(self) -> Any:
                calls.append("boom")
                raise RuntimeError("bad protocol")

            def connectionLost(self, reason: Any) -> None:
                calls.append("lost")

            def logPrefix(self) -> str:
                return "boom"

        class Fine(Boom):
            def fileno(self) -> int:
                return 1002

            def doRead(self) -> Any:
                calls.append("fine")
                return None

        class Poller:
            def poll(self, timeout: float, n: int) -> list[tuple[int, int]]:
                return [(1001, 1), (1002, 1)]  # EPOLLIN for both

            def close(self) -> None:
                pass

            def unregister(self, fd: int) -> None:
                pass

            def modify(self, fd: int, events: int) -> None:
                pass

        lean._poller = Poller()
        lean._selectables = {1001: Boom(), 1002: Fine()}
        lean._reads = {1001, 1002}
        lean.doPoll(0)
        self.assertEqual(calls, ["boom", "lost", "fine"])
        self.flushLoggedErrors(RuntimeError)

    def test_read_events_end_connections_as_twisted_does(self) -> None:
        """
        On the lean reactor's read-only path, a doRead returning a reason (the peer's
        FIN) and a selectable whose descriptor is gone (fileno() -1) end those
        connections with Twisted's reasons; a readable-and-hung-up event goes through
        Twisted's own dispatch and ends its connection too.
        """
        from twisted.internet import error
        from twisted.internet.main import CONNECTION_DONE

        from echokit.runtime.leanreactor import LeanEPollReactor

        lean = LeanEPollReactor()
        lost: dict[int, Any] = {}

        class Selectable:
            def __init__(self, fd: int, read: Any) -> None:
                self.fd, self.read = fd, read

            def fileno(self) -> int:
                return -1 if self.fd == 1002 else self.fd

            def doRead(self) -> Any:
                return self.read

            def connectionLost(self, reason: Any) -> None:
                lost[self.fd] = reason

            def logPrefix(self) -> str:
                return "selectable"

        class Poller:
            def poll(self, timeout: float, n: int) -> list[tuple[int, int]]:
                return [(1001, 1), (1002, 1), (1003, 1 | 16)]  # EPOLLIN; EPOLLIN | EPOLLHUP

            def close(self) -> None:
                pass

            def unregister(self, fd: int) -> None:
                pass

            def modify(self, fd: int, events: int) -> None:
                pass

        lean._poller = Poller()
        lean._selectables = {
            1001: Selectable(1001, CONNECTION_DONE),
            1002: Selectable(1002, None),
            1003: Selectable(1003, CONNECTION_DONE),
        }
        lean._reads = {1001, 1002, 1003}
        lean.doPoll(0)
        self.assertEqual(sorted(lost), [1001, 1002, 1003])
        lost[1001].trap(error.ConnectionDone)
        lost[1002].trap(error.ConnectionFdescWentAway)
        lost[1003].trap(error.ConnectionDone)


class _CountingSocket:
    """A UDP port's socket that counts its reads, and those that found it empty."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.reads, self.empty = sock, 0, 0

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        self.reads += 1
        try:
            return self.sock.recvfrom(size)
        except BlockingIOError:
            self.empty += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class DatagramReadTests(TestCase):
    """
    A UDP server skips the read that finds its socket empty while datagrams come one per
    wake-up, and reads in batches when they queue up (L{read_datagrams_as_they_come}).
    """

    async def _udp_server(self) -> tuple[Any, _CountingSocket, tuple[str, int]]:
        session = EchoSession(self)
        [listener] = await session.serve("udp:0")
        port: Any = listener.port
        counting = _CountingSocket(port.socket)
        port.socket = counting
        self.wakeups = 0
        read = port.doRead

        def counted() -> Any:
            self.wakeups += 1
            return read()

        port.doRead = counted
        host = port.getHost()
        return port, counting, (host.host, host.port)

    @deferred_test
    async def test_one_in_flight_reads_about_once_per_datagram(self) -> None:
        """
        300 datagrams one at a time, each echoed before the next: every echo comes back
        and the server's reads find its socket empty only a few times (the first
        wake-up's batch; Twisted's port: once per datagram, 300).
        """
        _, counting, address = await self._udp_server()

        def ping_pong() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.connect(address)
                for i in range(300):
                    message = i.to_bytes(4, "big") * 16
                    sock.send(message)
                    assert sock.recv(65536) == message

        await threads.deferToThread(ping_pong)
        assert counting.reads - counting.empty == 300
        assert counting.empty <= 5, (counting.reads, counting.empty)

    @deferred_test
    async def test_queued_datagrams_are_all_read_in_batches(self) -> None:
        """
        After the server settled on single reads, 64 datagrams queued at once are all
        echoed (none waits for a wake-up that does not come), in one or two wake-ups:
        the poll after the first found the rest, and it read them in a batch.
        """
        _, counting, address = await self._udp_server()

        def served(datagrams: int) -> bool:
            return counting.reads - counting.empty >= datagrams

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.connect(address)
            for i in range(40):  # one at a time: single reads from here on
                sock.send(b"single %03d" % i)
                await eventually(partial(served, i + 1))
                assert sock.recv(65536) == b"single %03d" % i
            before = self.wakeups
            messages = [b"queued %03d" % i for i in range(64)]
            for message in messages:  # the reactor does not run between these sends
                sock.send(message)
            await eventually(partial(served, 40 + 64))
            echoes = [sock.recv(65536) for _ in messages]
        assert echoes == messages
        assert self.wakeups - before <= 2, self.wakeups - before
