"""
A plaintext server stays light: the TLS, QUIC and measurement libraries load only when a
listener or command needs them.

Each test runs a real C{echokit serve} (C{python -m echokit}, as L{tests.support} does)
with a C{sitecustomize} module on its C{PYTHONPATH} that writes the names in
C{sys.modules} to a file when the process exits, after it has echoed over each listener
and drained on SIGTERM: what a serve process imports over its whole life.
"""

from __future__ import annotations

import socket
import ssl
import sys
from pathlib import Path

import pytest

from echokit.runtime.reactors import TLS_LIBRARIES, without_tls
from tests.support import echokit_server, port_of

#: Written as sitecustomize.py: imported by every interpreter that has its directory on
#: PYTHONPATH, it dumps sys.modules at exit to $ECHOKIT_TEST_MODULES.
DUMPER = """\
import atexit, os, sys

def _dump(path=os.environ.get("ECHOKIT_TEST_MODULES")):
    if path:
        with open(path, "w") as f:
            # A name mapped to None is one marked as absent (echokit's without_tls).
            f.write("\\n".join(sorted(n for n, m in sys.modules.items() if m is not None)))

atexit.register(_dump)
"""

#: What a plaintext-only server must not import (prefixes of module names).
NOT_FOR_PLAINTEXT = (
    *TLS_LIBRARIES,
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, descriptions: list[str]
) -> tuple[list[str], list[str]]:
    """
    Run C{echokit serve DESCRIPTIONS}, echo once over each stream and datagram listener
    (TLS ones with verification against echokit's CA), stop it with SIGTERM; return the
    modules it had imported by its exit and its connect strings.
    """
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DUMPER)
    dump = tmp_path / "modules.txt"
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("ECHOKIT_TEST_MODULES", str(dump))
    certs = tmp_path / "certs"
    with echokit_server(descriptions, certs) as server:
        for text in server.connect_strings:
            message = f"echo over {text}".encode()
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
        pyOpenSSL, cryptography, service_identity, echokit's or Twisted's TLS layers,
        QUIC or the measurement modules (a 14 MiB difference in its RSS).
        """
        modules, _ = served_modules(
            tmp_path,
            monkeypatch,
            ["tcp:0:interface=127.0.0.1", f"unix:{tmp_path / 'echo.sock'}", "udp:0"],
        )
        assert "echokit.transports.stream" in modules  # the dump saw the serving process
        assert heavy(modules) == []

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
        assert heavy(modules, ("echokit.measure", "aioquic", "hdrh")) == []

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
