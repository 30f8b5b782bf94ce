"""
Endpoint strings: Twisted's grammar, checked before anything is built.

echokit takes the same strings as Twisted's C{serverFromString} and C{clientFromString}:
fields separated by C{:}, keywords written C{name=value}, and a backslash escaping the
next character (so an IPv6 address is written C{host=\\:\\:1}). Twisted's parsers turn
a bad string into a C{ValueError} or C{TypeError} about Python internals, or accept it
and fail later; this module checks each known kind first and explains what to write.

This module does no I/O except looking at the file system for files and directories the
string names. L{parse_server} and L{parse_client} return an L{EndpointSpec} for the kinds
echokit knows, and raise L{EndpointError} with a one-line message otherwise; strings of
other kinds (Twisted plugins such as C{systemd:} or C{haproxy:}) are passed through.

    >>> spec = parse_server("tcp6:16000:interface=\\\\:\\\\:1")
    >>> spec.kind, spec.values["port"], spec.values["interface"]
    ('tcp6', 16000, '::1')
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from echokit.errors import EndpointError

#: Keywords whose values are addresses: where an unescaped IPv6 literal hides.
_ADDRESS_KEYWORDS = ("host", "interface", "bindAddress", "hostname")
#: The longest path a unix socket address can hold on Linux (sun_path is 108 bytes).
_MAX_UNIX_PATH = 107


@dataclass(frozen=True)
class Field:
    """One C{:}-separated field of an endpoint string: C{key=value} or a bare C{value}."""

    key: str | None
    value: str


def split_fields(text: str) -> list[Field]:
    """
    Split an endpoint string into fields, exactly as Twisted's tokenizer does.

    A backslash makes the next character literal; the first C{=} in a field separates
    its keyword from its value, and later ones belong to the value.

        >>> split_fields("tcp:host=\\\\:\\\\:1:port=80")
        [Field(key=None, value='tcp'), Field(key='host', value='::1'), Field(key='port', value='80')]
    """
    fields: list[Field] = []
    key: str | None = None
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise EndpointError(
                    f"endpoint '{text}' ends with a lone backslash: a backslash escapes the "
                    "next character, so write \\\\ for a literal backslash"
                )
            current.append(escaped)
        elif char == ":":
            fields.append(Field(key, "".join(current)))
            key, current = None, []
        elif char == "=" and key is None:
            key, current = "".join(current), []
        else:
            current.append(char)
    fields.append(Field(key, "".join(current)))
    return fields


def escape(value: str) -> str:
    """
    Escape C{value} for use as one field of an endpoint string.

        >>> escape("::1")
        '\\\\:\\\\:1'
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _looks_like_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return "::" in text
    return True


#: Server kinds that listen on IPv4 only, and what to use for IPv6 instead.
_IPV4_ONLY_SERVERS = {
    "tcp": "listen with tcp6: (tcp is IPv4 only)",
    "udp": "listen with udp6: (udp is IPv4 only)",
    "ssl": "note that ssl: listens on IPv4 only",
}


def _check_unescaped_ipv6(text: str, fields: list[Field], also: str = "") -> None:
    """Reject C{host=::1} and the like, which Twisted silently splits into fields."""
    for index, f in enumerate(fields):
        if f.key not in _ADDRESS_KEYWORDS:
            continue
        parts = [f.value]
        for follower in fields[index + 1 :]:
            if follower.key is not None:
                break
            parts.append(follower.value)
        # Only a run of bare fields after an address can be the rest of an address.
        for end in range(len(parts), 1, -1):
            candidate = ":".join(parts[:end])
            if _looks_like_ipv6(candidate):
                raise EndpointError(
                    f"unescaped IPv6 address in '{text}': ':' separates fields, so "
                    f"{f.key}={candidate} is read as several fields; write "
                    f"{f.key}={escape(candidate)} (each colon escaped with a backslash)"
                    + (f", and {also}" if also else "")
                )


# Value checkers: each takes (value, context) and returns the converted value or raises.
Checker = Callable[[str, "_Context"], object]


@dataclass(frozen=True)
class _Context:
    text: str
    kind: str
    key: str
    example: str

    def fail(self, problem: str, fix: str) -> EndpointError:
        return EndpointError(f"{problem} in '{self.text}': {fix}")


