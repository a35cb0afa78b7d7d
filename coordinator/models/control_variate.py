"""SCAFFOLD's server variate c as devices fetch it: float32 little-endian, manifest order.

c lives, in float64, in the optimizer state saved with each version (``optimizer_state``);
devices need it once per version, and float32 halves that download. The form is derived
from the state blob, deterministically, and stored as a blob of its own (content-addressed:
every instance that derives it writes the same bytes under the same name), so a plan can
name its sha256 and any instance can serve it.
"""

from __future__ import annotations

import threading

import numpy as np

from fedrt.coordinator.models.blobs import OPTIMIZER_STATE, BlobStore
from fedrt.coordinator.models.optimizer_state import decode_state

_F32 = np.dtype("<f4")
# state blob -> form blob, for this process (each derivation reads and hashes the state).
_DERIVED: dict[str, str] = {}
_LOCK = threading.Lock()
_REMEMBERED = 256


def variate_form(blobs: BlobStore, state_sha256: str) -> str | None:
    """The sha256 of c's float32 form for the optimizer state ``state_sha256`` (stored as a
    blob); None when the state holds no c (another optimizer's)."""
    with _LOCK:
        known = _DERIVED.get(state_sha256)
    if known is not None and blobs.has(known):
        return known
    _, state = decode_state(blobs.read(state_sha256, kind=OPTIMIZER_STATE))
    if state.control_variate is None:
        return None
    sha = blobs.put_bytes(np.ascontiguousarray(state.control_variate, _F32).tobytes())
    with _LOCK:
        if len(_DERIVED) >= _REMEMBERED:
            _DERIVED.clear()
        _DERIVED[state_sha256] = sha
    return sha


__all__ = ["variate_form"]
