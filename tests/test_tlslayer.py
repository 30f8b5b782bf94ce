"""
Tests for L{echokit.transports.tlslayer}: echokit's TLS server layer on C{ssl.MemoryBIO}.

The unit tests talk to it in memory, with a stdlib C{ssl} client on memory BIOs and
Twisted's C{StringTransport} as the TCP connection. The real-socket tests serve
C{echokit serve ssl:0} and check backpressure with a peer that stops reading;
test_interop.py and test_hardening.py cover the rest
(socat, ncat, s_client, mutual TLS, close_notify with the last data, garbage).
"""

from __future__ import annotations

import contextlib
import getpass as getpass_module
import os
import select
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echokit.errors import InputError
from echokit.transports.certs import CertStore
from echokit.transports.tls import server_context
from echokit.transports.tlslayer import TLSServerProtocol
from echokit.transports.tlsreasons import tls_failure_text
from tests.test_hardening import (
    SSL,
    connect,
    roundtrip,
    serving,
    tls_context,
    tls_echo,
)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class Recorder(Protocol):
    """Records what the TLS layer tells it; echoes if C{echo}; writes C{early} at once."""

    def __init__(
        self,
        echo: bool = True,
        early: bytes = b"",
        on_handshake: Callable[[Recorder], None] | None = None,
    ) -> None:
        self.echo, self.early, self.on_handshake = echo, early, on_handshake
        self.received: list[bytes] = []
        self.events: list[str] = []
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.early:
            self.transport.write(self.early)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        self.events.append("handshake")
        if self.on_handshake is not None:
            self.on_handshake(self)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if self.echo:
            self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.events.append("read closed")
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.events.append("write closed")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class CountingTransport(StringTransport):
    """A C{StringTransport} that counts its writes."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class MemoryClient:
    """A stdlib TLS client on memory BIOs, verifying the server against C{ca}."""

    def __init__(self, ca: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def take(self) -> bytes:
        """The ciphertext waiting to go to the server."""
        return self.outgoing.read()

    def read_all(self, data: bytes) -> tuple[bytes, bool]:
        """Feed the server's C{data}; the plaintext, and whether close_notify came."""
        self.incoming.write(data)
        out = b""
        while True:
            try:
                chunk = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                return out, False
            except ssl.SSLZeroReturnError:
                return out, True
            if not chunk:
                return out, True
            out += chunk


def shake(
    server: TLSServerProtocol, transport: StringTransport, client: MemoryClient
) -> tuple[bytes, bool]:
    """
    Carry the handshake between C{client} and C{server} (whose TCP connection is
    C{transport}) until the client has completed it: the plaintext the client received
    meanwhile, and whether a close_notify came with it.
    """
    plaintext, closed = b"", False
    for _ in range(10):
        done = client.handshake()
        server.dataReceived(client.take())
        data, closed = client.read_all(transport.value())
        plaintext += data
        transport.clear()
        if done:
            return plaintext, closed
    raise AssertionError("the handshake did not complete in 10 flights")


class TLSServerProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        scratch = tempfile.mkdtemp(prefix="echokit-tlslayer-")
        self.addCleanup(shutil.rmtree, scratch)
        store = CertStore(Path(scratch))
        store.ensure()
        self.ca = store.ca_cert
        self.context = server_context(store.server_cert, store.server_key)

    def connect(
        self, recorder: Recorder | None = None
    ) -> tuple[TLSServerProtocol, Recorder, CountingTransport, MemoryClient]:
        """A server layer and a client that have completed their handshake."""
        recorder = recorder or Recorder()
        server, transport = TLSServerProtocol(self.context, recorder), CountingTransport()
        server.makeConnection(transport)
        client = MemoryClient(self.ca)
        self.assertEqual(transport.value(), b"")  # the client speaks first
        self.handshake_plaintext = shake(server, transport, client)[0]
        self.assertEqual(recorder.events, ["handshake"])
        return server, recorder, transport, client

    def test_handshake_then_echo(self) -> None:
        """After the handshake, what the client sends reaches the wrapped protocol and its
        writes reach the client, encrypted."""
        server, recorder, transport, client = self.connect()
        client.tls.write(b"hello")
        server.dataReceived(client.take())
        self.assertEqual(recorder.received, [b"hello"])
        self.assertNotIn(b"hello", transport.value())
        self.assertEqual(client.read_all(transport.value()), (b"hello", False))

    def test_one_read_is_one_delivery_and_one_write(self) -> None:
        """Several records that arrive in one read are handed over as one piece, and the
        ciphertext of the answer leaves in one write."""
        server, recorder, transport, client = self.connect()
        for part in (b"one ", b"two ", b"three"):
            client.tls.write(part)
        transport.writes = 0
        server.dataReceived(client.take())
        self.assertEqual(recorder.received, [b"one two three"])
        self.assertEqual(transport.writes, 1)
        self.assertEqual(client.read_all(transport.value())[0], b"one two three")

    def test_large_message_is_exact(self) -> None:
        """A 1 MiB message sent as 64 records comes back byte for byte."""
        server, recorder, transport, client = self.connect()
        payload = os.urandom(1 << 20)
        client.tls.write(payload)
        server.dataReceived(client.take())
        self.assertEqual(b"".join(recorder.received), payload)
        self.assertEqual(client.read_all(transport.value())[0], payload)

    def test_close_notify_is_a_half_close_after_the_data(self) -> None:
        """A close_notify arriving with the last data: the data is delivered and echoed
        first, then the wrapped protocol hears the half-close; its close sends the echo,
        then close_notify."""
        server, recorder, transport, client = self.connect()
        client.tls.write(b"last words")
        with contextlib.suppress(ssl.SSLWantReadError):  # the server's comes later
            client.tls.unwrap()
        server.dataReceived(client.take())
        self.assertEqual(recorder.received, [b"last words"])
        self.assertEqual(recorder.events, ["handshake", "read closed"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(client.read_all(transport.value()), (b"last words", True))

    def test_tcp_fin_is_a_half_close(self) -> None:
        """The TCP connection's half-close reaches the wrapped protocol as one."""
        server, recorder, _transport, _client = self.connect()
        server.readConnectionLost()
        self.assertEqual(recorder.events, ["handshake", "read closed"])
        server.writeConnectionLost()
        self.assertEqual(recorder.events, ["handshake", "read closed", "write closed"])

    def test_lose_connection_sends_close_notify_and_drops_later_writes(self) -> None:
        """loseConnection sends what was written, then close_notify, and closes TCP;
        a write after it is dropped."""
        server, _recorder, transport, client = self.connect()
        server.write(b"bye")
        server.loseConnection()
        server.write(b"too late")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(client.read_all(transport.value()), (b"bye", True))

    def test_writes_before_the_handshake_wait_for_it(self) -> None:
        """What the wrapped protocol writes before the handshake completes is sent, in
        order, once it has completed."""
        recorder = Recorder(early=b"welcome")
        self.connect(recorder)
        self.assertEqual(self.handshake_plaintext, b"welcome")

    def test_writes_before_and_at_the_handshake_keep_their_order(self) -> None:
        """A write made before the handshake goes out before one made when it completes."""

        def write_second(recorder: Recorder) -> None:
            assert recorder.transport is not None
            recorder.transport.write(b"second")

        recorder = Recorder(early=b"first,", on_handshake=write_second)
        self.connect(recorder)
        self.assertEqual(self.handshake_plaintext, b"first,second")

    def test_close_before_the_handshake_still_sends_what_was_written(self) -> None:
        """loseConnection before the handshake completes: what was written is sent once it
        has, then close_notify; nothing written later is."""
        recorder = Recorder(early=b"goodbye")
        server, transport = TLSServerProtocol(self.context, recorder), StringTransport()
        server.makeConnection(transport)
        server.loseConnection()
        server.write(b"too late")
        self.assertFalse(transport.disconnecting)  # waiting for the handshake
        received, closed = shake(server, transport, MemoryClient(self.ca))
        self.assertEqual((received, closed), (b"goodbye", True))
        self.assertTrue(transport.disconnecting)

    def test_close_before_the_handshake_with_nothing_written_closes_tcp(self) -> None:
        """loseConnection before the handshake, with nothing written: TCP closes at once."""
        server, transport = TLSServerProtocol(self.context, Recorder()), StringTransport()
        server.makeConnection(transport)
        server.loseConnection()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_peer_finished_is_told_once(self) -> None:
        """A close_notify followed by a TCP FIN: readConnectionLost is called once."""
        recorder = Recorder()
        recorder.readConnectionLost = lambda: recorder.events.append("read closed")  # type: ignore[method-assign]
        server, recorder, _transport, client = self.connect(recorder)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.tls.unwrap()
        server.dataReceived(client.take())
        server.readConnectionLost()
        self.assertEqual(recorder.events, ["handshake", "read closed"])

    def test_abort_while_receiving_sends_nothing_more(self) -> None:
        """A protocol that writes, then aborts, from dataReceived: nothing is sent after
        the abort, and a close_notify in the same read is not delivered."""
        recorder = Recorder()

        def write_then_abort(data: bytes) -> None:
            recorder.received.append(data)
            server.write(b"never sent")
            server.abortConnection()

        recorder.dataReceived = write_then_abort  # type: ignore[method-assign]
        server, recorder, transport, client = self.connect(recorder)
        client.tls.write(b"boom")
        with contextlib.suppress(ssl.SSLWantReadError):
            client.tls.unwrap()
        server.dataReceived(client.take())
        self.assertEqual(transport.value(), b"")
        self.assertEqual(recorder.events, ["handshake"])
        self.assertTrue(transport.disconnected)

    def test_plaintext_fails_the_handshake(self) -> None:
        """Plaintext where a ClientHello should be: the connection closes and the wrapped
        protocol's connectionLost gets the TLS error, in OpenSSL's words."""
        recorder = Recorder()
        server, transport = TLSServerProtocol(self.context, recorder), StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        server.connectionLost(Failure(Exception("connection done")))
        assert recorder.lost is not None
        self.assertIsInstance(recorder.lost.value, ssl.SSLError)
        self.assertEqual(recorder.events, [])
        text = tls_failure_text(recorder.lost)
        self.assertNotIn("_ssl.c", text)
        self.assertNotIn("[SSL", text)
        self.assertTrue(text)

    def test_backpressure_reaches_the_tcp_connection(self) -> None:
        """A producer registered on the TLS layer is registered on the TCP connection,
        and pausing the TLS layer pauses the TCP connection's reading."""
        server, _recorder, transport, _client = self.connect()
        server.registerProducer(server, True)
        self.assertIs(transport.producer, server)
        server.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        server.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        server.unregisterProducer()
        self.assertIsNone(transport.producer)

    def test_negotiated_names_version_and_cipher(self) -> None:
        """negotiated() gives the TLS version and cipher (for the connection's log line)."""
        server, _recorder, _transport, client = self.connect()
        version, cipher = server.negotiated()
        self.assertEqual(version, client.tls.version())
        self.assertEqual(cipher, client.tls.cipher()[0])  # type: ignore[index]

    def test_abort_closes_at_once_and_ignores_what_follows(self) -> None:
        """abortConnection aborts the TCP connection; data arriving after is not delivered."""
        server, recorder, transport, client = self.connect()
        server.abortConnection()
        self.assertTrue(transport.disconnected)
        client.tls.write(b"ignored")
        server.dataReceived(client.take())
        self.assertEqual(recorder.received, [])


class TLSLayerRealSocketTests:
    def test_peer_that_stops_reading_is_not_read_from(self) -> None:
        """
        A TLS client that sends and never reads is throttled: its sends stall within
        4 s, the server's RSS grows by less than 16 MB, another TLS client's echoes
        stay exact meanwhile, and once the pusher reads, all it sent comes back exactly.
        """
        with serving([SSL]) as server:
            port = server.port()
            assert tls_echo(port, b"warm-up", tls_context())[0] == b"warm-up"
            rss_before = server.rss_kib()
            pusher = tls_context().wrap_socket(connect(port), server_hostname="localhost")
            checker = tls_context().wrap_socket(connect(port), server_hostname="localhost")
            pusher.setblocking(False)
            chunk, sent, checks = os.urandom(1 << 16), 0, 0
            started = last_progress = time.monotonic()
            while time.monotonic() - started < 4.0:
                try:
                    pusher.send(chunk)  # all or nothing: a would-block is retried whole
                    sent += len(chunk)
                    last_progress = time.monotonic()
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    select.select([], [pusher], [], 0.05)
                    payload = b"check %d:" % checks + os.urandom(1000)
                    assert roundtrip(checker, payload) == payload
                    checks += 1
            stalled_for = time.monotonic() - last_progress
            growth_mb = (server.rss_kib() - rss_before) / 1024
            assert stalled_for > 2.0, "the server kept reading from a peer that does not read"
            assert growth_mb < 16
            assert checks > 0

            pusher.setblocking(True)
            pusher.settimeout(10)
            received = bytearray()
            for _ in range(100_000):
                if len(received) >= sent:
                    break
                data = pusher.recv(1 << 20)
                if not data:
                    break
                received += data
            assert len(received) == sent
            assert bytes(received) == chunk * (sent // len(chunk))
            pusher.close()
            checker.close()


def encrypt_key(key: Path, to: Path, passphrase: bytes = b"open sesame") -> Path:
    """Write C{key} to C{to}, encrypted with C{passphrase}."""
    from cryptography.hazmat.primitives import serialization

    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    to.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    )
    return to


def intermediate_chain(directory: Path) -> tuple[Path, Path, Path, Path]:
    """A root CA, an intermediate CA it signed, and a localhost certificate the
    intermediate signed (with its key): their PEM files in C{directory}."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            names = x509.SubjectAlternativeName([x509.DNSName("localhost")])
            builder = builder.add_extension(names, critical=False)
        return builder.sign(signer, hashes.SHA256())

    root_key, middle_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = issue("test root", root_key, "test root", root_key, True)
    middle = issue("test intermediate", middle_key, "test root", root_key, True)
    leaf = issue("localhost", leaf_key, "test intermediate", middle_key, False)
    paths = [directory / name for name in ("root.pem", "middle.pem", "leaf.pem", "leaf.key")]
    for path, cert in zip(paths, (root, middle, leaf), strict=False):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[3].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths[0], paths[1], paths[2], paths[3]


class ServerContextTests(SynchronousTestCase):
    """L{server_context}: the certificate options of C{ssl:} listeners."""

    def setUp(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="echokit-context-"))
        self.addCleanup(shutil.rmtree, self.scratch)
        self.store = CertStore(self.scratch / "certs")
        self.store.ensure()

    def handshake(self, context: ssl.SSLContext, trust: Path | None = None) -> MemoryClient:
        """Complete a handshake with C{context} (the client trusts C{trust}, else
        echokit's CA); the client, to look at."""
        server = TLSServerProtocol(context, Recorder())
        transport = StringTransport()
        server.makeConnection(transport)
        client = MemoryClient(trust or self.store.ca_cert)
        shake(server, transport, client)
        return client

    def test_key_and_certificate_in_one_file(self) -> None:
        """privateKey= alone may name one file holding the key and the certificate."""
        both = self.scratch / "both.pem"
        both.write_bytes(self.store.server_key.read_bytes() + self.store.server_cert.read_bytes())
        client = self.handshake(server_context(both, None))
        self.assertIsNotNone(client.tls.version())

    def test_extra_chain_completes_the_path_to_the_root(self) -> None:
        """A server certificate signed by an intermediate CA: with extraCertChain= naming
        the intermediate, a client that trusts only the root verifies the server;
        without it, the same client refuses."""
        root, intermediate, leaf, leaf_key = intermediate_chain(self.scratch)
        chained = server_context(leaf, leaf_key, extra_chain=intermediate)
        client = self.handshake(chained, trust=root)
        self.assertIsNotNone(client.tls.version())
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.handshake(server_context(leaf, leaf_key), trust=root)

    def test_extra_chain_file_holds_no_key(self) -> None:
        """The file the context reads the chain from holds certificates only, even when
        the key shares the server certificate's file."""
        both = self.scratch / "both.pem"
        both.write_bytes(self.store.server_key.read_bytes() + self.store.server_cert.read_bytes())
        kept = self.scratch / "kept"
        kept.mkdir()

        @contextlib.contextmanager
        def keep(prefix: str = "") -> Iterator[str]:
            yield str(kept)

        self.patch(tempfile, "TemporaryDirectory", keep)
        server_context(both, None, extra_chain=self.store.ca_cert)
        chain = (kept / "chain.pem").read_bytes()
        self.assertEqual(chain.count(b"-----BEGIN CERTIFICATE-----"), 2)
        self.assertNotIn(b"PRIVATE KEY", chain)

    def test_encrypted_key_asks_its_passphrase_once(self) -> None:
        """An encrypted private key's passphrase is asked once, and it works."""
        encrypted = encrypt_key(self.store.server_key, self.scratch / "encrypted.key")
        asked: list[str] = []

        def getpass(prompt: str) -> str:
            asked.append(prompt)
            return "open sesame"

        self.patch(getpass_module, "getpass", getpass)
        client = self.handshake(server_context(self.store.server_cert, encrypted))
        self.assertIsNotNone(client.tls.version())
        self.assertEqual(len(asked), 1)
        self.assertIn(str(encrypted), asked[0])

    def test_encrypted_key_without_a_passphrase_is_a_clear_error(self) -> None:
        """No terminal and no input to read a passphrase from: InputError, not a crash;
        and a worker (prompt=False) never asks."""
        encrypted = encrypt_key(self.store.server_key, self.scratch / "encrypted.key")

        def no_input(prompt: str) -> str:
            raise EOFError()

        self.patch(getpass_module, "getpass", no_input)
        with self.assertRaises(InputError) as raised:
            server_context(self.store.server_cert, encrypted)
        self.assertIn("is encrypted and no passphrase was given", str(raised.exception))
        with self.assertRaises(InputError) as raised:
            server_context(self.store.server_cert, encrypted, prompt=False)
        self.assertIn("cannot ask for its passphrase (--workers)", str(raised.exception))

    def test_key_of_another_certificate_is_a_clear_error(self) -> None:
        """A key that does not belong to the certificate: InputError naming both files."""
        with self.assertRaises(InputError) as raised:
            server_context(self.store.server_cert, self.store.client_key)
        message = str(raised.exception)
        self.assertIn(str(self.store.server_cert), message)
        self.assertIn(str(self.store.client_key), message)
        self.assertIn("do not match", message)

    def test_bad_dh_parameters_name_their_file(self) -> None:
        """dhParameters= naming a file that is not DH parameters: InputError naming it."""
        bad = self.scratch / "dh.pem"
        bad.write_text("not DH parameters\n")
        with self.assertRaises(InputError) as raised:
            server_context(self.store.server_cert, self.store.server_key, dh_parameters=bad)
        self.assertIn(f"cannot use DH parameters '{bad}'", str(raised.exception))
