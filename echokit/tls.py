"""
TLS settings for echokit's servers and clients, in one place.

Servers speak TLS 1.2 or newer. Clients verify the server's certificate chain and its
name (DNS name or IP address) against a trust root by default: echokit's own CA if its
certificate directory has one, else the platform's trust store; C{trustRoots=} (tls) or
C{caCertsDir=} (ssl) replace that default. C{--insecure} is the only way to skip it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from echokit.errors import InputError
from echokit.fastpath import SocketWriter, read_in_large_chunks, writer_for

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} '{path}': {e.strerror}") from None


def tls_failure_text(reason: Failure) -> str:
    """
    OpenSSL's reasons for a failed TLS connection, in a few words.

        >>> from OpenSSL import SSL
        >>> tls_failure_text(Failure(SSL.Error([("SSL routines", "", "wrong version number")])))
        'wrong version number'
    """
    value = reason.value
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        reasons = [str(entry[-1]) for entry in value.args[0] if entry and entry[-1]]
        if reasons:
            return "; ".join(reasons)
    return reason.getErrorMessage()


def load_certificates(path: Path) -> list[ssl.Certificate]:
    """
    Load every PEM certificate in a file, or in the C{*.pem} files of a directory.

    @raise InputError: if there is none.
    """
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    found = [
        ssl.Certificate.loadPEM(block)
        for file in files
        for block in _PEM_CERT.findall(_read(file, "certificate file"))
    ]
    if not found:
        raise InputError(f"no PEM certificate found in '{path}': give a CA certificate file")
    return found


def load_private_certificate(cert: Path, key: Path | None) -> ssl.PrivateCertificate:
    """
    Load a certificate and its private key (from C{key}, or from C{cert} itself if C{None}).

    @raise InputError: if either does not parse or they do not belong together.
    """
    cert_pem = _read(cert, "certificate")
    key_pem = _read(key, "private key") if key else cert_pem
    try:
        certificate = ssl.Certificate.loadPEM(cert_pem)
        key_pair = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
        private: ssl.PrivateCertificate = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            certificate, key_pair
        )
        return private
    except (crypto.Error, ValueError) as e:
        raise InputError(
            f"cannot load certificate '{cert}' with key '{key or cert}': {e}; "
            "give PEM files (run `echokit certs` to make a pair)"
        ) from None


def server_options(
    cert: Path,
    key: Path | None,
    extra_chain: Path | None = None,
    dh_parameters: Path | None = None,
    client_ca: Path | None = None,
) -> ssl.CertificateOptions:
    """
    The TLS settings of an echokit server: this certificate, TLS 1.2 or newer.

    @param client_ca: if given, demand a client certificate signed by this CA (mutual TLS).

    @raise InputError: if the files do not load.
    """
    private = load_private_certificate(cert, key)
    chain = (
        [c.original.to_cryptography() for c in load_certificates(extra_chain)]
        if extra_chain
        else None
    )
    dh = (
        ssl.DiffieHellmanParameters.fromFile(FilePath(str(dh_parameters)))
        if dh_parameters
        else None
    )
    try:
        return ssl.CertificateOptions(
            # cryptography objects: pyOpenSSL deprecates passing its own PKey and X509.
            privateKey=private.privateKey.original.to_cryptography_key(),
            certificate=private.original.to_cryptography(),
            extraCertChain=chain,
            dhParameters=dh,
            raiseMinimumTo=MINIMUM_VERSION,
            verify=client_ca is not None,
            requireCertificate=client_ca is not None,
            caCerts=[c.original for c in load_certificates(client_ca)] if client_ca else None,
        )
    except (crypto.Error, ValueError) as e:
        raise InputError(f"cannot use certificate '{cert}': {e}") from None


def trust_root(path: Path | None) -> IOpenSSLTrustRoot:
    """The CAs in C{path} (a file or a directory), or the platform's trust store if C{None}."""
    root: IOpenSSLTrustRoot = (
        ssl.platformTrust()
        if path is None
        else ssl.trustRootFromCertificates(load_certificates(path))
    )
    return root


