"""Certificates for MQTT and HTTPS: a private CA, server certificates and client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrt.coordinator.errors import ConfigError

# P-256 keeps handshakes cheap on small devices and is supported by every TLS stack we meet.
_CURVE = ec.SECP256R1()
# Long enough for a test run or a pilot deployment; operators bring their own PKI beyond that.
DEFAULT_VALIDITY = dt.timedelta(days=825)
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"


@dataclass(frozen=True, slots=True)
class Issued:
    """A private key and the certificate that binds it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Paths of a CA plus one server and one client identity, as brokers and clients want them."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrt"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(common_name: str = "fedrt CA", validity: dt.timedelta = DEFAULT_VALIDITY) -> Issued:
    key = ec.generate_private_key(_CURVE)
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key=key, cert=cert)


def issue(
    ca: Issued,
    common_name: str,
    *,
    server_names: tuple[str, ...] = (),
    client: bool = False,
    validity: dt.timedelta = DEFAULT_VALIDITY,
) -> Issued:
    """Issue a leaf certificate: a server one when ``server_names`` is given, else a client one."""
    key = ec.generate_private_key(_CURVE)
    now = _now()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return Issued(key=key, cert=builder.sign(ca.key, hashes.SHA256()))


def _write(path: Path, data: bytes, *, secret: bool) -> Path:
    # Keys are created with owner-only permissions from the start, never chmod-ed afterwards.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def write_tls_files(
    directory: Path,
    *,
    server_names: tuple[str, ...] = ("127.0.0.1", "::1", "localhost"),
    client_name: str = "fedrt-client",
) -> TlsFiles:
    """Create a CA, a server identity for ``server_names`` and one client identity."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = create_ca()
    server = issue(ca, server_names[0], server_names=server_names)
    client_id = issue(ca, client_name, client=True)
    return TlsFiles(
        ca_cert=_write(directory / "ca.crt", ca.cert_pem(), secret=False),
        server_cert=_write(directory / "server.crt", server.cert_pem(), secret=False),
        server_key=_write(directory / "server.key", server.key_pem(), secret=True),
        client_cert=_write(directory / "client.crt", client_id.cert_pem(), secret=False),
        client_key=_write(directory / "client.key", client_id.key_pem(), secret=True),
    )


def load_or_create_ca(directory: Path, common_name: str = "fedrt coordinator CA") -> Issued:
    """The CA kept in ``directory`` (``ca.crt`` + ``ca.key``, 0600), created on first use.

    Never silently replaced: devices trust it, so a half-present or unusable pair is an
    error for the operator to resolve, not a reason to mint a new CA.
    """
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not cert_path.exists() and not key_path.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            ca = create_ca(common_name)
            # Key first: a crash between the two leaves a key without a cert, reported below.
            _write(key_path, ca.key_pem(), secret=True)
            _write(cert_path, ca.cert_pem(), secret=False)
        except OSError as exc:
            raise ConfigError(f"cannot create the CA in {directory}: {exc.strerror}") from None
        return ca
    remedy = (
        f"remove {CA_CERT_FILE} and {CA_KEY_FILE} there to make a new CA "
        "(every enrolled device must then enroll again)"
    )
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            # A group/world-readable CA key may already be copied: refuse to issue with it.
            raise ConfigError(f"{key_path} has mode {mode:o}; it must be 0600 (owner only)")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the CA in {directory}: {exc}; {remedy}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"the CA in {directory} is not PEM; {remedy}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} is not the key of {cert_path}; {remedy}")
    return Issued(key=key, cert=cert)


def write_issued(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write a certificate and its key (0600), as TLS libraries load them: from files."""
    _write(key_path, issued.key_pem(), secret=True)
    _write(cert_path, issued.cert_pem(), secret=False)
