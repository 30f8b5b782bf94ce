"""
What C{echokit demo} does: the tutorial's C{main()}, on every transport at once.

One process, one reactor: start an echo server on tcp, tcp6, unix, ssl, udp and (with
echokit[quic]) quic, whose streams and DATAGRAM frames get a row each, and (with
echokit[ws]) ws and wss, WebSocket plain and over TLS (ephemeral
ports, a temporary unix socket, echokit's generated certificates), connect a client to
each through the connect string the server announced, check the echo byte for byte, and
print one table. A transport this machine lacks (no IPv6) is shown as skipped, with the
reason, not as a failure.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.internet import defer

from echokit.client.connect import ClientOptions, close_datagrams, open_datagram, open_stream
from echokit.errors import EchokitError, RuntimeFailure
from echokit.server.listeners import Listener, plan_servers, start_listeners
from echokit.transports.certs import CertStore
from echokit.transports.endpoints import ipv6_unavailable
from echokit.transports.grammar import parse_client

#: Messages timed one at a time for the round-trip column.
PINGS = 5
PING = b"Hello, Server!"
#: Bulk payload for streams, streamed while reading, then half-closed.
STREAM_PAYLOAD = 1 << 20
#: The largest IPv4 UDP payload, to show that nothing is truncated.
LARGEST_DATAGRAM = 65_507


@dataclass
class Row:
    """One line of the demo's table."""

    transport: str
    endpoint: str
    sent: int = 0
    echoed: int = 0
    verified: bool = False
    connect: str = "-"
    rtt: str = "-"
    note: str = ""
    skipped: bool = False


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def _check_stream(reactor: Any, listener: Listener, options: ClientOptions, row: Row) -> None:
    spec = parse_client(listener.connect_string)
    connection = await open_stream(reactor, spec, options)
    protocol = connection.protocol
    row.connect = _ms(connection.connect_seconds)
    if connection.handshake_seconds is not None:
        row.connect += f" + TLS {_ms(connection.handshake_seconds)}"
    rtts = []
    for _ in range(PINGS):
        started = reactor.seconds()
        protocol.send(PING)
        await protocol.wait_echoed()
        rtts.append(reactor.seconds() - started)
    row.rtt = _ms(statistics.median(rtts))
    protocol.send(os.urandom(STREAM_PAYLOAD))
    protocol.finish()
    await protocol.done
    row.sent, row.echoed = protocol.verifier.bytes_sent, protocol.verifier.bytes_received
    row.verified = row.sent == row.echoed


async def _check_datagrams(
    reactor: Any, listener: Listener, options: ClientOptions, row: Row
) -> None:
    """Datagrams to the row's endpoint (udp:, or quic:...:datagram=yes), up to the largest."""
    spec = parse_client(row.endpoint)
    started = reactor.seconds()
    client = await open_datagram(reactor, spec, options)
    if spec.kind == "quic":
        row.connect = _ms(reactor.seconds() - started) + " (QUIC)"
    rtts = []
    largest = min(LARGEST_DATAGRAM, client.max_payload)  # a QUIC DATAGRAM frame holds less
    for payload in [PING] * PINGS + [os.urandom(largest)]:
        result = await client.request(payload)
        row.sent += len(payload)
        if result.echo is not None and result.rtt is not None:
            row.echoed += len(result.echo)
            rtts.append(result.rtt)
    await close_datagrams(client)
    if spec.kind == "udp":
        row.connect = "(connectionless)"
    row.rtt = _ms(statistics.median(rtts)) if rtts else "-"
    row.verified = client.ledger.lost == 0 and row.sent == row.echoed
    if client.ledger.lost:
        row.note = f"{client.ledger.lost} datagram(s) lost"


def render(rows: Sequence[Row]) -> str:
    """The demo's table, columns aligned."""
    header = ("transport", "endpoint", "sent/echoed bytes", "verified", "connect", "round trip")
    lines = [header]
    for r in rows:
        verified = "skipped" if r.skipped else ("yes" if r.verified else "NO")
        amounts = "-" if r.skipped else f"{r.sent:,}/{r.echoed:,}"
        lines.append((r.transport, r.endpoint, amounts, verified, r.connect, r.rtt))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{r.transport}: {r.note}" for r in rows if r.note]
    return "\n".join(out + notes) + "\n"


async def demo(reactor: Any, certs: CertStore, out: TextIO) -> list[Row]:
    """
    Run the demo and print its table on C{out}.

    @raise RuntimeFailure: if any transport that ran did not verify.
    """
    no_ipv6 = ipv6_unavailable()
    with tempfile.TemporaryDirectory(prefix="echokit-demo-") as tmp:
        wanted = {
            "tcp": "tcp:0:interface=127.0.0.1",
            "tcp6": "tcp6:0:interface=\\:\\:1",
            "unix": f"unix:{os.path.join(tmp, 'echo.sock')}",
            "ssl": "ssl:0:interface=127.0.0.1",
            "udp": "udp:0",
            "quic": "quic:0",  # its stream row, and a quic-dgram row for its datagrams
        }
        rows = {name: Row(name, text) for name, text in wanted.items()}
        rows["quic-dgram"] = Row("quic-dgram", "quic:0")
        for name, text in {
            "ws": "ws:0:interface=127.0.0.1",
            "wss": "wss:0:interface=127.0.0.1",
        }.items():
            wanted[name], rows[name] = text, Row(name, text)
            if importlib.util.find_spec("websockets") is None:
                del wanted[name]
                rows[name].skipped = True
                rows[name].note = "skipped: needs websockets (pip install 'echokit[ws]')"
        if no_ipv6:
            del wanted["tcp6"]
            rows["tcp6"].skipped, rows["tcp6"].note = True, f"skipped: {no_ipv6}"
        if importlib.util.find_spec("aioquic") is None:
            del wanted["quic"]
            for name in ("quic", "quic-dgram"):
                rows[name].skipped = True
                rows[name].note = "skipped: needs aioquic (pip install 'echokit[quic]')"
        plans = plan_servers(reactor, list(wanted.values()), certs)
        if any(p.created_certs for p in plans):
            out.write(f"created a CA and certificates in {certs.directory}\n")
        listeners = await start_listeners(reactor, plans)
        options = ClientOptions(certs=certs)
        try:
            for name, listener in zip(wanted, listeners, strict=True):
                row = rows[name]
                row.endpoint = listener.connect_string
                try:
                    if listener.plan.is_datagram:
                        await _check_datagrams(reactor, listener, options, row)
                    else:
                        await _check_stream(reactor, listener, options, row)
                except EchokitError as e:
                    row.note = str(e)
                if name == "quic":
                    row = rows["quic-dgram"]
                    row.endpoint = listener.connect_string + ":datagram=yes"
                    try:
                        await _check_datagrams(reactor, listener, options, row)
                    except EchokitError as e:
                        row.note = str(e)
        finally:
            for listener in listeners:
                await defer.maybeDeferred(listener.port.stopListening)
    table = list(rows.values())
    out.write(render(table))
    out.flush()
    failed = [r.transport for r in table if not r.skipped and not r.verified]
    if failed:
        raise RuntimeFailure(f"demo: the echo did not verify over {', '.join(failed)}")
    return table
