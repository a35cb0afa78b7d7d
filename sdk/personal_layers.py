"""Personalization on the device: its own copy of a task's personal layers, and fine-tuning.

FedPer (Arivazhagan et al. 2019): the plan names weight tensors that never leave the
device. The device keeps them in its state directory, one file per task, starting from the
first global model it gets (and again whenever their shapes change: a new model), puts
them over each downloaded global model before it trains or evaluates, and uploads the
delta of the other, shared tensors only. Fine-tuning: before evaluating, a few SGD steps
on the device's own examples, from the model it was sent; nothing of them is uploaded.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.model_export.manifest import TensorSpec
from fedrt.protocol.eval_metrics import ACCURACY, LOSS, PERSONALIZED_ACCURACY, PERSONALIZED_LOSS
from fedrt.sdk.errors import ModelError
from fedrt.sdk.example_store import Batch
from fedrt.sdk.trainer import TrainerBackend

__all__ = ["PersonalLayers", "finetune", "personalize", "personalized_sums", "shared_delta"]

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]


class PersonalLayers:
    """A task's personal tensors on disk (``DIR/TASK_ID.npz``, replaced atomically)."""

    def __init__(self, directory: Path, task_id: str, names: Sequence[str]) -> None:
        # task_id is a checked identifier (protocol.topics), safe as a file name.
        self.path = directory / f"{task_id}.npz"
        self.names = tuple(names)

    def load(self) -> dict[str, Array]:
        """The stored tensors (empty when none, or when the file cannot be read: the device
        then starts again from the global model rather than failing every round)."""
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return {name: np.array(data[name]) for name in data.files}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("personal layers %s unreadable, starting again: %s", self.path, exc)
            return {}

    def save(self, tensors: Mapping[str, Array]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".personal-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                arrays: dict[str, Any] = {name: np.asarray(t) for name, t in tensors.items()}
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def merge(self, weights: Sequence[Array], specs: Sequence[TensorSpec]) -> list[Array]:
        """``weights`` (a global model, manifest order) with this device's personal tensors.

        A personal tensor the device does not hold yet, or holds with another shape (the
        task moved to another model), is taken from ``weights`` and stored as its own."""
        by_name = {s.name: i for i, s in enumerate(specs)}
        missing = [n for n in self.names if n not in by_name]
        if missing:
            raise ModelError(f"the plan's personal layers are not in the model: {missing}")
        stored = self.load()
        out = list(weights)
        fresh = False
        for name in self.names:
            i = by_name[name]
            mine = stored.get(name)
            if mine is None or mine.shape != out[i].shape or mine.dtype != out[i].dtype:
                fresh = True
                stored[name] = np.array(out[i])
            out[i] = stored[name]
        if fresh:
            self.save({n: stored[n] for n in self.names})
        return out

    def keep(self, weights: Sequence[Array], specs: Sequence[TensorSpec]) -> None:
        """Store the personal tensors of ``weights`` (after local training)."""
        by_name = {s.name: i for i, s in enumerate(specs)}
        self.save({n: weights[by_name[n]] for n in self.names})


def shared_delta(
    trained: Sequence[Array], start: Sequence[Array], specs: Sequence[TensorSpec],
    personal: Sequence[str],
) -> npt.NDArray[np.float32]:  # fmt: skip
    """trained - start over the shared tensors only, flattened in manifest order (the
    update vector of a task with personal layers)."""
    skip = set(personal)
    keep = [i for i, s in enumerate(specs) if s.name not in skip]
    out = np.empty(sum(int(trained[i].size) for i in keep), np.float32)
    at = 0
    for i in keep:
        size = int(trained[i].size)
        np.subtract(trained[i].reshape(-1), start[i].reshape(-1), out=out[at : at + size])
        at += size
    return out


def finetune(
    trainer: TrainerBackend,
    batch: Callable[[int, int], Batch],
    *,
    steps: int,
    lr: float,
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """``steps`` SGD steps on the device's training examples (``batch(size, cursor)``), in
    order and wrapping; the number taken (fewer when cancelled)."""
    cursor = 0
    for done in range(steps):
        if cancelled():
            return done
        b = batch(trainer.batch_size, cursor)
        trainer.train_step(b.x, b.y, lr)
        cursor = b.next_cursor
    return steps


def personalize(
    trainer: TrainerBackend,
    personal: PersonalLayers,
    batch: Callable[[int, int], Batch],
    *,
    finetune_steps: int,
    lr: float,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Turn ``trainer`` (holding a global model) into this device's personalized model: its
    personal layers (``personal.names``, if any) over the global ones, then
    ``finetune_steps`` SGD steps on its training examples (``batch``)."""
    if personal.names:
        trainer.set_weights(personal.merge(trainer.get_weights(), trainer.weight_specs))
    if finetune_steps:
        finetune(trainer, batch, steps=finetune_steps, lr=lr, cancelled=cancelled)


def personalized_sums(sums: Mapping[str, float]) -> dict[str, float]:
    """An evaluation's sums under the personalized model's metric names (``eval_metrics``)."""
    return {PERSONALIZED_LOSS: sums[LOSS], PERSONALIZED_ACCURACY: sums[ACCURACY]}
