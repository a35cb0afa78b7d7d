"""An in-memory TrainerBackend twin: numpy linear regression whose steps take clock time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.sdk.clock import ManualClock
from fedrt.sdk.errors import ModelError, TrainStepFailed
from fedrt.sdk.trainer import TensorSpec, TrainerBackend

Array = npt.NDArray[Any]


class FakeTrainer(TrainerBackend):
    """y ≈ x @ w + b by SGD on MSE; each step advances ``clock`` by ``step_s``."""

    def __init__(
        self,
        *,
        features: int = 3,
        batch: int = 4,
        clock: ManualClock | None = None,
        step_s: float = 1.0,
        fail_at_step: int | None = None,
    ) -> None:
        self._w = np.zeros(features, np.float32)
        self._b = np.zeros(1, np.float32)
        self._batch = batch
        self._features = features
        self._clock = clock
        self._step_s = step_s
        self.fail_at_step = fail_at_step
        self.steps = 0
        self.batches_seen: list[Array] = []

    @property
    def batch_size(self) -> int:
        return self._batch

    @property
    def x_spec(self) -> TensorSpec:
        return TensorSpec(name="x", shape=(self._batch, self._features), dtype="float32")

    @property
    def y_spec(self) -> TensorSpec:
        return TensorSpec(name="y", shape=(self._batch,), dtype="float32")

    @property
    def weight_specs(self) -> tuple[TensorSpec, ...]:
        return (
            TensorSpec(name="w", shape=(self._features,), dtype="float32"),
            TensorSpec(name="b", shape=(1,), dtype="float32"),
        )

    @property
    def supports_mu(self) -> bool:
        return False

    def train_step(self, x: Array, y: Array, lr: float, mu: float | None = None) -> float:
        if self._clock is not None:
            self._clock.advance(self._step_s)
        if self.fail_at_step is not None and self.steps == self.fail_at_step:
            self._w += 1000.0  # a partial update before the failure, as LiteRT can leave
            raise TrainStepFailed("injected failure")
        err = x @ self._w + self._b[0] - y
        loss = float(np.mean(err**2))
        self._w -= lr * (2 / len(y)) * (x.T @ err).astype(np.float32)
        self._b -= lr * np.float32(2 * np.mean(err))
        self.steps += 1
        self.batches_seen.append(np.array(x))
        return loss

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        err = x @ self._w + self._b[0] - y
        return float(np.mean(err**2)), 0

    def infer(self, x: Array) -> Array:
        return np.asarray(x @ self._w + self._b[0])

    def get_weights(self) -> list[Array]:
        return [self._w.copy(), self._b.copy()]

    def set_weights(self, weights: Sequence[Array]) -> None:
        if len(weights) != 2:
            raise ModelError("expected 2 weight tensors")
        self._w = np.array(weights[0], np.float32)
        self._b = np.array(weights[1], np.float32)
