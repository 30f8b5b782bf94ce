"""
From a checked endpoint string (L{echokit.transports.grammar}) to a Twisted endpoint, and back.

Servers: C{tcp}, C{tcp6}, C{unix} and C{ssl} become Twisted's own server endpoints;
C{udp} and C{udp6} become L{UDPServerEndpoint}s; any other kind is handed to Twisted's
C{serverFromString}, so its plugins (C{systemd:}, C{haproxy:}, ...) work unchanged.
C{ssl:PORT} without key keywords uses echokit's generated certificate.

Clients: C{tcp}, C{tcp6} and C{unix} become Twisted's client endpoints; C{ssl} and C{tls}
become a TLS endpoint that verifies the server (see L{echokit.transports.tls}); C{udp} and
C{udp6} become a L{UDPClientEndpoint}; any other kind goes to C{clientFromString}.

L{connect_string} goes the other way: the client string that reaches a listening port.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import endpoints, interfaces
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint, IStreamServerEndpoint

from echokit.errors import EndpointError
from echokit.transports.certs import CertStore
from echokit.transports.datagram import UDPClientEndpoint, UDPServerEndpoint
from echokit.transports.grammar import WEBSOCKET_KINDS, EndpointSpec, escape

if TYPE_CHECKING:  # imported when a quic: string is used (load_quic): aioquic is optional
    import ssl  # not otherwise: a plaintext-only server marks it absent (without_tls)

    from echokit.transports.quic import QuicServerEndpoint

# echokit's TLS modules (tls: pyOpenSSL and cryptography; tlslayer) are imported by the
# functions that build TLS endpoints, so that a plaintext-only process never loads them
# (see echokit.runtime.reactors.without_tls).

#: Transports whose connections are TLS.
TLS_KINDS = frozenset({"ssl", "tls"})
#: Transports that carry datagrams rather than a stream.
DATAGRAM_KINDS = frozenset({"udp", "udp6"})


def carries_datagrams(spec: EndpointSpec) -> bool:
    """
    Whether a client string sends datagrams rather than a stream: C{udp:}, C{udp6:}, and
    C{quic:...:datagram=yes} (QUIC DATAGRAM frames).
    """
    return spec.kind in DATAGRAM_KINDS or (
        spec.kind == "quic" and bool(spec.get("datagram", False))
    )


def load_quic() -> ModuleType:
    """
    echokit's QUIC transport (L{echokit.transports.quic}), imported on first use.

    @raise EndpointError: if aioquic, which it needs, is not installed.
    """
    try:
        from echokit.transports import quic
    except ImportError as e:
        raise EndpointError(
            f"quic: needs the aioquic package ({e}): pip install 'echokit[quic]'"
        ) from None
    return quic


#: Unix sockets are private to their owner unless C{mode=} says otherwise.
DEFAULT_UNIX_MODE = 0o600
#: Listen queue length unless C{backlog=} says otherwise (Twisted's default is 50, which
#: makes a burst of connects wait for SYN retransmits).
DEFAULT_BACKLOG = 1024


@dataclass(frozen=True)
class ServerPlan:
    """
    A server endpoint ready to listen, with what was done to prepare it.

    @ivar created_certs: the directory where certificates were generated for it, if any.
    @ivar cert_dir: the directory of echokit's certificates it serves with (generated
        now or earlier), if it uses them rather than files its string names.
    """

    spec: EndpointSpec
    endpoint: IStreamServerEndpoint | UDPServerEndpoint | QuicServerEndpoint
    created_certs: Path | None = None
    cert_dir: Path | None = None

    @property
    def is_datagram(self) -> bool:
        return self.spec.kind in DATAGRAM_KINDS

    @property
    def is_tls(self) -> bool:
        """Whether its connections speak TLS (C{ssl:}, C{wss:}, C{haproxy:ssl:}, C{ws:ssl:})."""
        return self.spec.kind == "ssl" or is_tls_endpoint(self.endpoint)

    @property
    def websocket_path(self) -> str | None:
        """The path a WebSocket listener serves (C{ws:}, C{wss:}), else C{None}."""
        return str(self.spec.get("path", "/")) if self.spec.kind in WEBSOCKET_KINDS else None


def is_tls_endpoint(endpoint: object) -> bool:
    """
    Whether C{endpoint} is echokit's TLS server layer (L{echokit.transports.tlslayer}).

    One can only exist once that module is imported, so this never imports it.
    """
    tlslayer = sys.modules.get("echokit.transports.tlslayer")
    return tlslayer is not None and isinstance(endpoint, tlslayer.TLSServerEndpoint)


def _path(spec: EndpointSpec, name: str) -> Path | None:
    value = spec.get(name)
    return Path(str(value)) if value is not None else None


def _int(spec: EndpointSpec, name: str, default: int) -> int:
    value = spec.get(name, default)
    assert isinstance(value, int)
    return value


def _str(spec: EndpointSpec, name: str, default: str = "") -> str:
    return str(spec.get(name, default))


def server_endpoint(
    reactor: Any, spec: EndpointSpec, certs: CertStore, client_ca: Path | None = None
) -> ServerPlan:
    """
    Build the server endpoint for C{spec}.

    @param client_ca: for TLS listeners, demand client certificates signed by this CA.

    @raise EndpointError: for a kind Twisted does not know either, or one it rejects.
    """
    kind = spec.kind
    backlog = _int(spec, "backlog", DEFAULT_BACKLOG)
    if kind == "tcp":
        return ServerPlan(
            spec,
            endpoints.TCP4ServerEndpoint(
                reactor, _int(spec, "port", 0), backlog, _str(spec, "interface")
            ),
        )
    if kind == "tcp6":
        return ServerPlan(
            spec,
            endpoints.TCP6ServerEndpoint(
                reactor, _int(spec, "port", 0), backlog, _str(spec, "interface", "::")
            ),
        )
    if kind == "unix":
        return ServerPlan(
            spec,
            endpoints.UNIXServerEndpoint(
                reactor,
                _str(spec, "address"),
                backlog,
                _int(spec, "mode", DEFAULT_UNIX_MODE),
                bool(spec.get("lockfile", True)),
            ),
        )
    if kind == "ssl":
        from echokit.transports.tlslayer import TLSServerEndpoint

        context, created = ssl_server_context(spec, certs, client_ca)
        return ServerPlan(
            spec,
            TLSServerEndpoint(
                endpoints.TCP4ServerEndpoint(
                    reactor, _int(spec, "port", 0), backlog, _str(spec, "interface")
                ),
                context,
            ),
            created,
            _store_directory(spec, certs),
        )
    if kind in DATAGRAM_KINDS:
        loopback = "127.0.0.1" if kind == "udp" else "::1"
        return ServerPlan(
            spec,
            UDPServerEndpoint(reactor, _int(spec, "port", 0), _str(spec, "interface", loopback)),
        )
    if kind == "quic":
        return _quic_server(reactor, spec, certs)
    if kind == "haproxy":
        return _proxied(reactor, spec, certs, client_ca)
    if kind in WEBSOCKET_KINDS:
        websocket_module(spec)
        inner = server_endpoint(reactor, websocket_inner(spec), certs, client_ca)
        return ServerPlan(spec, inner.endpoint, inner.created_certs)
    try:
        endpoint = endpoints.serverFromString(reactor, spec.text)
    except (IndexError, KeyError) as e:
        if kind == "systemd":
            raise EndpointError(_no_systemd_socket(spec, e)) from None
        raise _twisted_rejected(spec, e, "server") from None
    except Exception as e:
        raise _twisted_rejected(spec, e, "server") from None
    if isinstance(endpoint, endpoints.AdoptedStreamServerEndpoint):
        _check_adopted(spec, endpoint.fileno, endpoint.addressFamily)
    return ServerPlan(spec, endpoint)


def _quic_server(reactor: Any, spec: EndpointSpec, certs: CertStore) -> ServerPlan:
    """C{quic:PORT}: on loopback unless given an interface, with echokit's certificate."""
    quic = load_quic()
    created = None
    cert, key = _path(spec, "certKey"), _path(spec, "privateKey")
    if cert is None and key is None:
        if certs.ensure():
            created = certs.directory
        cert, key = certs.server_cert, certs.server_key
    elif cert is None:
        cert = key
    assert cert is not None
    try:
        quic.server_configuration(cert, key)
    except (ValueError, TypeError, OSError) as e:
        raise EndpointError(f"'{spec.text}': cannot load the certificate and key: {e}") from None
    interface = _str(spec, "interface", "127.0.0.1")
    endpoint = quic.QuicServerEndpoint(
        reactor, _int(spec, "port", 0), interface, cert, key, bool(spec.get("retry", False))
    )
    return ServerPlan(spec, endpoint, created, _store_directory(spec, certs))


