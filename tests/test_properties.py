"""
Property tests: machines looking for bad input.

For any payload, any way of splitting it into writes, with or without a half-close,
the echo over a real socket equals the input; for any string, parsing an endpoint
either succeeds or raises echokit's own L{EndpointError}, never another exception, and
a client string that parses is usable (its endpoint builds, its host and path fit).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactor

from echokit.errors import EchokitError, EndpointError
from echokit.transports.certs import CertStore
from echokit.transports.endpoints import client_endpoint
from echokit.transports.grammar import (
    CLIENT_GRAMMARS,
    SERVER_GRAMMARS,
    EndpointSpec,
    parse_client,
    parse_server,
)
from tests.support import echokit_server

# --- endpoint strings -----------------------------------------------------------------

_KINDS = sorted({*SERVER_GRAMMARS, *CLIENT_GRAMMARS, "bogus", "systemd", ""})
_KEYWORDS = sorted(
    {k for g in [*SERVER_GRAMMARS.values(), *CLIENT_GRAMMARS.values()] for k in g.keywords}
)
_ATOMS = st.sampled_from(
    ["", "0", "16000", "99999", "-1", "::1", "\\:\\:1", "127.0.0.1", "localhost", "/tmp/x",
     "\\", "=", ":", "600", "abc", "1e3", " ", "\x00", "é", "a" * 64, "a..b", "a_b",
     "-x-", "xn--zz", "/tmp/" + "x" * 120, "x" * 63 + ".example"]
)  # fmt: skip


def _field() -> st.SearchStrategy[str]:
    bare = st.one_of(_ATOMS, st.text(max_size=8))
    keyword = st.tuples(st.one_of(st.sampled_from(_KEYWORDS), st.text(max_size=6)), bare)
    return st.one_of(bare, keyword.map(lambda kv: f"{kv[0]}={kv[1]}"))


#: Client strings with their required fields (to reach what happens once they parse).
client_like = st.tuples(
    st.sampled_from(sorted(CLIENT_GRAMMARS)),
    _ATOMS,
    st.sampled_from(["1", "16000", "65535"]),
    st.lists(_field(), max_size=2),
).map(
    lambda t: ":".join(
        [t[0], f"path={t[1]}" if t[0] == "unix" else f"host={t[1]}:port={t[2]}", *t[3]]
    )
)

#: Strings shaped like endpoint strings (to reach deep into the checks), and any text.
endpoint_like = st.one_of(
    st.tuples(st.sampled_from(_KINDS), st.lists(_field(), max_size=6)).map(
        lambda t: ":".join([t[0], *t[1]])
    ),
    client_like,
    # WebSocket's general forms (ws:INNER) and pasted URLs (ws://HOST:PORT/PATH).
    st.tuples(
        st.sampled_from(["ws:", "wss:", "ws://", "wss://"]),
        st.sampled_from(["", "tcp6:", "unix:", "ssl:", "udp:", "haproxy:tcp:", "[::1]:"]),
        st.lists(_field(), max_size=4),
    ).map(lambda t: t[0] + t[1] + ":".join(t[2])),
    st.text(max_size=60),
)


def check_parses_or_explains(text: str) -> None:
    """
    The property: a parse either succeeds or raises EndpointError with a one-line
    message; and a client string that parses can be used (L{check_client_usable}).
    """
    for parse in (parse_server, parse_client):
        try:
            spec = parse(text)
        except EndpointError as e:
            message = str(e)
            assert message and "\n" not in message, repr(message)
        else:
            assert spec.kind == spec.kind.lower()
            if parse is parse_client:
                check_client_usable(spec)


_NO_CERTS = CertStore(Path("/nonexistent/echokit-property-certs"))


def check_client_usable(spec: EndpointSpec) -> None:
    """
    A client string that parsed is usable as it stands, without touching the network:
    its endpoint builds (TLS options included), its host survives the encoding the
    resolver applies (C{getaddrinfo} with C{AI_NUMERICHOST}, which never asks DNS), and
    a unix path fits in a socket address (connecting to a path makes no traffic).
    """
    if not spec.known:
        return
    try:
        client_endpoint(MemoryReactor(), spec, _NO_CERTS)
    except EchokitError as e:
        assert "\n" not in str(e), repr(str(e))
    for name in ("host", "hostname"):
        host = spec.get(name)
        if host is not None:
            with contextlib.suppress(socket.gaierror):
                socket.getaddrinfo(str(host), None, flags=socket.AI_NUMERICHOST)
    if spec.kind == "unix":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            try:
                sock.connect(str(spec.get("path")))
            except OSError as e:
                assert e.errno is not None, f"{spec.text}: {e}"  # not 'path too long'


class EndpointParsingPropertyTests:
    @settings(max_examples=1500, deadline=None)
    @given(endpoint_like)
    def test_any_string_parses_or_raises_endpoint_error(self, text: str) -> None:
        """For any string, parsing succeeds or raises EndpointError (never anything else)."""
        check_parses_or_explains(text)


# --- echo over real sockets -----------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("props")
    sock = Path("/tmp") / f"echokit-props-{tmp.name}.sock"
    with echokit_server(["tcp:0:interface=127.0.0.1", f"unix:{sock}"], tmp / "certs") as s:
        tcp = s.connect_strings[0]
        yield {
            "tcp": ("127.0.0.1", int(tcp.rsplit("port=", 1)[1])),
            "unix": str(sock),
        }


def _connect(servers: dict[str, object], kind: str) -> socket.socket:
    family = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(servers[kind])  # type: ignore[arg-type]
    return sock


def _split(payload: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(payload) + 1) for c in cuts} | {0, len(payload)})
    return [payload[a:b] for a, b in itertools.pairwise(points)]


class EchoPropertyTests:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        payload=st.binary(max_size=128 * 1024),
        cuts=st.lists(st.integers(min_value=0), max_size=20),
        half_close=st.booleans(),
        kind=st.sampled_from(["tcp", "unix"]),
    )
    def test_echo_equals_input(
        self,
        servers: dict[str, object],
        payload: bytes,
        cuts: list[int],
        half_close: bool,
        kind: str,
    ) -> None:
        """Any payload, split into any writes, with or without half-close, echoes exactly."""
        with _connect(servers, kind) as sock:
            for chunk in _split(payload, cuts):
                sock.sendall(chunk)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            received = bytearray()
            while len(received) < len(payload) or half_close:
                data = sock.recv(1 << 16)
                if not data:
                    break  # with half-close, the server closes once everything is back
                received += data
        assert bytes(received) == payload