def _port(lowest: int) -> Checker:
    def check(value: str, ctx: _Context) -> int:
        try:
            port = int(value, 10)
        except ValueError:
            raise ctx.fail(
                f"port '{value}' is not a number",
                f"give a port from {lowest} to 65535, e.g. {ctx.example}",
            ) from None
        if not lowest <= port <= 65535:
            raise ctx.fail(
                f"port {port} is out of range",
                f"give a port from {lowest} to 65535, e.g. {ctx.example}",
            )
        return port

    return check


def _whole_number(lowest: int) -> Checker:
    def check(value: str, ctx: _Context) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            number = lowest - 1
        if number < lowest:
            raise ctx.fail(
                f"{ctx.key}='{value}' is not a whole number of at least {lowest}",
                f"write e.g. {ctx.key}={max(lowest, 30)}",
            )
        return number

    return check


def _ip(version: int, allow_empty: bool = False) -> Checker:
    def check(value: str, ctx: _Context) -> str:
        if allow_empty and value == "":
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None or address.version != version:
            other = "tcp6" if version == 4 else "tcp"
            raise ctx.fail(
                f"{ctx.key}='{value}' is not an IPv{version} address",
                f"{ctx.kind} uses IPv{version}: give e.g. "
                + ("interface=127.0.0.1" if version == 4 else "interface=\\:\\:1")
                + (
                    f" (or use {other}: for the other family)" if ctx.kind.startswith("tcp") else ""
                ),
            )
        return value

    return check


def _any_ip(value: str, ctx: _Context) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ctx.fail(
            f"{ctx.key}='{value}' is not an IP address",
            "give e.g. interface=127.0.0.1 or interface=\\:\\:1",
        ) from None
    return value


def _yes_no(value: str, ctx: _Context) -> bool:
    if value.lower() not in ("yes", "no"):
        raise ctx.fail(f"{ctx.key}='{value}' is not yes or no", f"write {ctx.key}=yes")
    return value.lower() == "yes"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def dns_name_problem(name: str) -> str | None:
    """
    Why C{name} cannot be looked up as a host name, or C{None} if it can: the checks
    the resolver's IDNA encoding makes (labels of 1 to 63 characters, 253 in all).

        >>> dns_name_problem("a" * 64 + ".example")
        'its label aaaaaaaaaaaaaaaaaaaa... is 64 characters long: the limit is 63'
        >>> dns_name_problem("localhost") is None
        True
    """
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    for label in labels:
        if not label:
            return "it has an empty label (two dots in a row, or a leading dot)"
        if len(label) > 63:
            shown = label[:20] + "..." if len(label) > 20 else label
            return f"its label {shown} is {len(label)} characters long: the limit is 63"
    if len(name.rstrip(".")) > 253:
        return f"it is {len(name)} characters long: the limit is 253"
    try:
        name.encode("idna")
    except UnicodeError as e:
        return f"it cannot be encoded for DNS ({e.__cause__ or e})"
    return None


def tls_name_problem(name: str) -> str | None:
    """
    Why C{name} cannot be checked against a certificate, or C{None} if it can: TLS
    clients encode the name with IDNA 2008 (the C{idna} package, as Twisted does).

        >>> tls_name_problem("a_b.example")
        "Codepoint U+005F at position 2 of 'a_b' not allowed"
    """
    if _is_ip(name):
        return None
    try:
        import idna
    except ImportError:  # pragma: no cover - Twisted falls back to the codec as well
        return dns_name_problem(name)
    try:
        idna.encode(name)
    except (idna.IDNAError, UnicodeError) as e:
        return str(e)
    return None


def _host(value: str, ctx: _Context) -> str:
    if not value:
        raise ctx.fail("empty host", f"name the server, e.g. {ctx.example}")
    if not _is_ip(value) and (problem := dns_name_problem(value)) is not None:
        raise ctx.fail(
            f"{ctx.key} '{value}' is not a valid name",
            f"{problem}; give a host name or an IP address",
        )
    return value


def _octal_mode(value: str, ctx: _Context) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ctx.fail(f"mode='{value}' is not an octal file mode", "write e.g. mode=600")
    return mode


