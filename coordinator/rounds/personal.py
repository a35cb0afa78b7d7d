"""Personal layers (FedPer) in a round: the update leaves them out, the aggregate skips them.

A task names them (``tasks.personal_layers``); the round's update vector holds
only the other, shared tensors, and the aggregate is put back around the personal ones
with zeros, so every server optimizer leaves them exactly as they are (a zero delta moves
neither FedAvg's weights nor FedAdam's or FedAvgM's state, which also start at zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.rounds.commands import RoundConfig
from fedrt.coordinator.tasks.personal_layers import resolve
from fedrt.coordinator.tasks.spec import TaskSpec
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


def with_personal(config: RoundConfig, spec: TaskSpec, manifest: Manifest) -> RoundConfig:
    """``config`` with the task's personal tensors (names, spans) and fine-tuning steps."""
    personal = resolve(spec.personal_layers, spec.personal_last_layers, manifest.weight_names)
    if not personal and not spec.finetune_steps:
        return config
    return replace(
        config,
        personal_layers=personal,
        personal_spans=spans(manifest, personal),
        finetune_steps=spec.finetune_steps,
    )


__all__ = ["embed", "shared_mask", "shared_size", "spans", "with_personal"]
