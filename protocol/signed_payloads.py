"""The exact bytes that devices and the coordinator sign or verify outside the round protocol.

Both sides import these, so a model-version signature or an enrollment proof cannot drift
between the SDK and the coordinator. Each payload starts with its own domain string, so a
signature made for one purpose never verifies for another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ENROLL_DOMAIN", "MODEL_VERSION_DOMAIN", "enrollment_proof_payload",
           "model_signing_payload"]  # fmt: skip

MODEL_VERSION_DOMAIN = b"fedrt/model-version/v1\n"
ENROLL_DOMAIN = b"fedrt/enroll/v1\n"


def model_signing_payload(sha256: str, manifest: Mapping[str, Any]) -> bytes:
    """What the coordinator's Ed25519 signature over a model version covers."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return MODEL_VERSION_DOMAIN + sha256.encode("ascii") + b"\n" + canonical.encode("utf-8")


def enrollment_proof_payload(token: str) -> bytes:
    """What a device signs with its identity key to enroll with a one-time ``token``."""
    return ENROLL_DOMAIN + token.encode("utf-8")