def _store_directory(spec: EndpointSpec, certs: CertStore) -> Path | None:
    """echokit's certificate directory, if a TLS server string names no key of its own."""
    own = spec.get("certKey") is not None or spec.get("privateKey") is not None
    return None if own else certs.directory


def _no_systemd_socket(spec: EndpointSpec, error: Exception) -> str:
    """
    Why C{systemd:...} found no socket, and what to do.

    Twisted sees the sockets only when LISTEN_FDNAMES names each of them (and removes
    LISTEN_FDS and LISTEN_PID from the environment as it reads them). systemd always
    sets it (a socket unit's FileDescriptorName=, else the unit's name), but
    C{systemd-socket-activate} sets it only with C{--fdname}: then fd 3 is a listening
    socket nobody named.
    """
    if "LISTEN_FDNAMES" not in os.environ and _is_listening_socket(3):
        return (
            f"'{spec.text}': fd 3 is a listening socket, but LISTEN_FDNAMES is not set, "
            "and Twisted needs it to see the sockets: under systemd-socket-activate, add "
            "--fdname=NAME (systemd's socket units always set it)"
        )
    return (
        f"'{spec.text}': no such socket passed by systemd ({type(error).__name__}: {error}); "
        "run it from a .socket unit (LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set "
        "for this process)"
    )


