"""Gated-rollout fixtures: a held-out set the base MLP classifies perfectly, a fleet whose
devices evaluate on it, and a trainer with one hostile device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.models.evaluator import HeldOutEvaluator, load_held_out
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest
from fedrt.sdk import participant_commands as pc
from tests.coordinator.driver_harness import Fleet, Trainer
from tests.coordinator.live_round import MODEL_DIR

HOSTILE = "dev-06"
EXAMPLES = 61  # not a multiple of the model's batch of 8: the tail is evaluated too


def base_labelled(path: Path, n: int = EXAMPLES, seed: int = 5) -> Path:
    """An .npz whose labels are the base model's own predictions: its accuracy is 1.0, and a
    version whose weights moved far from it scores about chance (0.25 for 4 classes)."""
    manifest = Manifest.load(MODEL_DIR)
    model = LiteRTModel((MODEL_DIR / manifest.model_file).read_bytes(), manifest, num_threads=1)
    x = np.random.default_rng(seed).normal(0.0, 1.0, (n, *manifest.input.shape))
    x = x.astype(np.float32)
    b = manifest.batch_size
    padded = np.concatenate([x, np.zeros((-n % b, *x.shape[1:]), np.float32)])
    logits = np.concatenate([model.infer(padded[i : i + b]) for i in range(0, len(padded), b)])
    np.savez(path, x=x, y=logits[:n].argmax(axis=1).astype(np.int32))
    return path


def poison_in(rounds: set[int], scale: float = 100.0) -> Trainer:
    """Honest devices send nothing new; ``HOSTILE`` sends an update of norm ``scale`` in
    ``rounds`` (within a clip_norm of at least ``scale``: the protocol lets it through)."""

    def train(device_id: str, round_id: int, w: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        if device_id != HOSTILE or round_id not in rounds:
            return np.zeros(w.size)
        direction = np.random.default_rng(round_id).normal(0.0, 1.0, w.size)
        return scale * direction / np.linalg.norm(direction)

    return train


class EvaluatingFleet(Fleet):
    """A ``Fleet`` whose devices answer evaluation rounds (each on ``data``, reporting sums
    as the SDK does) and that records every model a plan sent a device."""

    def __init__(self, n: int, trainer: Trainer, data: Path) -> None:
        super().__init__(n, trainer)
        self.evaluator = HeldOutEvaluator(load_held_out(data))
        self.planned: list[tuple[int, str]] = []  # (round, model sha256) of each plan

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        for c in commands:  # one by one, in order, as the harness does
            if isinstance(c, pc.Train | pc.Evaluate):
                self.planned.append((c.plan.round_id, c.plan.model.sha256))
            if not isinstance(c, pc.Evaluate):
                super()._device(device_id, [c])
                continue
            sha = c.plan.model.sha256
            manifest = Manifest.from_dict(self.svc.store.get_model(sha).manifest)
            figures = self.evaluator(self.svc.catalog.blobs.read(sha), manifest)
            n = len(self.evaluator.data)
            sums = {"accuracy": figures["accuracy"] * n, "loss": figures["loss"] * n}
            super()._device(device_id, self.devices[device_id].evaluation_done(n, sums, self.now))


__all__ = ["EXAMPLES", "HOSTILE", "EvaluatingFleet", "base_labelled", "poison_in"]
