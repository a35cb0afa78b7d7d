"""The personal tensors' places in a round's vectors: the update leaves them out and the
aggregate is put back around them with zeros (sans I/O; ``rounds.personal`` plans them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fedrt.model_export.manifest import Manifest

Spans = tuple[tuple[int, int], ...]
F = TypeVar("F", bound=np.floating)


def spans(manifest: Manifest, personal: Sequence[str]) -> Spans:
    """[start, stop) of each personal tensor in the flattened model (manifest order)."""
    out: list[tuple[int, int]] = []
    at = 0
    for w in manifest.weights:
        if w.name in personal:
            out.append((at, at + w.size))
        at += w.size
    return tuple(out)


def shared_size(total: int, personal: Spans) -> int:
    """Coordinates of the update vector: the model's, less the personal tensors'."""
    return total - sum(stop - start for start, stop in personal)


def shared_mask(total: int, personal: Spans) -> npt.NDArray[np.bool_]:
    mask = np.ones(total, dtype=bool)
    for start, stop in personal:
        mask[start:stop] = False
    return mask


def embed(delta: npt.NDArray[F], total: int, personal: Spans) -> npt.NDArray[F]:
    """The shared aggregate ``delta`` as a whole-model delta: zero on the personal tensors."""
    if not personal:
        return delta
    full = np.zeros(total, delta.dtype)
    full[shared_mask(total, personal)] = delta
    return full


__all__ = ["Spans", "embed", "shared_mask", "shared_size", "spans"]
