"""
The reference asyncio echo server: what "as fast as asyncio's own echo server" means.

    python benchmarks/servers/asyncio_echo.py [--tcp HOST:PORT]... [--unix PATH]...
        [--udp HOST:PORT]... [--tls HOST:PORT --cert CERT.pem --key KEY.pem]... [--uvloop]

Stream listeners use an C{asyncio.Protocol} whose C{data_received} writes the data back;
datagrams an C{asyncio.DatagramProtocol} whose C{datagram_received} sends each one back to
its sender. Like echokit's server it is well behaved, not stripped down: TCP_NODELAY on
every TCP connection, backpressure (stop reading while the transport's write buffer is
over its high-water mark), half-close (on EOF, the echo already written is flushed and
then the connection closes). C{--uvloop} runs it on uvloop, if uvloop is importable.

Once everything listens it prints one line per listener on stdout, like the native
server: C{tcp 127.0.0.1 PORT}, C{unix PATH}, C{udp 127.0.0.1 PORT}, C{tls 127.0.0.1 PORT}.
SIGTERM or SIGINT closes the listeners and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import ssl
import sys
from typing import Any, cast


class EchoProtocol(asyncio.Protocol):
    """Write back every byte; stop reading while the write buffer is full."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        # False: asyncio closes the transport, which flushes what is buffered first.
        return False


class EchoDatagramProtocol(asyncio.DatagramProtocol):
    """Send each datagram back to where it came from."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error from a peer that went away: nothing to do


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers: list[asyncio.AbstractServer] = []
    endpoints: list[asyncio.BaseTransport] = []
    lines: list[str] = []
    try:
        for host, port in args.tcp:
            server = await loop.create_server(EchoProtocol, host, port, backlog=4096)
            servers.append(server)
            bound = server.sockets[0].getsockname()
            lines.append(f"tcp {bound[0]} {bound[1]}")
        for path in args.unix:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            server = await loop.create_unix_server(EchoProtocol, path, backlog=4096)
            servers.append(server)
            lines.append(f"unix {path}")
        for host, port in args.udp:
            transport, _ = await loop.create_datagram_endpoint(
                EchoDatagramProtocol, local_addr=(host, port)
            )
            endpoints.append(transport)
            bound = transport.get_extra_info("sockname")
            lines.append(f"udp {bound[0]} {bound[1]}")
        if args.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(args.cert, args.key)
            for host, port in args.tls:
                server = await loop.create_server(
                    EchoProtocol, host, port, ssl=context, backlog=4096
                )
                servers.append(server)
                bound = server.sockets[0].getsockname()
                lines.append(f"tls {bound[0]} {bound[1]}")
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        await stop.wait()
    finally:
        for each in servers:
            each.close()
        for endpoint in endpoints:
            endpoint.close()
        for path in args.unix:
            with contextlib.suppress(OSError):
                os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--tcp", type=host_port, action="append", default=[])
    parser.add_argument("--unix", action="append", default=[])
    parser.add_argument("--udp", type=host_port, action="append", default=[])
    parser.add_argument("--tls", type=host_port, action="append", default=[])
    parser.add_argument("--cert", help="server certificate (PEM), for --tls")
    parser.add_argument("--key", help="its private key (PEM), for --tls")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if not (args.tcp or args.unix or args.udp or args.tls):
        parser.error("give at least one of --tcp, --unix, --udp, --tls")
    if args.tls and not (args.cert and args.key):
        parser.error("--tls needs --cert and --key")
    raise_open_files_limit()
    if args.uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]
        except ImportError:
            sys.exit("asyncio_echo: --uvloop: uvloop is not installed (pip install uvloop)")
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
