"""
A closed-loop TLS load client: the one client every TLS server is measured with.

    python benchmarks/tls_load.py --port PORT [--host 127.0.0.1] [--hostname localhost]
        --ca CA.pem [--connections 10] [--size 1024] [--duration 2] [--warmup 0.5]

The native loadgen has no TLS, so TLS servers are driven by this asyncio client instead:
C connections (TLS 1.2 or later, the server verified against --ca), each with exactly one
message of SIZE bytes in flight; as soon as all of it has come back (checked byte for
byte) the next is sent. Traffic runs --warmup seconds unmeasured, then --duration seconds
measured (both bounded). Prints one JSON object on stdout, like loadgen, plus the TLS
version and cipher negotiated:

    {"transport": "tls", "size": 1024, "connections": 10, "seconds": 2.0, "messages": N,
     "messages_per_s": ..., "mb_per_s": ..., "errors": 0, "lost": 0,
     "tls_version": "TLSv1.3", "tls_cipher": "TLS_AES_256_GCM_SHA384"}

This client is Python: on a small machine it may be the bottleneck, so compare servers
with it only against each other, never against loadgen's plaintext numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from typing import cast


class Loop(asyncio.Protocol):
    """One connection with one message in flight; counts the messages echoed."""

    def __init__(self, message: bytes, counter: list[int]) -> None:
        self.message = message
        self.view = memoryview(message)
        self.counter = counter
        self.received = 0
        self.running = True
        self.error: str | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        end = self.received + len(data)
        if end > len(self.message) or self.view[self.received : end] != data:
            self.fail("the echo differs from what was sent")
            return
        self.received = end
        if end == len(self.message):
            self.received = 0
            self.counter[0] += 1
            if self.running and self.transport is not None:
                self.transport.write(self.message)

    def fail(self, why: str) -> None:
        self.error = self.error or why
        self.running = False
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running and self.error is None:
            self.error = f"the connection closed early ({exc or 'EOF'})"
        if not self.closed.done():
            self.closed.set_result(None)


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(cafile=args.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    message = os.urandom(args.size)
    counter = [0]
    loops: list[Loop] = []
    errors = 0
    version = cipher = None
    for _ in range(args.connections):
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Loop(message, counter),
                    args.host,
                    args.port,
                    ssl=context,
                    server_hostname=args.hostname,
                ),
                timeout=10,
            )
        except (OSError, ssl.SSLError, TimeoutError) as e:
            print(f"tls_load: cannot connect: {e}", file=sys.stderr)
            errors += 1
            continue
        loops.append(protocol)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            version = ssl_object.version()
            cipher = (ssl_object.cipher() or (None,))[0]
    if not loops:
        raise SystemExit(1)
    await asyncio.sleep(args.warmup)
    base, started = counter[0], time.monotonic()
    await asyncio.sleep(args.duration)
    messages, seconds = counter[0] - base, time.monotonic() - started
    for each in loops:
        each.running = False
    for each in loops:
        if each.transport is not None:
            each.transport.abort()
    await asyncio.wait([each.closed for each in loops], timeout=5)
    errors += sum(1 for each in loops if each.error is not None)
    for each in loops:
        if each.error is not None:
            print(f"tls_load: {each.error}", file=sys.stderr)
    rate = messages / seconds if seconds > 0 else 0.0
    return {
        "transport": "tls",
        "size": args.size,
        "connections": args.connections,
        "seconds": round(seconds, 3),
        "messages": messages,
        "messages_per_s": round(rate, 1),
        "mb_per_s": round(rate * args.size / 1e6, 3),
        "errors": errors,
        "lost": 0,
        "tls_version": version,
        "tls_cipher": cipher,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hostname", default="localhost", help="name to verify (SNI)")
    parser.add_argument("--ca", required=True, help="CA certificate that signed the server's")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    if not 1 <= args.connections <= 10_000 or not 1 <= args.size <= 64 * 1024 * 1024:
        parser.error("--connections must be 1..10000 and --size 1..64m")
    args.duration = min(max(args.duration, 0.1), 600.0)
    args.warmup = min(max(args.warmup, 0.0), 600.0)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
