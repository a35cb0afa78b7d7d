"""Server-side evaluation on held-out data, and the centralized baseline, both on LiteRT."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest
from fedrt.simulation.datasets import Dataset


def _logits(
    model: LiteRTModel, manifest: Manifest, x: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    b = manifest.batch_size
    out = []
    for start in range(0, len(x), b):
        chunk = x[start : start + b]
        n = len(chunk)
        if n < b:  # the infer signature may be static: pad, then keep the real rows
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
        out.append(np.asarray(model.infer(chunk), np.float64)[:n])
    return np.concatenate(out)


def accuracy_and_loss(model: LiteRTModel, manifest: Manifest, data: Dataset) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier over ``data``."""
    logits = _logits(model, manifest, data.x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(data)), data.y].mean()
    accuracy = (logits.argmax(axis=1) == data.y).mean()
    return {"accuracy": float(accuracy), "loss": float(loss)}


class HeldOutEvaluator:
    """``Evaluator`` for the round driver: evaluates each candidate model on ``data``."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __call__(self, model: bytes, manifest: Manifest) -> Mapping[str, float]:
        return accuracy_and_loss(LiteRTModel(model, manifest, num_threads=1), manifest, self.data)


def centralized_baseline(
    model_bytes: bytes,
    manifest: Manifest,
    train: Dataset,
    test: Dataset,
    *,
    epochs: int,
    lr: float,
    seed: int,
) -> dict[str, float]:
    """The same model trained on the pooled data (what federation is compared with)."""
    model = LiteRTModel(model_bytes, manifest, num_threads=1)
    rng = np.random.default_rng(seed)
    b = manifest.batch_size
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for start in range(0, len(order) - b + 1, b):
            idx = order[start : start + b]
            model.train(train.x[idx], train.y[idx], lr)
    return accuracy_and_loss(model, manifest, test)
