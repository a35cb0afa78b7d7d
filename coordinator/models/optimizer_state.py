"""Server optimizer state as a blob saved with the model version it produced, and loaded back.

The encoding is deterministic (same state, same bytes, same sha256): a magic line, a 4-byte
big-endian header length, a JSON header (format version, optimizer name, rounds, the
arrays' names and lengths) and the arrays as little-endian float64, so the moments come
back bit for bit. The blob lives in the ``BlobStore`` (hashed, verified on read); the
version's ``ModelRecord.optimizer_state_sha256`` names it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from fedrt.coordinator.errors import NotFoundError, StoreError
from fedrt.coordinator.models.blobs import OPTIMIZER_STATE, BlobStore
from fedrt.coordinator.records import ModelRecord
from fedrt.coordinator.strategies.optimizers import OptimizerState, ServerOptimizer

log = logging.getLogger(__name__)

MAGIC = b"fedrt-optimizer-state\n"
FORMAT_VERSION = 1
# control_variate: SCAFFOLD's c (``strategies.scaffold``); devices read it too (sdk).
_ARRAYS = ("momentum", "second_moment", "control_variate")
_F64 = np.dtype("<f8")


def encode_state(optimizer: str, state: OptimizerState) -> bytes:
    """The state of ``optimizer`` (its ``name``) as bytes."""
    arrays = [(n, getattr(state, n)) for n in _ARRAYS if getattr(state, n) is not None]
    header = {
        "format": FORMAT_VERSION,
        "optimizer": optimizer,
        "rounds": state.rounds,
        "arrays": [[n, int(a.size)] for n, a in arrays],
    }
    head = json.dumps(header, sort_keys=True).encode()
    body = b"".join(np.ascontiguousarray(a, _F64).tobytes() for _, a in arrays)
    return MAGIC + len(head).to_bytes(4, "big") + head + body


def decode_state(data: bytes) -> tuple[str, OptimizerState]:
    """(optimizer name, state) from ``encode_state``'s bytes; ``StoreError`` if malformed."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise StoreError("not an optimizer state blob")
    at = len(MAGIC) + 4
    end = at + int.from_bytes(data[len(MAGIC) : at], "big")
    try:
        header: Any = json.loads(data[at:end])
        optimizer, rounds = header["optimizer"], header["rounds"]
        arrays = [(str(n), int(size)) for n, size in header["arrays"]]
        known = header["format"] == FORMAT_VERSION
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"optimizer state header is malformed: {exc!r}") from None
    if not known or not isinstance(optimizer, str) or type(rounds) is not int or rounds < 0:
        raise StoreError("optimizer state header is of an unknown format")
    if any(n not in _ARRAYS for n, _ in arrays) or len({n for n, _ in arrays}) != len(arrays):
        raise StoreError(f"optimizer state holds unknown arrays: {arrays}")
    if len(data) - end != _F64.itemsize * sum(max(size, 0) for _, size in arrays):
        raise StoreError("optimizer state arrays do not match their header")
    values: dict[str, Any] = {}
    for name, size in arrays:
        values[name] = np.frombuffer(data, _F64, size, end).astype(np.float64)
        end += size * _F64.itemsize
        if not np.all(np.isfinite(values[name])):
            raise StoreError(f"optimizer state {name} holds NaN or infinity")
    return optimizer, OptimizerState(rounds=rounds, **values)


def save_state(blobs: BlobStore, optimizer: ServerOptimizer, state: OptimizerState) -> str | None:
    """Store the state as a blob and return its sha256; None when there is nothing to carry
    (FedAvg, or no round applied yet)."""
    if not optimizer.stateful or all(getattr(state, n) is None for n in _ARRAYS):
        return None
    return blobs.put_bytes(encode_state(optimizer.name, state))


def load_state(
    blobs: BlobStore,
    version: ModelRecord,
    optimizer: ServerOptimizer,
    *,
    size: int,
    rounds: int,
    task_id: str,
) -> OptimizerState:
    """The state saved with ``version``, or a fresh one (``rounds`` kept) when there is none
    that fits; a fresh start of a stateful optimizer is logged with its reason."""
    fresh = OptimizerState(rounds=rounds)
    sha = version.optimizer_state_sha256
    if sha is None:
        if optimizer.stateful:
            log.info("task %s: version %s has no saved optimizer state: %s starts fresh",
                     task_id, version.sha256[:12], optimizer.name)  # fmt: skip
        return fresh
    try:
        name, state = decode_state(blobs.read(sha, kind=OPTIMIZER_STATE))
    except (StoreError, NotFoundError) as exc:  # CorruptArtifactError is a StoreError
        log.error("task %s: optimizer state %s of version %s is unusable (%s): %s starts fresh",
                  task_id, sha[:12], version.sha256[:12], exc, optimizer.name)  # fmt: skip
        return fresh
    sizes = {getattr(state, n).size for n in _ARRAYS if getattr(state, n) is not None}
    if name != optimizer.name or sizes - {size}:
        log.warning("task %s: version %s's optimizer state is for %s over %s values, the task "
                    "runs %s over %d: it starts fresh", task_id, version.sha256[:12], name,
                    sorted(sizes), optimizer.name, size)  # fmt: skip
        return fresh
    return state


__all__ = ["FORMAT_VERSION", "MAGIC", "decode_state", "encode_state", "load_state", "save_state"]
