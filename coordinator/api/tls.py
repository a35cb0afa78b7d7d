"""HTTPS for the coordinator's API: the server's TLS context and the CA devices get at enrollment.

Either the operator's certificate (``http.tls_cert`` + ``tls_key``, with ``http.ca_file``
naming the CA that devices should trust for it) or ``http.tls = "self-signed"``: a server
certificate issued at every start by the coordinator's own CA, which is kept under
``DATA_DIR/tls`` and handed to devices in the enrollment reply. Every file is checked here,
at start, so a bad one is a ``ConfigError`` naming the setting, never a failing handshake.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fedrt.coordinator.api.settings import TLS_SELF_SIGNED, WILDCARD_HOSTS, HttpConfig
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.security.tls import issue, load_or_create_ca, write_issued

TLS_DIR = "tls"
SERVER_CERT_FILE = "server.crt"
SERVER_KEY_FILE = "server.key"
# Names every coordinator certificate carries: a device or probe on the same machine.
_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
# Deep enough for any real PKI (root -> intermediate -> issuing CA -> leaf).
_MAX_CHAIN = 8


@dataclass(frozen=True, slots=True)
class HttpsSetup:
    """What serving HTTPS needs: the server context, and the CA PEM enrollment hands out."""

    context: ssl.SSLContext
    # None: devices verify the certificate with their own ca_file or the system store.
    ca_pem: str | None


def https_setup(http: HttpConfig, data_dir: Path) -> HttpsSetup | None:
    """The HTTPS setup ``http`` asks for (None: plain HTTP); raises ``ConfigError``."""
    if http.tls == TLS_SELF_SIGNED:
        directory = data_dir / TLS_DIR
        ca = load_or_create_ca(directory)
        names = server_names(http)
        # Issued anew at each start: the names follow the configuration of this run.
        cert, key = directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE
        try:
            write_issued(issue(ca, names[0], server_names=names), cert, key)
        except OSError as exc:
            raise ConfigError(f"cannot write the server certificate: {exc}") from None
        return HttpsSetup(_server_context(cert, key), ca.cert_pem().decode())
    if http.tls_cert is None or http.tls_key is None:
        return None
    context = _server_context(http.tls_cert, http.tls_key)
    ca_pem = _ca_for(http.ca_file, http.tls_cert) if http.ca_file is not None else None
    return HttpsSetup(context, ca_pem)


def server_names(http: HttpConfig) -> tuple[str, ...]:
    """The public URL's host, the bind host unless a wildcard, then the loopback names."""
    names = []
    if http.public_url is not None:
        names.append(urlsplit(http.public_url).hostname or "")
    if http.host not in WILDCARD_HOSTS:
        names.append(http.host)
    names.extend(_LOCAL_NAMES)
    return tuple(dict.fromkeys(n for n in names if n))


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read it ({exc.strerror})") from None


def _certificates(path: Path, setting: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path, setting))
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{setting} {path} holds no PEM certificate")
    return certs


def _no_password() -> bytes:
    # OpenSSL would otherwise prompt on the terminal for an encrypted key: a hang at start.
    raise ConfigError("http.tls_key is encrypted; give an unencrypted key file (mode 0600)")


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    leaf = _certificates(cert, "http.tls_cert")[0]
    try:
        private = serialization.load_pem_private_key(_read(key, "http.tls_key"), password=None)
    except TypeError:
        _no_password()
        raise  # pragma: no cover - _no_password always raises
    except ValueError:
        raise ConfigError(f"http.tls_key {key} is not a PEM private key") from None
    if private.public_key() != leaf.public_key():
        raise ConfigError(f"http.tls_key {key} does not match http.tls_cert {cert}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot use http.tls_cert/http.tls_key: {exc}") from None
    return context


def _ca_for(ca_file: Path, cert: Path) -> str:
    """``ca_file``'s PEM, once it is shown to sign ``cert`` (directly or via its chain)."""
    cas = _certificates(ca_file, "http.ca_file")
    chain = _certificates(cert, "http.tls_cert")
    current, rest = chain[0], chain[1:]
    for _ in range(_MAX_CHAIN):
        if any(_issued_by(current, ca) for ca in cas):
            return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in cas)
        parent = next((c for c in rest if _issued_by(current, c)), None)
        if parent is None:
            break
        current = parent
    raise ConfigError(f"http.ca_file {ca_file} does not sign http.tls_cert {cert}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


__all__ = ["TLS_DIR", "HttpsSetup", "https_setup", "server_names"]