def _is_listening_socket(fd: int) -> bool:
    """C{True} if descriptor C{fd} is open and a listening socket."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with probe:
        try:
            return bool(probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        except OSError:
            return False


def _check_adopted(spec: EndpointSpec, fd: int, family: socket.AddressFamily) -> None:
    """Refuse an inherited socket that is not a stream socket of the family given."""
    try:
        probe = socket.socket(fileno=os.dup(fd))  # finds the real family and type
    except OSError as e:
        raise EndpointError(f"'{spec.text}': socket {fd} is unusable: {e.strerror}") from None
    try:
        real_family, real_type = probe.family, probe.type
    finally:
        probe.close()
    if real_type != socket.SOCK_STREAM:
        raise EndpointError(
            f"'{spec.text}': socket {fd} is not a stream socket (a ListenDatagram= socket?); "
            "systemd: serves ListenStream= sockets only"
        )
    if real_family != family:
        raise EndpointError(
            f"'{spec.text}': socket {fd} is {real_family.name[3:]}, not {family.name[3:]}: "
            f"write domain={real_family.name[3:]} (ListenStream=PORT alone is an IPv6 socket)"
        )


def _proxied(
    reactor: Any, spec: EndpointSpec, certs: CertStore, client_ca: Path | None
) -> ServerPlan:
    """C{haproxy:ENDPOINT}: ENDPOINT (any stream server string), behind a PROXY header."""
    inner_spec = proxied_spec(spec)
    if inner_spec.kind in {*DATAGRAM_KINDS, "quic"}:
        raise EndpointError(
            f"'{spec.text}': the PROXY protocol is for streams, not {inner_spec.kind}"
        )
    inner = server_endpoint(reactor, inner_spec, certs, client_ca)
    assert not isinstance(inner.endpoint, UDPServerEndpoint)
    stream = cast(IStreamServerEndpoint, inner.endpoint)  # not quic: refused above
    return ServerPlan(spec, behind_proxy(reactor, stream), inner.created_certs, inner.cert_dir)


def websocket_inner(spec: EndpointSpec) -> EndpointSpec:
    """
    The stream server string a C{ws:} or C{wss:} listener runs over: its general form's
    (C{ws:tcp6:16000} runs over C{tcp6:16000}), else C{tcp:} for C{ws:PORT} and C{ssl:}
    for C{wss:PORT}, with the same port and keywords.
    """
    inner = spec.get("inner")
    if isinstance(inner, EndpointSpec):
        return inner
    values = {k: v for k, v in spec.values.items() if k != "path"}
    return EndpointSpec(spec.text, "ssl" if spec.kind == "wss" else "tcp", values)


def websocket_module(spec: EndpointSpec) -> Any:
    """
    L{echokit.transports.ws}, imported now (it needs websockets, the C{ws} extra).

    @raise EndpointError: with the command that installs it, if it is missing.
    """
    try:
        from echokit.transports import ws
    except ImportError as e:
        raise EndpointError(
            f"'{spec.text}': WebSocket needs the ws extra ({e.name or e} is not installed): "
            "pip install 'echokit[ws]'"
        ) from None
    return ws


def ipv6_unavailable() -> str | None:
    """Why this machine cannot use IPv6 loopback, or C{None} if it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"no IPv6 loopback (::1): {e.strerror}"
    return None


