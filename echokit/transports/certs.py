"""
echokit's local certificate authority: where it lives and how it is made.

C{echokit certs} (and the first C{echokit serve ssl:PORT} without key keywords) writes a
CA, a server certificate and a client certificate into one directory. C{serve} and
C{connect} find that directory the same way, from any working directory:

    1. the C{--cert-dir} option, if given;
    2. else the C{ECHOKIT_CERT_DIR} environment variable, if set;
    3. else C{$XDG_DATA_HOME/echokit/certs} (C{~/.local/share/echokit/certs}).

Keys are EC P-256, written mode 0600; certificates are valid for 825 days. The server
certificate names C{DNS:localhost}, C{IP:127.0.0.1} and C{IP:::1}.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from echokit.errors import InputError

if TYPE_CHECKING:  # imported when certificates are made: keeps `echokit --help` fast
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CERT_DIR_ENV = "ECHOKIT_CERT_DIR"
_VALID_DAYS = 825


def default_cert_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The directory used when neither C{--cert-dir} nor C{ECHOKIT_CERT_DIR} is given."""
    data_home = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "echokit" / "certs"


def resolve_cert_dir(option: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """
    Find the certificate directory: C{option}, else C{$ECHOKIT_CERT_DIR}, else the default.

        >>> resolve_cert_dir(None, {"ECHOKIT_CERT_DIR": "/srv/certs"})
        PosixPath('/srv/certs')
    """
    chosen = option or environ.get(CERT_DIR_ENV)
    if not chosen:
        return default_cert_dir(environ)
    try:
        return Path(chosen).expanduser().absolute()
    except RuntimeError:
        raise InputError(
            f"cannot expand '{chosen.split('/')[0]}' in the certificate directory (no such "
            "user): give the full path"
        ) from None


@dataclass(frozen=True)
class CertStore:
    """The files of echokit's CA, server and client certificates in one directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def files(self) -> list[Path]:
        """Every file the store holds, CA first."""
        return [
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
        ]

    def complete(self) -> bool:
        """C{True} if every file exists."""
        return all(path.is_file() for path in self.files())

    def ensure(self) -> bool:
        """
        Create the certificates unless they all exist already.

        @return: C{True} if they were created now.
        """
        if self.complete():
            return False
        self.create()
        return True

    def create(self) -> None:
        """
        Write a new CA and server and client certificates signed by it.

        @raise InputError: if the directory cannot be created or written.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(
                f"cannot create certificate directory '{self.directory}': {e.strerror}; "
                f"choose another with --cert-dir or {CERT_DIR_ENV}"
            ) from None
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "echokit local CA")])
        ca_cert = (
            _builder(ca_name, ca_name, ca_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        server_names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        leaves = [
            (
                self.server_cert,
                self.server_key,
                "localhost",
                server_names,
                ExtendedKeyUsageOID.SERVER_AUTH,
            ),
            (
                self.client_cert,
                self.client_key,
                "echokit client",
                [],
                ExtendedKeyUsageOID.CLIENT_AUTH,
            ),
        ]
        try:
            _write(self.ca_key, _key_pem(ca_key), private=True)
            _write(self.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
            for cert_path, key_path, common_name, names, usage in leaves:
                key = ec.generate_private_key(ec.SECP256R1())
                subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
                builder = (
                    _builder(subject, ca_name, key.public_key(), now)
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                    .add_extension(
                        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False,
                    )
                )
                if names:
                    builder = builder.add_extension(
                        x509.SubjectAlternativeName(names), critical=False
                    )
                cert = builder.sign(ca_key, hashes.SHA256())
                _write(key_path, _key_pem(key), private=True)
                _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        except OSError as e:
            raise InputError(
                f"cannot write certificates in '{self.directory}': {e.strerror}; "
                f"choose another directory with --cert-dir or {CERT_DIR_ENV}"
            ) from None


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write C{data} to C{path} atomically; private files are created mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