def _zero_or_one(value: str, ctx: _Context) -> bool:
    if value not in ("0", "1"):
        raise ctx.fail(f"{ctx.key}='{value}' is not 0 or 1", f"write {ctx.key}=0 or {ctx.key}=1")
    return value == "1"


def _expand(value: str, ctx: _Context) -> Path:
    """C{value} as a path, with C{~} and C{~user} expanded."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        raise ctx.fail(
            f"cannot expand '{value.split('/')[0]}' in {ctx.key} (no such user)",
            "give the full path",
        ) from None


def _existing_file(value: str, ctx: _Context) -> str:
    path = _expand(value, ctx)
    if not path.is_file():
        raise ctx.fail(
            f"{ctx.key} file '{value}' does not exist",
            "give the path of an existing PEM file (run `echokit certs` to make one)",
        )
    return str(path)


def _existing_path(value: str, ctx: _Context) -> str:
    path = _expand(value, ctx)
    if not path.exists():
        raise ctx.fail(
            f"{ctx.key} '{value}' does not exist",
            "give a PEM file or a directory of PEM files holding the CA certificates to trust",
        )
    return str(path)


def _unix_path(value: str, ctx: _Context, give: str, too_long: str) -> Path:
    """
    A unix socket path, expanded, that fits in a socket address; C{give} (what to write
    instead of an empty path) and C{too_long} (after the limit) finish the error's hint.
    """
    if not value:
        raise ctx.fail("empty unix socket path", f"{give}, e.g. {ctx.example}")
    path = _expand(value, ctx)
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ctx.fail(
            f"unix socket path is {len(os.fsencode(path))} bytes long",
            f"the limit is {_MAX_UNIX_PATH}: {too_long}",
        )
    return path


def _unix_listen_path(value: str, ctx: _Context) -> str:
    path = _unix_path(value, ctx, "give a path", "choose a shorter path")
    parent = path.parent
    if not parent.is_dir():
        raise ctx.fail(
            f"directory '{parent}' of the unix socket does not exist",
            "create it first or choose a path in an existing directory",
        )
    return str(path)


def _unix_connect_path(value: str, ctx: _Context) -> str:
    path = _unix_path(
        value, ctx, "give the server's socket", "no server can listen there; give a shorter path"
    )
    return str(path)


@dataclass(frozen=True)
class Grammar:
    """
    What one kind of endpoint string accepts.

    @ivar positional: the names bare fields take, in order.
    @ivar keywords: every accepted keyword and the checker for its value.
    @ivar required: names that must be given, as a bare field or a keyword.
    @ivar example: a string of this kind that works, shown in messages.
    """

    kind: str
    positional: tuple[str, ...]
    keywords: Mapping[str, Checker]
    required: tuple[str, ...]
    example: str


def _ws_path(value: str, ctx: _Context) -> str:
    if not value.startswith("/"):
        raise ctx.fail(f"path '{value}' does not start with '/'", f"write e.g. path=/{value}")
    return value


_tcp_server = {"port": _port(0), "backlog": _whole_number(1)}
_tls_server_files = {
    "privateKey": _existing_file,
    "certKey": _existing_file,
    "extraCertChain": _existing_file,
    "dhParameters": _existing_file,
}

SERVER_GRAMMARS: Mapping[str, Grammar] = {
    g.kind: g
    for g in [
        Grammar(
            "tcp",
            ("port",),
            {**_tcp_server, "interface": _ip(4, allow_empty=True)},
            ("port",),
            "tcp:16000",
        ),
        Grammar(
            "tcp6",
            ("port",),
            {**_tcp_server, "interface": _ip(6)},
            ("port",),
            "tcp6:16000",
        ),
        Grammar(
            "unix",
            ("address",),
            {
                "address": _unix_listen_path,
                "mode": _octal_mode,
                "backlog": _whole_number(1),
                "lockfile": _zero_or_one,
            },
            ("address",),
            "unix:/tmp/echo.sock",
        ),
        Grammar(
            "ssl",
            ("port",),
            {**_tcp_server, "interface": _ip(4, allow_empty=True), **_tls_server_files},
            ("port",),
            "ssl:16443",
        ),
        Grammar(
            "ws",
            ("port",),
            {**_tcp_server, "interface": _ip(4, allow_empty=True), "path": _ws_path},
            ("port",),
            "ws:16080",
        ),
        Grammar(
            "wss",
            ("port",),
            {
                **_tcp_server,
                "interface": _ip(4, allow_empty=True),
                **_tls_server_files,
                "path": _ws_path,
            },
            ("port",),
            "wss:16443",
        ),
        Grammar("udp", ("port",), {"port": _port(0), "interface": _ip(4)}, ("port",), "udp:16000"),
        Grammar(
            "udp6", ("port",), {"port": _port(0), "interface": _ip(6)}, ("port",), "udp6:16000"
        ),
        Grammar(
            "quic",
            ("port",),
            {
                "port": _port(0),
                "interface": _any_ip,
                "certKey": _existing_file,
                "privateKey": _existing_file,
                "retry": _yes_no,
            },
            ("port",),
            "quic:16443",
        ),
    ]
}

_tcp_client: dict[str, Checker] = {
    "host": _host,
    "port": _port(1),
    "timeout": _whole_number(1),
    "bindAddress": _host,
}

CLIENT_GRAMMARS: Mapping[str, Grammar] = {
    g.kind: g
    for g in [
        Grammar(
            "tcp", ("host", "port"), _tcp_client, ("host", "port"), "tcp:host=127.0.0.1:port=16000"
        ),
        Grammar(
            "tcp6", ("host", "port"), _tcp_client, ("host", "port"), "tcp6:host=\\:\\:1:port=16000"
        ),
        Grammar(
            "unix",
            ("path",),
            {"path": _unix_connect_path, "timeout": _whole_number(1), "lockfile": _zero_or_one},
            ("path",),
            "unix:path=/tmp/echo.sock",
        ),
        Grammar(
            "ssl",
            ("host", "port"),
            {
                **_tcp_client,
                "hostname": _host,
                "certKey": _existing_file,
                "privateKey": _existing_file,
                "caCertsDir": _existing_path,
            },
            ("host", "port"),
            "ssl:host=localhost:port=16443",
        ),
        Grammar(
            "tls",
            ("host", "port"),
            {
                **_tcp_client,
                "certificate": _existing_file,
                "privateKey": _existing_file,
                "trustRoots": _existing_path,
            },
            ("host", "port"),
            "tls:host=localhost:port=16443",
        ),
        Grammar(
            "udp",
            ("host", "port"),
            {"host": _host, "port": _port(1)},
            ("host", "port"),
            "udp:host=127.0.0.1:port=16000",
        ),
        Grammar(
            "quic",
            ("host", "port"),
            {
                "host": _host,
                "port": _port(1),
                "timeout": _whole_number(1),
                "hostname": _host,
                "trustRoots": _existing_path,
                "datagram": _yes_no,
            },
            ("host", "port"),
            "quic:host=localhost:port=16443",
        ),
        Grammar(
            "udp6",
            ("host", "port"),
            {"host": _host, "port": _port(1)},
            ("host", "port"),
            "udp6:host=\\:\\:1:port=16000",
        ),
        Grammar(
            "ws",
            ("host", "port"),
            {**_tcp_client, "path": _ws_path},
            ("host", "port"),
            "ws:host=127.0.0.1:port=16080",
        ),
        Grammar(
            "wss",
            ("host", "port"),
            {
                **_tcp_client,
                "path": _ws_path,
                "hostname": _host,
                "certificate": _existing_file,
                "privateKey": _existing_file,
                "trustRoots": _existing_path,
            },
            ("host", "port"),
            "wss:host=localhost:port=16443",
        ),
    ]
}

#: Client kinds whose connections are TLS: their server name must suit a certificate.
_TLS_CLIENTS = ("ssl", "tls", "quic", "wss")


@dataclass(frozen=True)
class EndpointSpec:
    """
    A checked endpoint string.

    @ivar text: the string as the user wrote it.
    @ivar kind: its prefix, lower-cased (C{tcp}, C{ssl}, ...).
    @ivar values: each given field by name, converted (ports are C{int}s, ...); empty for
        kinds echokit passes through to Twisted.
    @ivar known: C{False} for a kind echokit does not check, left to Twisted's plugins.
    """

    text: str
    kind: str
    values: Mapping[str, object] = field(default_factory=dict)
    known: bool = True

    def get(self, name: str, default: object = None) -> object:
        """The value of field C{name}, or C{default} if it was not given."""
        return self.values.get(name, default)


#: The kinds that never speak TLS: a server of these alone needs no TLS library.
PLAINTEXT_KINDS = frozenset({"tcp", "tcp6", "unix", "udp", "udp6"})


def plaintext_only(specs: Sequence[EndpointSpec]) -> bool:
    """
    Whether none of C{specs} can speak TLS (plugin kinds might: C{haproxy:ssl:...}).

        >>> plaintext_only([parse_server("tcp:0"), parse_server("udp:0")])
        True
        >>> plaintext_only([parse_server("tcp:0"), parse_server("ssl:0")])
        False
    """
    return all(spec.kind in PLAINTEXT_KINDS for spec in specs)


#: WebSocket kinds: C{ws:} wraps a stream string (C{ws:tcp6:16000}, C{ws:unix:/tmp/ws.sock})
#: or takes a port (C{ws:16080} is C{ws:tcp:16080}; C{wss:16443} is C{ws:ssl:16443}).
#: Clients: C{ws:host=H:port=P}, C{wss:host=H:port=P}, URLs, and C{ws:unix:/tmp/ws.sock}
#: (the socket's path bare: C{path=} is the WebSocket path in every form).
WEBSOCKET_KINDS = frozenset({"ws", "wss"})


def _parse_websocket(text: str, fields: list[Field], role: str) -> EndpointSpec | None:
    """
    The general form of a WebSocket string, C{ws:INNER[:path=/P]}: the stream string it
    wraps is in C{values["inner"]}. C{None} for the short forms (C{ws:PORT},
    C{ws:host=H:port=P}), which the grammar tables check.
    """
    kind = fields[0].value.lower()
    if len(fields) < 2 or fields[1].key is not None or fields[1].value.isdigit():
        return None
    if kind == "wss" and role == "server":
        raise EndpointError(
            f"'{text}': wss: takes a port (wss:16443[:interface=ADDR][:path=/P]); for TLS "
            "over another listener write ws:ssl:PORT"
        )
    if role == "client" and fields[1].value.lower() != "unix":
        raise EndpointError(
            f"'{text}': {kind}: clients take host= and port= ({kind}:host=127.0.0.1:port=16080),"
            f" a URL ({kind}://127.0.0.1:16080/), or ws:unix:/tmp/ws.sock"
        )
    if role == "client" and not any(f.key is None for f in fields[2:]):
        raise EndpointError(
            f"'{text}': write the socket's path bare and the WebSocket's path with path=: "
            "ws:unix:/tmp/ws.sock or ws:unix:/tmp/ws.sock:path=/echo"
        )
    paths = [f for f in fields[1:] if f.key == "path"]
    if len(paths) > 1:
        raise EndpointError(f"path is given twice in '{text}': give it once")
    rest = [f for f in fields[1:] if f.key != "path"]
    inner_text = ":".join(
        escape(f.value) if f.key is None else f"{escape(f.key)}={escape(f.value)}" for f in rest
    )
    inner = parse_server(inner_text) if role == "server" else parse_client(inner_text)
    if inner.kind in ("udp", "udp6") or inner.kind in WEBSOCKET_KINDS:
        raise EndpointError(f"'{text}': WebSocket runs over a stream, not over {inner.kind}")
    path = paths[0].value if paths else "/"
    _ws_path(path, _Context(text, kind, "path", "ws:tcp6:16000:path=/echo"))
    return EndpointSpec(text, kind, {"inner": inner, "path": path})


def _parse_url(text: str) -> EndpointSpec:
    """
    A pasted WebSocket URL, C{ws://HOST[:PORT][/PATH]} or C{wss://...}.

        >>> spec = _parse_url("ws://[::1]:8080/echo")
        >>> spec.kind, spec.values["host"], spec.values["port"], spec.values["path"]
        ('ws', '::1', 8080, '/echo')
    """
    from urllib.parse import urlsplit

    scheme = text.split(":", 1)[0].lower()
    try:
        url = urlsplit(text)
        port = url.port or (443 if scheme == "wss" else 80)
    except ValueError as e:
        raise EndpointError(
            f"'{text}' is not a usable URL ({e}): write e.g. ws://127.0.0.1:16080/"
        ) from None
    if not url.hostname:
        raise EndpointError(f"'{text}' names no host: write e.g. {scheme}://127.0.0.1:16080/")
    _host(url.hostname, _Context(text, scheme, "host", f"{scheme}://127.0.0.1:16080/"))
    if scheme == "wss":
        _check_tls_name(text, {"host": url.hostname})
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return EndpointSpec(text, scheme, {"host": url.hostname, "port": port, "path": path})


def _parse(text: str, grammars: Mapping[str, Grammar], role: str) -> EndpointSpec:
    if role == "client" and text.lower().startswith(("ws://", "wss://")):
        return _parse_url(text)
    if not text.strip():
        raise EndpointError(
            f"empty {role} endpoint: give one such as {next(iter(grammars.values())).example}"
        )
    fields = split_fields(text)
    head = fields[0]
    if head.key is not None or not head.value:
        raise EndpointError(
            f"'{text}' does not start with a transport: write e.g. "
            + ", ".join(g.example for g in grammars.values())
        )
    kind = head.value.lower()
    _check_unescaped_ipv6(
        text, fields[1:], _IPV4_ONLY_SERVERS.get(kind, "") if role == "server" else ""
    )
    if kind in WEBSOCKET_KINDS and (general := _parse_websocket(text, fields, role)):
        return general
    grammar = grammars.get(kind)
    if grammar is None:
        return EndpointSpec(text, kind, {}, known=False)

    raw: dict[str, str] = {}
    bare = [f.value for f in fields[1:] if f.key is None]
    if len(bare) > len(grammar.positional):
        form = ":".join([kind, *grammar.positional])
        raise EndpointError(
            f"too many fields in '{text}': {kind} takes {form} and keywords "
            f"({', '.join(grammar.keywords)}); escape a literal ':' as \\:"
        )
    raw.update(zip(grammar.positional, bare, strict=False))
    for f in fields[1:]:
        if f.key is None:
            continue
        if f.key not in grammar.keywords:
            raise EndpointError(
                f"unknown keyword '{f.key}' in '{text}': {kind} accepts "
                f"{', '.join(grammar.keywords)}"
            )
        if f.key in raw:
            raise EndpointError(f"{f.key} is given twice in '{text}': give it once")
        raw[f.key] = f.value
    missing = [name for name in grammar.required if name not in raw]
    if missing == ["port"] and raw.get("host", "").isdigit():
        raise EndpointError(
            f"'{text}' reads {raw['host']} as the host and has no port (a client string "
            f"names the server's host and port; {kind}:PORT is how a server listens): "
            f"write e.g. {grammar.example}"
        )
    if missing:
        raise EndpointError(f"'{text}' has no {' or '.join(missing)}: write e.g. {grammar.example}")
    values = {
        key: grammar.keywords[key](value, _Context(text, kind, key, grammar.example))
        for key, value in raw.items()
    }
    if role == "client" and kind in _TLS_CLIENTS:
        _check_tls_name(text, raw)
    return EndpointSpec(text, kind, values)


def _check_tls_name(text: str, raw: Mapping[str, str]) -> None:
    """The name a TLS client checks the certificate against must be one IDNA encodes."""
    key = "hostname" if "hostname" in raw else "host"
    problem = tls_name_problem(raw[key])
    if problem is not None:
        fix = (
            "give the name the server's certificate carries"
            if key == "hostname"
            else "connect to it by another name, or add hostname=NAME with the name the "
            "server's certificate carries"
        )
        raise EndpointError(
            f"{key} '{raw[key]}' is not a valid name for TLS ({problem}) in '{text}': {fix}"
        )


def parse_server(text: str) -> EndpointSpec:
    """
    Check a server endpoint string (C{echokit serve}'s arguments).

    @raise EndpointError: with a one-line message naming the bad part and the fix.
    """
    return _parse(text, SERVER_GRAMMARS, "server")


def parse_client(text: str) -> EndpointSpec:
    """
    Check a client endpoint string (C{echokit connect}'s argument).

    @raise EndpointError: with a one-line message naming the bad part and the fix.
    """
    return _parse(text, CLIENT_GRAMMARS, "client")