def client_options(
    hostname: str,
    trust: Path | None,
    client_cert: tuple[Path, Path | None] | None = None,
    insecure: bool = False,
) -> IOpenSSLClientConnectionCreator | ssl.CertificateOptions:
    """
    The TLS settings of an echokit client.

    @param hostname: the name (or IP address) the server's certificate must carry.
    @param trust: the CA file or directory to verify against; C{None} for the platform's.
    @param client_cert: a certificate and key to present, for mutual TLS.
    @param insecure: skip all verification of the server. Only for C{--insecure}.
    """
    private = load_private_certificate(*client_cert) if client_cert else None
    if insecure:
        return ssl.CertificateOptions(
            privateKey=private.privateKey.original if private else None,
            certificate=private.original if private else None,
            raiseMinimumTo=MINIMUM_VERSION,
        )
    return ssl.optionsForClientTLS(hostname, trustRoot=trust_root(trust), clientCertificate=private)


@implementer(IHalfCloseableProtocol)
class EchoTLSProtocol(TLSMemoryBIOProtocol):
    """
    The TLS layer of echokit's TLS listeners: Twisted's, with three changes for an echo.

    - No write aggregation. Twisted's default (C{BufferingTLSTransport}) holds small
      writes until the next reactor turn; when a client's close_notify arrives in the
      same read as its last data, the held echo is dropped. Writing each echo at once
      delivers everything written before the close_notify.
    - Writing through: the ciphertext of each echo goes straight to the socket when
      nothing is queued there, as for plain connections (L{echokit.fastpath}).
    - TCP half-close. A client that ends with a TCP FIN but no close_notify (ncat
      --ssl does) has sent all it will send; without L{IHalfCloseableProtocol} the
      connection would be torn down at once, dropping the echo still on its way.
      Here it is closed the TLS way (close_notify, then TCP) once the echo is out.
    """

    _writer: SocketWriter | None = None

    def makeConnection(self, transport: Any) -> None:
        # Ciphertext goes through to the socket when nothing is queued (see fastpath).
        self._writer = writer_for(transport)
        read_in_large_chunks(transport)
        TLSMemoryBIOProtocol.makeConnection(self, transport)

    def _flushSendBIO(self) -> None:
        try:
            ciphertext = self._tlsConnection.bio_read(2**15)
        except SSL.WantReadError:
            return  # nothing to send
        if self._writer is not None:
            self._writer.write(ciphertext)
        elif self.transport is not None:
            self.transport.write(ciphertext)

    def readConnectionLost(self) -> None:
        # Pass the half-close on: the echo protocol finishes its echo, then closes.
        wrapped = self.wrappedProtocol
        if IHalfCloseableProtocol.providedBy(wrapped):
            wrapped.readConnectionLost()
        else:
            TLSMemoryBIOProtocol.loseConnection(self)

    def writeConnectionLost(self) -> None:
        wrapped = self.wrappedProtocol
        if IHalfCloseableProtocol.providedBy(wrapped):
            wrapped.writeConnectionLost()
        else:
            TLSMemoryBIOProtocol.loseConnection(self)


class EchoTLSFactory(TLSMemoryBIOFactory):
    """Wrap a server factory in TLS with L{EchoTLSProtocol}."""

    protocol = EchoTLSProtocol


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Listen with C{wrapped} (a TCP server endpoint) and speak TLS with C{options}:
    Twisted's C{SSL4ServerEndpoint}, with L{EchoTLSFactory} as the TLS layer.
    """

    def __init__(self, wrapped: Any, options: Any) -> None:
        self.wrapped = wrapped
        self.options = options

    def listen(self, factory: Any) -> Any:
        return self.wrapped.listen(EchoTLSFactory(self.options, False, factory))
