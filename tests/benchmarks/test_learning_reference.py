"""``fedrt.benchmarks.learning_reference``: simulate's split, an exact gradient, and each
algorithm learning on an iid federation."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.benchmarks.learning_reference import ALGORITHMS, Federation, reference_rows, train
from fedrt.simulation.sim_config import SimConfig


def test_the_federation_is_simulates_split_of_digits() -> None:
    fed = Federation.like_simulate(50, "shards:2", seed=3)
    assert len(fed.x) == 50
    # simulate holds out a quarter, stratified (datasets.holdout_split): 450 of 1,797.
    assert len(fed.test_y) == 450
    assert sum(len(y) for y in fed.y) == 1797 - 450
    # Two shards of ~13 label-sorted examples per device: two labels, or a shard's boundary.
    assert all(len(np.unique(y)) <= 4 for y in fed.y)
    assert np.mean([len(np.unique(y)) for y in fed.y]) < 3
    again = Federation.like_simulate(50, "shards:2", seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(fed.y, again.y, strict=True))


def test_the_gradient_matches_finite_differences() -> None:
    fed = Federation.like_simulate(2, "iid", seed=0)
    rng = np.random.default_rng(1)
    w = rng.normal(scale=0.1, size=fed.size())
    x, y = fed.x[0][:8], fed.y[0][:8]

    def loss(v: np.ndarray) -> float:
        logits = x @ v[:640].reshape(64, 10) + v[640:]
        logits = logits - logits.max(axis=1, keepdims=True)
        return float(-(logits[np.arange(8), y] - np.log(np.exp(logits).sum(axis=1))).mean())

    g = fed.gradient(w, x, y)
    for i in (0, 123, 639, 645):
        e = np.zeros_like(w)
        e[i] = 1e-6
        assert g[i] == pytest.approx((loss(w + e) - loss(w - e)) / 2e-6, abs=1e-6)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_learns_an_iid_federation(algorithm: str) -> None:
    cfg = SimConfig(devices=10, per_round=5, rounds=8, partition="iid", local_epochs=1)
    fed = Federation.like_simulate(cfg.devices, cfg.partition, cfg.seed)
    accuracies = train(fed, algorithm, cfg, mu=0.01, adam_lr=0.05)
    assert len(accuracies) == 8
    assert accuracies[-1] > 0.8


def test_rows_name_rounds_to_target_or_none() -> None:
    cfg = SimConfig(devices=10, per_round=5, rounds=4, partition="iid", local_epochs=1)
    easy, hard = (reference_rows(["fedavg"], cfg, target=t, mu=0.0, adam_lr=0.01)[0]
                  for t in (0.5, 0.999))  # fmt: skip
    assert easy["rounds_to_target"] in (1, 2, 3, 4)
    assert hard["rounds_to_target"] is None
    assert easy["accuracy_final"] == hard["accuracy_final"]
