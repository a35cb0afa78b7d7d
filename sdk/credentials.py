"""A device's identity and credentials: its Ed25519 key, enrollment, and what it was granted.

The identity key is made on the device and never leaves it; enrollment proves possession
of it (a signature over the one-time token) and returns the device id, MQTT credentials,
the coordinator's public key, public URL and HTTPS CA, which together are stored under the
device's data directory with owner-only permissions. Secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.protocol.signed_payloads import enrollment_proof_payload
from fedrt.sdk.errors import RemoteError, SdkConfigError, SdkError
from fedrt.sdk.https_trust import check_url, open_url, trust_context

__all__ = [
    "CREDENTIALS_FILE",
    "IDENTITY_FILE",
    "Credentials",
    "EnrollmentRefused",
    "basic_auth",
    "enroll",
    "load_or_create_identity",
]

IDENTITY_FILE = "identity-ed25519.pem"
CREDENTIALS_FILE = "credentials.json"
_TIMEOUT_S = 30.0


class EnrollmentRefused(RemoteError):
    """The coordinator refused the enrollment (bad, used or expired token; bad proof)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What enrollment granted this device."""

    device_id: str
    mqtt_username: str
    mqtt_password: str = field(repr=False)
    coordinator_public_key: bytes
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool = False
    # The coordinator's public URL, as it reported it at enrollment (None: an older one).
    coordinator_url: str | None = None
    # PEM of the CA that signs the coordinator's HTTPS certificate: every later HTTPS call
    # verifies the server with it (plus the device's ca_file). None: ca_file or system store.
    ca_pem: str | None = None
    # A broker cluster: more (host, port) listeners to move to when the first is lost, and
    # the MQTT version the broker speaks (NATS: 4, 3.1.1); None: the device's own choice.
    mqtt_nodes: tuple[tuple[str, int], ...] = ()
    mqtt_protocol: int | None = None
    # The QoS to read the inbox at, as the coordinator said (0 on a fleet-scale NATS
    # cluster: no JetStream consumer per device); None: 1.
    mqtt_inbox_qos: int | None = None

    def __post_init__(self) -> None:
        if self.mqtt_inbox_qos not in (None, 0, 1):
            raise SdkConfigError(f"mqtt.inbox_qos must be 0 or 1, not {self.mqtt_inbox_qos!r}")
        if self.ca_pem is not None:
            trust_context(ca_pem=self.ca_pem)  # a bad PEM fails here, not at the first download

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device_id": self.device_id,
            "mqtt_username": self.mqtt_username,
            "mqtt_password": self.mqtt_password,
            "coordinator_public_key": base64.b64encode(self.coordinator_public_key).decode(),
            "mqtt": {"host": self.mqtt_host, "port": self.mqtt_port, "tls": self.mqtt_tls},
        }
        if self.coordinator_url is not None:
            out["coordinator_url"] = self.coordinator_url
        if self.ca_pem is not None:
            out["ca_pem"] = self.ca_pem
        if self.mqtt_nodes:
            out["mqtt"]["nodes"] = [{"host": h, "port": p} for h, p in self.mqtt_nodes]
        if self.mqtt_protocol is not None:
            out["mqtt"]["protocol"] = self.mqtt_protocol
        if self.mqtt_inbox_qos is not None:
            out["mqtt"]["inbox_qos"] = self.mqtt_inbox_qos
        return out

    @classmethod
    def from_json(cls, data: Any) -> Credentials:
        try:
            mqtt = data["mqtt"]
            return cls(
                device_id=str(data["device_id"]),
                mqtt_username=str(data["mqtt_username"]),
                mqtt_password=str(data["mqtt_password"]),
                coordinator_public_key=base64.b64decode(
                    data["coordinator_public_key"], validate=True
                ),
                mqtt_host=str(mqtt["host"]),
                mqtt_port=int(mqtt["port"]),
                mqtt_tls=bool(mqtt.get("tls", False)),
                coordinator_url=_optional_str(data, "coordinator_url"),
                ca_pem=_optional_str(data, "ca_pem"),
                mqtt_nodes=tuple(
                    (str(node["host"]), int(node["port"])) for node in mqtt.get("nodes", ())
                ),
                mqtt_protocol=None if mqtt.get("protocol") is None else int(mqtt["protocol"]),
                mqtt_inbox_qos=None if mqtt.get("inbox_qos") is None else int(mqtt["inbox_qos"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise SdkConfigError(f"malformed credentials: {exc!r}") from None
        except SdkConfigError as exc:
            raise SdkConfigError(f"malformed credentials: {exc}") from None

    def save(self, directory: Path) -> Path:
        path = directory / CREDENTIALS_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_json(), fh)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> Credentials | None:
        path = directory / CREDENTIALS_FILE
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise SdkConfigError(f"cannot read {path}: {exc}") from None


def _optional_str(data: Any, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def load_or_create_identity(directory: Path) -> Ed25519PrivateKey:
    """The device's long-term signing key, created (0600) on first use."""
    path = directory / IDENTITY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        new = Ed25519PrivateKey.generate()
        pem = new.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return new
    except (OSError, ValueError) as exc:
        raise SdkConfigError(f"cannot read the identity key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SdkConfigError(f"{path} is not an Ed25519 private key")
    return key


def basic_auth(credentials: Credentials) -> dict[str, str]:
    """HTTP headers with which a device fetches models (its MQTT credentials, Basic)."""
    raw = f"{credentials.mqtt_username}:{credentials.mqtt_password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def enroll(
    coordinator_url: str,
    token: str,
    identity: Ed25519PrivateKey,
    *,
    labels: dict[str, str] | None = None,
    timeout_s: float = _TIMEOUT_S,
    ca_file: Path | None = None,
) -> Credentials:
    """Enroll with a one-time ``token``: POST /v1/enroll with a proof of key possession.

    The coordinator is verified with ``ca_file`` (else the system store): the CA it hands
    out in its reply is trusted only from then on.
    """
    check_url(coordinator_url, what="coordinator_url")
    context = trust_context(ca_file) if coordinator_url.startswith("https:") else None
    public = identity.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = json.dumps(
        {
            "token": token,
            "public_key": base64.b64encode(public).decode(),
            "proof": base64.b64encode(identity.sign(enrollment_proof_payload(token))).decode(),
            "labels": labels or {},
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        coordinator_url.rstrip("/") + "/v1/enroll",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with open_url(request, context=context, timeout=timeout_s, what="coordinator_url") as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        raise EnrollmentRefused(f"enrollment refused ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise SdkError(f"cannot reach the coordinator at {coordinator_url}: {exc}") from None
    return Credentials.from_json(reply)
