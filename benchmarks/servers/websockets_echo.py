"""
The reference WebSocket echo server: the websockets library's, on asyncio.

    python benchmarks/servers/websockets_echo.py [--tls CERT.pem KEY.pem] [--uvloop]

Each message is sent back as it came (binary or text), as the websockets documentation's
echo example does, without compression (echokit negotiates none), with no message size
limit, and with TCP_NODELAY on every connection as echokit sets it (without it, echoes over
TLS wait for delayed ACKs: 14 ms p50 measured). It listens on 127.0.0.1 on a free port and prints C{tcp 127.0.0.1 PORT} (or
C{tls 127.0.0.1 PORT} with --tls) on stdout, like the other reference servers; SIGTERM or
SIGINT closes it and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import ssl
from typing import Any


async def echo(connection: Any) -> None:
    """Send every message back; end when the client closes. TCP_NODELAY, as echokit's."""
    sock = connection.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async for message in connection:
        await connection.send(message)


async def main(tls: list[str] | None) -> None:
    from websockets.asyncio.server import serve

    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls[0], tls[1])
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(
        echo, "127.0.0.1", 0, ssl=context, compression=None, max_size=None, ping_interval=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"{'tls' if tls else 'tcp'} 127.0.0.1 {port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if installed")
    args = parser.parse_args()
    runner: Any = asyncio.run
    if args.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(main(args.tls))
