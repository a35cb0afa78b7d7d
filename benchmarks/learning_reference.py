"""The dirichlet cells of ``fedrt bench learning`` in plain numpy, on the same partition.

Where a cell misses the issue's target, this says whether the algorithm or fedrt is the cause:
softmax regression (the convex model of the SCAFFOLD paper's experiments) trained by FedAvg,
FedProx, FedAdam and SCAFFOLD (option II) with the simulation's hyperparameters, on exactly
the devices' examples ``fedrt simulate`` gives them (same seed, same holdout split, same
partition), a uniform sample of ``per_round`` devices per round, no SecAgg+, quantization or
clipping. Accuracy is on the same held-out quarter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.strategies.optimizers import FedAdam, OptimizerState
from fedrt.simulation import datasets
from fedrt.simulation.sim_config import SimConfig

__all__ = ["ALGORITHMS", "Federation", "reference_rows"]

ALGORITHMS = ("fedavg", "fedprox", "fedadam", "scaffold")
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Federation:
    """The devices' training examples and the held-out set, as simulate splits them."""

    x: list[F64]
    y: list[npt.NDArray[np.int64]]
    test_x: F64
    test_y: npt.NDArray[np.int64]
    classes: int

    @classmethod
    def like_simulate(cls, devices: int, partition: str, seed: int) -> Federation:
        data = datasets.load("digits", flat=True)
        # The order of draws is simulate's (simulation/runner.py): split, then partition.
        rng = np.random.default_rng(seed)
        train, test = datasets.holdout_split(data, rng)
        parts = datasets.partition(
            train, devices, datasets.Partition.parse(partition), rng, min_size=1
        )
        return cls(
            x=[train.x[p].astype(np.float64) for p in parts],
            y=[train.y[p].astype(np.int64) for p in parts],
            test_x=test.x.astype(np.float64),
            test_y=test.y.astype(np.int64),
            classes=data.classes,
        )

    def accuracy(self, w: F64) -> float:
        return float((self._logits(w, self.test_x).argmax(axis=1) == self.test_y).mean())

    def _logits(self, w: F64, x: F64) -> F64:
        features = x.shape[1]
        return (
            x @ w[: features * self.classes].reshape(features, self.classes)
            + w[features * self.classes :]
        )

    def gradient(self, w: F64, x: F64, y: npt.NDArray[np.int64]) -> F64:
        """Mean cross-entropy gradient of softmax regression, flat (kernel, then bias)."""
        logits = self._logits(w, x)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1.0
        p /= len(y)
        return np.concatenate([(x.T @ p).ravel(), p.sum(axis=0)])

    def size(self) -> int:
        return int(self.x[0].shape[1] + 1) * self.classes


def _local(
    fed: Federation,
    device: int,
    start: F64,
    cfg: SimConfig,
    rng: np.random.Generator,
    *,
    mu: float = 0.0,
    correction: F64 | None = None,
) -> tuple[F64, int]:
    """The device's model after local SGD (FedProx's term, SCAFFOLD's correction), and the
    number of steps it took."""
    w = start.copy()
    x, y = fed.x[device], fed.y[device]
    steps = 0
    for _ in range(cfg.local_epochs):
        order = rng.permutation(len(y))
        for at in range(0, len(y), cfg.batch_size):
            batch = order[at : at + cfg.batch_size]
            g = fed.gradient(w, x[batch], y[batch]) + mu * (w - start)
            w -= cfg.learning_rate * (g if correction is None else g + correction)
            steps += 1
    return w, steps


def train(
    fed: Federation, algorithm: str, cfg: SimConfig, *, mu: float, adam_lr: float
) -> list[float]:
    """Held-out accuracy after each of ``cfg.rounds`` rounds of ``algorithm``."""
    rng = np.random.default_rng(cfg.seed)
    n = len(fed.x)
    w = np.zeros(fed.size())
    c, ci = np.zeros_like(w), [np.zeros_like(w) for _ in range(n)]
    adam, state = FedAdam(server_lr=adam_lr), OptimizerState()
    accuracies = []
    for _ in range(cfg.rounds):
        chosen = rng.choice(n, size=cfg.per_round, replace=False)
        counts = np.array([len(fed.y[d]) for d in chosen], dtype=np.float64)
        deltas, variates = [], []
        for d in chosen:
            if algorithm == "scaffold":
                y, steps = _local(fed, d, w, cfg, rng, correction=c - ci[d])
                new_ci = ci[d] - c + (w - y) / (steps * cfg.learning_rate)
                variates.append(new_ci - ci[d])
                ci[d] = new_ci
            else:
                y, _ = _local(fed, d, w, cfg, rng, mu=mu if algorithm == "fedprox" else 0.0)
            deltas.append(y - w)
        mean = np.average(np.stack(deltas), axis=0, weights=counts)
        if algorithm == "fedadam":
            new, state = adam.apply(w.astype(np.float32), mean, state)
            w = new.astype(np.float64)
        else:
            w = w + cfg.server_lr * mean
        if algorithm == "scaffold":
            c = c + len(chosen) / n * np.mean(np.stack(variates), axis=0)
        accuracies.append(fed.accuracy(w))
    return accuracies


def reference_rows(
    algorithms: Sequence[str],
    cfg: SimConfig,
    *,
    target: float,
    mu: float,
    adam_lr: float,
) -> list[dict[str, object]]:
    """One row per algorithm: rounds to ``target``, accuracy halfway and at the end."""
    fed = Federation.like_simulate(cfg.devices, cfg.partition, cfg.seed)
    rows: list[dict[str, object]] = []
    for algorithm in algorithms:
        acc = train(fed, algorithm, cfg, mu=mu, adam_lr=adam_lr)
        reached = [i + 1 for i, a in enumerate(acc) if a >= target]
        rows.append({
            "algorithm": algorithm,
            "rounds_to_target": reached[0] if reached else None,
            "accuracy_mid": acc[cfg.rounds // 2 - 1] if cfg.rounds >= 2 else acc[-1],
            "accuracy_final": acc[-1],
        })  # fmt: skip
    return rows
