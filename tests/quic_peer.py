"""
A QUIC client echokit did not write: aioquic's own asyncio client, for interop tests.

Run as C{python -m tests.quic_peer HOST PORT CAFILE MODE [ARGS]} (in its own process,
with its own asyncio loop); it prints one JSON line with what it saw and exits 0, or
prints the error and exits 1.

Modes:
    - C{streams N SIZE}: open N bidirectional streams on one connection at once, send SIZE
      random bytes on each and then its FIN, read each echo up to the server's FIN;
      report whether each came back byte for byte and whether the FIN came after it.
    - C{datagrams N}: send N DATAGRAM frames (RFC 9221) and wait for their echoes.
    - C{alpn NAME}: offer only ALPN NAME and report how the handshake ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import DatagramFrameReceived, QuicEvent


class _Datagrams(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, DatagramFrameReceived):
            self.received.put_nowait(event.data)
        super().quic_event_received(event)


async def _one_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> dict[str, Any]:
    async def send() -> None:
        view = memoryview(payload)
        for start in range(65536, len(payload), 65536):
            writer.write(view[start : start + 65536])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    echo = await reader.read()  # up to the server's FIN
    await sender
    return {"sent": len(payload), "echoed": len(echo), "intact": echo == payload}


async def main(host: str, port: int, cafile: str, mode: str, args: list[str]) -> dict[str, Any]:
    datagrams = mode == "datagrams"
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[args[0] if mode == "alpn" else "echo"],
        server_name="localhost",
        max_datagram_frame_size=65536 if datagrams else None,
    )
    configuration.load_verify_locations(cafile)
    protocol = _Datagrams if datagrams else QuicConnectionProtocol
    async with connect(
        host, port, configuration=configuration, create_protocol=protocol, wait_connected=True
    ) as client:
        if mode == "alpn":
            return {"connected": True}
        if mode == "streams":
            count, size = int(args[0]), int(args[1])
            streams = []
            for _ in range(count):
                # A stream exists once written to: write its first bytes before the next.
                reader, writer = await client.create_stream()
                payload = os.urandom(size)
                writer.write(payload[:65536])
                streams.append(_one_stream(reader, writer, payload))
            results = await asyncio.wait_for(asyncio.gather(*streams), 60)
            return {"streams": results}
        assert isinstance(client, _Datagrams)
        sent = [os.urandom(100 + i) for i in range(int(args[0]))]
        echoes = []
        for payload in sent:
            client._quic.send_datagram_frame(payload)
            client.transmit()
            echoes.append(await asyncio.wait_for(client.received.get(), 5))
        return {"datagrams": len(sent), "intact": echoes == sent}


if __name__ == "__main__":
    host, port, cafile, mode, *rest = sys.argv[1:]
    try:
        result = asyncio.run(main(host, int(port), cafile, mode, rest))
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(result))