def proxied_spec(spec: EndpointSpec) -> EndpointSpec:
    """
    The endpoint a C{haproxy:ENDPOINT} string wraps.

    @raise EndpointError: if it names none, or one that does not parse.
    """
    from echokit.transports.grammar import parse_server

    inner_text = spec.text.split(":", 1)[1] if ":" in spec.text else ""
    if not inner_text:
        raise EndpointError(
            f"'{spec.text}' names no endpoint to wrap: write haproxy:tcp:PORT (or any "
            "stream server string after haproxy:)"
        )
    return parse_server(inner_text)


def behind_proxy(reactor: Any, endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """
    C{endpoint} with every connection starting with a PROXY header. Under TLS, the header
    comes before the handshake, as HAProxy sends it (C{ssl ... send-proxy}).
    """
    from echokit.transports.proxy import ProxyHeaderEndpoint

    if is_tls_endpoint(endpoint):
        from echokit.transports.tlslayer import TLSServerEndpoint

        assert isinstance(endpoint, TLSServerEndpoint)
        return TLSServerEndpoint(ProxyHeaderEndpoint(endpoint.wrapped, reactor), endpoint.context)
    return ProxyHeaderEndpoint(endpoint, reactor)


def ssl_server_context(
    spec: EndpointSpec, certs: CertStore, client_ca: Path | None = None, prompt: bool = True
) -> tuple[ssl.SSLContext, Path | None]:
    """
    The TLS settings of an C{ssl:} server string, and where certificates were generated
    for it (echokit's own, when the string names no key), if they were.

    @param prompt: whether an encrypted key's passphrase may be asked (see L{tls.server_context}).
    """
    created = None
    cert, key = _path(spec, "certKey"), _path(spec, "privateKey")
    if cert is None and key is None:
        if certs.ensure():
            created = certs.directory
        cert, key = certs.server_cert, certs.server_key
    elif cert is None:
        # Twisted's convention: privateKey alone names a file holding key and certificate.
        cert = key
    assert cert is not None
    from echokit.transports import tls

    context = tls.server_context(
        cert, key, _path(spec, "extraCertChain"), _path(spec, "dhParameters"), client_ca, prompt
    )
    return context, created


def client_endpoint(
    reactor: Any,
    spec: EndpointSpec,
    certs: CertStore,
    insecure: bool = False,
    client_cert: tuple[Path, Path | None] | None = None,
) -> IStreamClientEndpoint | UDPClientEndpoint:
    """
    Build the client endpoint for C{spec}.

    @param certs: whose CA to trust over TLS when the string names no trust roots.
    @param insecure: do not verify the TLS server at all.
    @param client_cert: a certificate (and key) to present over TLS, for mutual TLS.
    @raise EndpointError: for a kind Twisted does not know either, or one it rejects.
    """
    kind = spec.kind
    timeout = _int(spec, "timeout", 30)
    bind = (_str(spec, "bindAddress"), 0) if spec.get("bindAddress") else None
    host, port = _str(spec, "host"), _int(spec, "port", 0)
    if kind == "tcp":
        return endpoints.TCP4ClientEndpoint(reactor, host, port, timeout, bind)
    if kind == "tcp6":
        return endpoints.TCP6ClientEndpoint(reactor, host, port, timeout, bind)
    if kind == "unix":
        return endpoints.UNIXClientEndpoint(
            reactor, _str(spec, "path"), timeout, bool(spec.get("lockfile", False))
        )
    if kind in TLS_KINDS:
        from echokit.transports import tls

        trust = tls_trust(spec, certs)
        cert = _path(spec, "certificate") or _path(spec, "certKey")
        key = _path(spec, "privateKey")
        if cert is None and key is not None:
            cert = key
        given_cert = (cert, key) if cert is not None else client_cert
        options = tls.client_options(_str(spec, "hostname", host), trust, given_cert, insecure)
        wrapped = endpoints.HostnameEndpoint(reactor, host, port, timeout, bind)
        return endpoints.wrapClientTLS(options, wrapped)
    if kind in DATAGRAM_KINDS:
        return UDPClientEndpoint(reactor, host, port, ipv6_only=kind == "udp6")
    if kind == "quic":
        return _quic_client(reactor, spec, certs, insecure)
    if kind in WEBSOCKET_KINDS:
        return _websocket_client(reactor, spec, certs, insecure, client_cert)
    try:
        plugin_endpoint: IStreamClientEndpoint = endpoints.clientFromString(reactor, spec.text)
        return plugin_endpoint
    except Exception as e:
        raise _twisted_rejected(spec, e, "client") from None


def _quic_client(
    reactor: Any, spec: EndpointSpec, certs: CertStore, insecure: bool
) -> IStreamClientEndpoint | UDPClientEndpoint:
    """C{quic:host=H:port=P}: a stream endpoint, or with C{datagram=yes} a datagram one."""
    quic = load_quic()
    host, port = _str(spec, "host"), _int(spec, "port", 0)
    trust, datagrams = tls_trust(spec, certs), carries_datagrams(spec)
    server_name = _str(spec, "hostname", host)

    def configuration() -> Any:
        return quic.client_configuration(server_name, trust, insecure, datagrams)

    kind = quic.QuicDatagramEndpoint if datagrams else quic.QuicClientEndpoint
    # A QuicDatagramEndpoint connects a datagram protocol, as a UDPClientEndpoint does.
    endpoint: IStreamClientEndpoint | UDPClientEndpoint = kind(
        reactor, host, port, configuration, spec.text, _int(spec, "timeout", 10)
    )
    return endpoint


def _websocket_client(
    reactor: Any,
    spec: EndpointSpec,
    certs: CertStore,
    insecure: bool,
    client_cert: tuple[Path, Path | None] | None,
) -> IStreamClientEndpoint:
    """C{ws:}/C{wss:} clients: the stream endpoint (TCP, TLS or unix), then the upgrade."""
    ws = websocket_module(spec)
    inner = spec.get("inner")
    path = _str(spec, "path", "/")
    if isinstance(inner, EndpointSpec):
        stream = client_endpoint(reactor, inner, certs, insecure, client_cert)
        return ws.WebSocketClientEndpoint(stream, reactor, "localhost", path)  # type: ignore[no-any-return]
    tls_spec = EndpointSpec(spec.text, "tls" if spec.kind == "wss" else "tcp", spec.values)
    host, port = _str(spec, "host"), _int(spec, "port", 0)
    if spec.kind == "wss":
        stream = client_endpoint(reactor, tls_spec, certs, insecure, client_cert)
    else:
        bind = (_str(spec, "bindAddress"), 0) if spec.get("bindAddress") else None
        stream = endpoints.HostnameEndpoint(reactor, host, port, _int(spec, "timeout", 30), bind)
    header = ws.host_header(_str(spec, "hostname", host), port, spec.kind == "wss")
    return ws.WebSocketClientEndpoint(stream, reactor, header, path)  # type: ignore[no-any-return]


def tls_trust(spec: EndpointSpec, certs: CertStore) -> Path | None:
    """
    The CA file or directory a TLS client string verifies against.

    C{trustRoots=} or C{caCertsDir=} if given, else echokit's CA if it exists, else
    C{None}: the platform's trust store.
    """
    trust = _path(spec, "trustRoots") or _path(spec, "caCertsDir")
    if trust is None and certs.ca_cert.is_file():
        trust = certs.ca_cert
    return trust


_OURS = {
    "server": "tcp, tcp6, unix, ssl, udp, udp6, quic, ws, wss",
    "client": "tcp, tcp6, unix, ssl, tls, udp, udp6, quic, ws, wss",
}


def _unknown_kind(spec: EndpointSpec, role: str) -> EndpointError:
    return EndpointError(
        f"unknown transport '{spec.kind}' in '{spec.text}': use one of {_OURS[role]} "
        "(or an installed Twisted endpoint plugin's prefix)"
    )


def twisted_prefixes(role: str) -> set[str]:
    """The endpoint prefixes Twisted parses for C{role} ("server" or "client"), plugins included."""
    from twisted.plugin import getPlugins

    interface = (
        interfaces.IStreamServerEndpointStringParser
        if role == "server"
        else interfaces.IStreamClientEndpointStringParserWithReactor
    )
    builtin = {"tcp", "unix", "ssl"}
    return builtin | {
        str(getattr(plugin, "prefix", "")).lower() for plugin in getPlugins(interface)
    }


def check_kind(spec: EndpointSpec, role: str) -> None:
    """
    Refuse now a kind that neither echokit nor Twisted (with its plugins) knows.

    @param role: C{"server"} or C{"client"}.
    @raise EndpointError: naming the kinds that exist.
    """
    if not spec.known and spec.kind not in twisted_prefixes(role):
        raise _unknown_kind(spec, role)


def _twisted_rejected(spec: EndpointSpec, error: Exception, role: str) -> EndpointError:
    if "Unknown endpoint type" in str(error):
        return _unknown_kind(spec, role)
    detail = str(error) or type(error).__name__
    return EndpointError(f"Twisted rejected '{spec.text}': {detail}")


def websocket_connect_string(tls: bool, address: IAddress, path: str = "/") -> str:
    """
    The C{echokit connect} string that reaches a WebSocket server listening at C{address}.

        >>> websocket_connect_string(True, IPv4Address("TCP", "0.0.0.0", 16443), "/echo")
        'wss:host=localhost:port=16443:path=/echo'
    """
    stream = connect_string("ssl" if tls else "tcp", address)
    suffix = "" if path == "/" else f":path={escape(path)}"
    if isinstance(address, UNIXAddress):
        return f"ws:unix:{stream.split('path=', 1)[1]}{suffix}"
    return ("wss" if tls else "ws") + stream[stream.index(":") :] + suffix


def _loopback_for(host: str, family_loopback: str) -> str:
    return family_loopback if host in ("", "0.0.0.0", "::") else host


def connect_string(kind: str, address: IAddress) -> str:
    """
    The C{echokit connect} string that reaches a server listening at C{address}.

    A wildcard address is reached on loopback; an ssl server is named C{localhost},
    the name its generated certificate carries.

        >>> connect_string("tcp6", IPv6Address("TCP", "::", 16000))
        'tcp6:host=\\\\:\\\\:1:port=16000'
    """
    if isinstance(address, UNIXAddress):
        name = address.name.decode() if isinstance(address.name, bytes) else str(address.name)
        return f"unix:path={escape(name)}"
    if isinstance(address, IPv4Address | IPv6Address):
        v6 = isinstance(address, IPv6Address)
        host = _loopback_for(address.host, "::1" if v6 else "127.0.0.1")
        port = address.port
        if kind in DATAGRAM_KINDS:
            return f"udp:host={escape(host)}:port={port}"
        if kind == "quic":
            # The certificate names localhost and both loopback addresses: the address
            # itself is verified, so a localhost that resolves elsewhere does not matter.
            return f"quic:host={escape(host)}:port={port}"
        if kind == "ssl":
            if host in ("127.0.0.1", "::1"):
                host = "localhost"
            return f"ssl:host={escape(host)}:port={port}"
        return f"{'tcp6' if v6 else 'tcp'}:host={escape(host)}:port={port}"
    return str(address)
