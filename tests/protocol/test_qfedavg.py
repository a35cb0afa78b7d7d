"""q-FedAvg: the devices' weighted updates, summed as SecAgg+ sums them, give the paper's step."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.protocol import qfedavg, round_update
from fedrt.protocol.errors import ParameterError
from fedrt.protocol.prg import KeyedUniforms
from fedrt.protocol.round_messages import UpdateSpec


def _devices(rng: np.random.Generator, n: int, params: int) -> tuple[list[np.ndarray], list[float]]:
    deltas = [rng.normal(0, 0.05, params) for _ in range(n)]
    losses = [float(x) for x in rng.uniform(0.2, 2.5, n)]
    return deltas, losses


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 3.0])
def test_the_weighted_mean_of_device_updates_is_the_papers_step(q: float) -> None:
    rng = np.random.default_rng(11)
    params, lr = 50, 0.05
    w = rng.normal(0, 1, params)
    deltas, losses = _devices(rng, 6, params)
    sent = [
        qfedavg.device_update(d, f, q, lr, qfedavg.WEIGHT_CAP)
        for d, f in zip(deltas, losses, strict=True)
    ]
    counts = np.array([c for _, c in sent], dtype=np.float64)
    mean = sum(c * v.astype(np.float64) for v, c in sent) / counts.sum()
    want = qfedavg.reference_step(w, [w + d for d in deltas], losses, q, lr)
    # Only the counts' rounding (1.5e-5 of b) and float32 vectors stand between the two.
    np.testing.assert_allclose(w + mean, want, rtol=0, atol=1e-5 * np.abs(want - w).max())


def test_the_step_survives_the_secagg_encoding() -> None:
    rng = np.random.default_rng(3)
    params, lr, q = 200, 0.05, 1.0
    spec = UpdateSpec(params=params, clip_norm=10.0, bits=16, weight_cap=qfedavg.WEIGHT_CAP,
                      rotation_seed=b"r" * 16)  # fmt: skip
    w = rng.normal(0, 1, params)
    deltas, losses = _devices(rng, 8, params)
    total = np.zeros(round_update.vector_length(spec), dtype=np.uint64)
    for i, (d, f) in enumerate(zip(deltas, losses, strict=True)):
        vector, count = qfedavg.device_update(d, f, q, lr, spec.weight_cap)
        ring = round_update.encode(vector, count, spec, KeyedUniforms(bytes([i]) * 32))
        total += ring.astype(np.uint64)
    mean, _weight = round_update.decode_sum(total, spec, 8)
    want = qfedavg.reference_step(w, [w + d for d in deltas], losses, q, lr)
    step = np.linalg.norm(want - w)
    assert step > 0
    # 16-bit stochastic rounding of 8 devices' weighted vectors: a few per cent of the step.
    assert np.linalg.norm(w + mean - want) < 0.05 * step


def test_q_zero_is_the_plain_mean_and_a_zero_loss_is_floored() -> None:
    d = [np.full(4, 1.0), np.full(4, 3.0)]
    sent = [qfedavg.device_update(x, 5.0, 0.0, 0.1, qfedavg.WEIGHT_CAP) for x in d]
    counts = [c for _, c in sent]
    assert counts[0] == counts[1]  # b = 1 for everyone at q = 0
    vector, count = qfedavg.device_update(np.ones(3), 0.0, 1.0, 0.1, qfedavg.WEIGHT_CAP)
    assert count >= 1
    assert np.isfinite(vector).all()
    with pytest.raises(ParameterError):
        qfedavg.device_update(np.ones(3), float("nan"), 1.0, 0.1, qfedavg.WEIGHT_CAP)


def test_a_large_h_is_capped_and_the_vector_matches_the_sent_weight() -> None:
    big = np.full(10, 10.0)  # ||d||^2 / lr = 1e4: b far above H_MAX
    vector, count = qfedavg.device_update(big, 1.0, 1.0, 0.1, qfedavg.WEIGHT_CAP)
    assert count == qfedavg.WEIGHT_CAP
    # count / cap * H_MAX times the vector is still F^q d.
    np.testing.assert_allclose(vector * qfedavg.H_MAX, big, rtol=1e-6)
