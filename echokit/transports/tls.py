"""
TLS settings for echokit's servers and clients, in one place.

Servers speak TLS 1.2 or newer, through the standard library's C{ssl} (L{server_context},
used by L{echokit.transports.tlslayer}); clients through Twisted's TLS on pyOpenSSL. Clients verify the server's certificate chain and its
name (DNS name or IP address) against a trust root by default: echokit's own CA if its
certificate directory has one, else the platform's trust store; C{trustRoots=} (tls) or
C{caCertsDir=} (ssl) replace that default. C{--insecure} is the only way to skip it.
"""

from __future__ import annotations

import getpass
import re
import ssl as stdlib_ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from echokit.errors import InputError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} '{path}': {e.strerror}") from None


def load_certificates(path: Path) -> list[ssl.Certificate]:
    """
    Load every PEM certificate in a file, or in the C{*.pem} files of a directory.

    @raise InputError: if there is none.
    """
    return [ssl.Certificate.loadPEM(block) for block in pem_certificates(path)]


def pem_certificates(path: Path) -> list[bytes]:
    """
    The PEM certificate blocks in a file, or in the C{*.pem} files of a directory.

    @raise InputError: if there is none.
    """
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    found = [
        block for file in files for block in _PEM_CERT.findall(_read(file, "certificate file"))
    ]
    if not found:
        raise InputError(f"no PEM certificate found in '{path}': give a CA certificate file")
    return found


def load_private_certificate(
    cert: Path, key: Path | None, passphrase: Callable[..., bytes] | None = None
) -> ssl.PrivateCertificate:
    """
    Load a certificate and its private key (from C{key}, or from C{cert} itself if C{None}).

    @param passphrase: called for the passphrase of an encrypted key (else OpenSSL asks).

    @raise InputError: if either does not parse or they do not belong together.
    """
    cert_pem = _read(cert, "certificate")
    key_pem = _read(key, "private key") if key else cert_pem
    try:
        certificate = ssl.Certificate.loadPEM(cert_pem)
        pkey = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem, passphrase)
        private: ssl.PrivateCertificate = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            certificate, ssl.KeyPair(pkey)
        )
        return private
    except (crypto.Error, ValueError, VerifyError) as e:
        raise InputError(
            f"cannot load certificate '{cert}' with key '{key or cert}': {e}; "
            "give PEM files (run `echokit certs` to make a pair)"
        ) from None


def server_context(
    cert: Path,
    key: Path | None,
    extra_chain: Path | None = None,
    dh_parameters: Path | None = None,
    client_ca: Path | None = None,
    prompt: bool = True,
) -> stdlib_ssl.SSLContext:
    """
    The TLS settings of an echokit server: this certificate, TLS 1.2 or newer, no
    renegotiation, the stdlib's default ciphers.

    @param key: the private key's file; C{None} if C{cert} holds the key too.
    @param extra_chain: intermediate certificates to send after C{cert}.
    @param client_ca: if given, demand a client certificate signed by this CA (mutual TLS).
    @param prompt: ask for the passphrase of an encrypted key on the terminal (once); if
        C{False}, an encrypted key is an error (a worker process cannot ask).

    @raise InputError: if the files do not load.
    """
    typed: list[bytes] = []

    def passphrase(*_: object) -> bytes:
        if not typed:  # asked once, used for both loads below
            where = key or cert
            if not prompt:
                raise InputError(
                    f"private key '{where}' is encrypted and this process cannot ask for its "
                    "passphrase (--workers): decrypt it (openssl pkey -in KEY -out PLAIN)"
                )
            try:
                typed.append(getpass.getpass(f"passphrase for private key '{where}': ").encode())
            except (EOFError, KeyboardInterrupt):
                raise InputError(
                    f"private key '{where}' is encrypted and no passphrase was given: run "
                    "on a terminal, or decrypt it (openssl pkey -in KEY -out PLAIN)"
                ) from None
        return typed[0]

    load_private_certificate(cert, key, passphrase)  # for its clear errors
    context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = stdlib_ssl.TLSVersion.TLSv1_2
    context.options |= stdlib_ssl.OP_NO_RENEGOTIATION
    password = typed[0] if typed else None
    try:
        if extra_chain is None:
            context.load_cert_chain(cert, key or cert, password)
        else:
            # The context reads a chain from one file: the certificate, then the chain
            # (certificates only: never a copy of a key that shares the certificate's file).
            blocks = [*pem_certificates(cert)[:1], *pem_certificates(extra_chain)]
            with tempfile.TemporaryDirectory(prefix="echokit-chain-") as scratch:
                chain = Path(scratch, "chain.pem")
                chain.write_bytes(b"\n".join(blocks) + b"\n")
                context.load_cert_chain(chain, key or cert, password)
    except (stdlib_ssl.SSLError, OSError, ValueError) as e:
        raise InputError(f"cannot use certificate '{cert}': {e}") from None
    if dh_parameters is not None:
        try:
            context.load_dh_params(str(dh_parameters))
        except (stdlib_ssl.SSLError, OSError, ValueError) as e:
            raise InputError(
                f"cannot use DH parameters '{dh_parameters}': {e}; give a PEM file "
                "(openssl dhparam -out dh.pem 2048)"
            ) from None
    if client_ca is not None:
        context.verify_mode = stdlib_ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(
                cadata=b"\n".join(pem_certificates(client_ca)).decode("ascii")
            )
        except (stdlib_ssl.SSLError, ValueError) as e:
            raise InputError(f"cannot use client CA '{client_ca}': {e}") from None
    return context


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
