"""A coordinator serving HTTPS in a test: its config and CA, a model, a token, an enroll body."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.coordinator.api.tls import TLS_DIR
from fedrt.coordinator.config import CoordinatorConfig, HttpConfig
from fedrt.coordinator.records import ModelRecord
from fedrt.coordinator.security.tls import CA_CERT_FILE
from fedrt.protocol.signed_payloads import enrollment_proof_payload
from tests.coordinator.exported import write_export
from tests.coordinator.harness import ServiceThread, make_config


def https_config(data_dir: Path, broker_url: str = "embedded", **http: Any) -> CoordinatorConfig:
    """``make_config`` with these ``[http]`` settings (port 0 unless given)."""
    http_config = HttpConfig(**({"port": 0} | http))
    return make_config(data_dir, broker_url).model_copy(update={"http": http_config})


def coordinator_ca(svc: ServiceThread) -> Path:
    """The coordinator's own CA certificate (``tls = "self-signed"``)."""
    return svc.service.config.data_dir / TLS_DIR / CA_CERT_FILE


def add_model(svc: ServiceThread, directory: Path) -> ModelRecord:
    write_export(directory)
    catalog = svc.service.catalog
    record: ModelRecord = svc.run(
        lambda: catalog.add_export_dir(directory, actor="test", max_bytes=1 << 20)
    )
    return record


def new_token(svc: ServiceThread) -> str:
    enrollment = svc.service.enrollment
    token: str = svc.run(lambda: enrollment.create_token(actor="test"))
    return token


def enroll_body(token: str) -> dict[str, Any]:
    """A valid ``POST /v1/enroll`` body for a fresh device key."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "token": token,
        "public_key": base64.b64encode(raw).decode(),
        "proof": base64.b64encode(key.sign(enrollment_proof_payload(token))).decode(),
    }
