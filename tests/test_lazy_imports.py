"""
A plaintext server stays light: the TLS, QUIC and measurement libraries load only when a
listener or command needs them, and what Twisted imports but no server uses
(C{http.cookiejar}) is bound without being run.

Each test runs a real C{echokit serve} (C{python -m echokit}, as L{tests.support} does)
with a C{sitecustomize} module on its C{PYTHONPATH} that writes the names in
C{sys.modules} to a file when the process exits, after it has echoed over each listener
and drained on SIGTERM: what a serve process imports over its whole life.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from echokit.runtime.reactors import STDLIB_TLS, TLS_LIBRARIES, load_lazily, without_tls
from tests.support import echokit_server, port_of, run_echokit

#: Written as sitecustomize.py: imported by every interpreter that has its directory on
#: PYTHONPATH, it dumps sys.modules at exit to $ECHOKIT_TEST_MODULES.
DUMPER = """\
import atexit, os, sys

def _dump(path=os.environ.get("ECHOKIT_TEST_MODULES")):
    if path:
        with open(path, "w") as f:
            # A name mapped to None is one marked as absent (echokit's without_tls); a
            # lazy module whose code never ran (echokit's load_lazily) is NAME:lazy.
            # type() reads the class without touching (and so loading) the module.
            f.write("\\n".join(sorted(
                n + ":lazy" if type(m).__name__ == "_LazyModule" else n
                for n, m in sys.modules.items() if m is not None
            )))

atexit.register(_dump)
"""

#: What http.cookiejar would run if anything used it (and the email package, which TLS
#: servers load for cryptography's x509): what no server may import.
COOKIEJAR_RUNS = ("http.cookiejar", "urllib.request", "http.client")

#: What a plaintext-only server must not import (prefixes of module names).
NOT_FOR_PLAINTEXT = (
    *TLS_LIBRARIES,
    *STDLIB_TLS,
    *COOKIEJAR_RUNS,
    "email",
    "echokit.transports.tls",
    "echokit.transports.tlslayer",
    "echokit.transports.quic",
    "echokit.measure",
    "twisted.internet.ssl",
    "twisted.protocols.tls",
    "twisted.internet._sslverify",
    "aioquic",
    "hdrh",
)


def heavy(modules: list[str], prefixes: tuple[str, ...] = NOT_FOR_PLAINTEXT) -> list[str]:
    """The names in C{modules} that are, or are inside, one of C{prefixes}."""
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def served_modules(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    descriptions: list[str],
    flags: tuple[str, ...] = (),
    modules: dict[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """
    Run C{echokit serve FLAGS DESCRIPTIONS}, echo once over each stream and datagram
    listener (TLS ones with verification against echokit's CA), stop it with SIGTERM;
    return the modules it had imported by its exit and its connect strings.

    @param modules: more modules on the server's path (name: source).
    """
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DUMPER)
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)
    dump = tmp_path / "modules.txt"
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("ECHOKIT_TEST_MODULES", str(dump))
    certs = tmp_path / "certs"
    with echokit_server(descriptions, certs, flags=flags) as server:
        for text in server.connect_strings:
            message = f"echo over {text}".encode()
            if text.startswith(("ws:", "wss:")):
                # The websockets library's client; wss: verified against echokit's CA.
                secure = text.startswith("wss:")
                url = f"{'wss' if secure else 'ws'}://localhost:{port_of(text)}/"
                context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
                with ws_connect(url, ssl=context if secure else None, open_timeout=10) as ws:
                    ws.send(message)
                    assert ws.recv(timeout=10) == message
                continue
            if text.startswith("quic:"):
                # echokit's own client (it verifies quic: against echokit's CA).
                done = run_echokit(["connect", text], certs, stdin=message, timeout=30)
                assert done.stdout == message, f"{text}: {done.stderr.decode()}"
                continue
            if text.startswith("udp:"):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(10)
                    sock.sendto(message, ("127.0.0.1", port_of(text)))
                    assert sock.recv(4096) == message
                continue
            if text.startswith("unix:"):
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(10)
                sock.connect(text.split("path=", 1)[1])
            else:
                sock = socket.create_connection(("127.0.0.1", port_of(text)), timeout=10)
            if text.startswith("ssl:"):
                context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
                sock = context.wrap_socket(sock, server_hostname="localhost")
            with sock:
                sock.sendall(message)
                received = b""
                while len(received) < len(message):
                    chunk = sock.recv(4096)
                    assert chunk, f"{text}: closed after {received!r}"
                    received += chunk
                assert received == message
        connect_strings = server.connect_strings
        log = server.stop()
    assert server.process.returncode == 0, log
    assert dump.is_file(), f"the server did not write its modules at exit: {log}"
    return dump.read_text().split(), connect_strings


class LazyImportTests:
    """Only listeners that need TLS (or QUIC, or measurement) load those libraries."""

    def test_plaintext_server_imports_no_tls(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        echokit serve tcp: unix: udp: echoes on each and exits without ever importing
        pyOpenSSL, cryptography, service_identity, the standard library's ssl,
        echokit's or Twisted's TLS layers, QUIC or the measurement modules (an 18 MiB
        difference in its RSS), and without running http.cookiejar, which Twisted binds
        (2 MiB more).
        """
        modules, _ = served_modules(
            tmp_path,
            monkeypatch,
            ["tcp:0:interface=127.0.0.1", f"unix:{tmp_path / 'echo.sock'}", "udp:0"],
        )
        assert "echokit.transports.stream" in modules  # the dump saw the serving process
        assert "twisted.python.compat" in modules
        assert heavy(modules) == []
        assert "http.cookiejar:lazy" in modules  # bound by Twisted, never run

    def test_tls_listener_loads_tls(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        With an ssl: listener beside a tcp: one, both echo (the TLS one verified against
        echokit's CA) and TLS is loaded: the lean path is only taken when nothing needs TLS.
        """
        modules, _ = served_modules(
            tmp_path, monkeypatch, ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"]
        )
        assert "echokit.transports.tlslayer" in heavy(modules)
        assert "OpenSSL" in heavy(modules)
        assert "ssl" in heavy(modules)
        assert heavy(modules, ("echokit.measure", "aioquic", "hdrh", *COOKIEJAR_RUNS)) == []
        assert "http.cookiejar:lazy" in modules

    def test_websocket_and_quic_listeners_never_run_the_cookiejar(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        ws: and wss: listeners echo to the websockets library's client, quic: to echokit
        connect (TLS verified against echokit's CA), while http.cookiejar stays bound and
        never run: nothing on their paths (websockets, aioquic, TLS) touches it.
        """
        modules, _ = served_modules(
            tmp_path,
            monkeypatch,
            ["ws:0:interface=127.0.0.1", "wss:0:interface=127.0.0.1", "quic:0"],
        )
        assert "echokit.transports.ws" in modules
        assert "echokit.transports.quic" in modules
        assert heavy(modules, COOKIEJAR_RUNS) == []
        assert "http.cookiejar:lazy" in modules

    def test_uvloop_reactor_keeps_the_stdlib_ssl(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        echokit serve --reactor uvloop tcp: leaves the standard library's ssl importable,
        as uvloop imports it unconditionally (here a stand-in uvloop that does, on
        asyncio's loop), and still leaves pyOpenSSL out.
        """
        stand_in = "import ssl\nfrom asyncio import new_event_loop\n"
        modules, _ = served_modules(
            tmp_path,
            monkeypatch,
            ["tcp:0:interface=127.0.0.1"],
            flags=("--reactor", "uvloop"),
            modules={"uvloop": stand_in},
        )
        assert "uvloop" in modules
        assert heavy(modules, STDLIB_TLS) == ["_ssl", "ssl"]
        assert heavy(modules, TLS_LIBRARIES) == []

    def test_without_tls_leaves_a_loaded_process_alone(self) -> None:
        """
        In a process that has imported Twisted already (this one), without_tls() changes
        nothing: TLS libraries stay importable.
        """
        import twisted.internet  # noqa: F401  (the state the guard looks for)

        before = {name: sys.modules.get(name) for name in TLS_LIBRARIES}
        assert without_tls() is False
        assert {name: sys.modules.get(name) for name in TLS_LIBRARIES} == before
        import OpenSSL.SSL  # noqa: F401  (still importable)


def run_python(code: str) -> str:
    """Run C{code} in a fresh interpreter (this one has Twisted loaded); return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class LoadLazilyTests:
    """load_lazily: bound without running, loaded for real on first use."""

    def test_bound_without_running_then_loaded_on_first_use(self) -> None:
        """
        After load_lazily, importing Twisted's reactor, defer and endpoints binds
        http.cookiejar without running it (urllib.request and http.client stay
        unloaded); the first attribute read runs it: Twisted's deprecated alias
        (compat.cookielib), `from http.cookiejar import ...` and twisted.web.client all
        get the real module and a working CookieJar.
        """
        out = run_python(
            """
            import sys, warnings
            from echokit.runtime.reactors import load_lazily
            assert load_lazily() == ["http.cookiejar"]
            import twisted.internet.defer, twisted.internet.endpoints, twisted.internet.tcp
            from twisted.python import compat
            print(type(sys.modules["http.cookiejar"]).__name__)
            print(sorted(m for m in ("urllib.request", "http.client") if m in sys.modules))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                jar = compat.cookielib.CookieJar()
            print(type(sys.modules["http.cookiejar"]).__name__, "urllib.request" in sys.modules)
            from http.cookiejar import CookieJar, DefaultCookiePolicy
            from twisted.web.client import CookieAgent
            print(len(jar), CookieJar is type(jar), DefaultCookiePolicy().netscape)
            import http.cookiejar
            print(http.cookiejar is sys.modules["http.cookiejar"] is compat.cookielib)
            """
        )
        assert out.split("\n")[:5] == ["_LazyModule", "[]", "module True", "0 True True", "True"]

    def test_an_imported_module_is_left_alone(self) -> None:
        """In a process that has imported http.cookiejar (this one), nothing changes."""
        import http.cookiejar

        assert load_lazily() == []
        assert sys.modules["http.cookiejar"] is http.cookiejar
        assert type(http.cookiejar).__name__ == "module"


class WithoutStdlibTLSTests:
    """without_tls marks the standard library's ssl absent unless told not to."""

    def test_twisted_and_asyncio_run_without_ssl(self) -> None:
        """
        With ssl marked absent, Twisted's defer (and asyncio under it) imports and runs
        a Deferred; ssl cannot be imported; tls_failure_text still describes a failure.
        """
        out = run_python(
            """
            import sys
            from echokit.runtime.reactors import without_tls
            assert without_tls() is True
            from twisted.internet import defer
            from twisted.python.failure import Failure
            from echokit.transports.tlsreasons import tls_failure_text
            import asyncio
            d = defer.succeed(7)
            print(d.result, asyncio.sslproto.ssl, tls_failure_text(Failure(OSError("boom"))))
            try:
                import ssl
            except ImportError:
                print("no ssl")
            """
        )
        assert out.split("\n")[:2] == ["7 None boom", "no ssl"]

    def test_stdlib_false_keeps_ssl(self) -> None:
        """without_tls(stdlib=False) (for uvloop) leaves ssl importable, pyOpenSSL not."""
        out = run_python(
            """
            from echokit.runtime.reactors import without_tls
            assert without_tls(stdlib=False) is True
            import ssl
            print(ssl.OPENSSL_VERSION.split()[0])
            try:
                import OpenSSL
            except ImportError:
                print("no pyOpenSSL")
            """
        )
        assert out.split("\n")[:2] == ["OpenSSL", "no pyOpenSSL"]
