"""Central DP in the aggregation path: the committed delta carries N(0, (zC)^2) / weight."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.privacy.central import CentralNoise
from fedrt.coordinator.rounds.aggregation import RoundAggregation
from fedrt.coordinator.rounds.commands import Commit, RoundMetrics
from fedrt.coordinator.strategies import FedAvg, OptimizerState
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from tests.coordinator.round_harness import config

PARAMS, DEVICES, CLIP = 64, 20, 0.5


def _finish(noise: CentralNoise | None, deltas: np.ndarray) -> np.ndarray:
    cfg = config(secagg=False, rotate=False, weight_cap=1, goal_count=DEVICES, min_reports=4)
    spec = rm.UpdateSpec(params=PARAMS, clip_norm=CLIP, bits=16, weight_cap=1)
    agg = RoundAggregation(
        cfg,
        spec,
        weights=np.zeros(PARAMS),
        optimizer=FedAvg(),
        optimizer_state=OptimizerState(),
        central_noise=noise,
    )
    rng = np.random.default_rng(0)  # the same encoding for every call: only noise differs
    names = [f"d{i}" for i in range(DEVICES)]
    for name, d in zip(names, deltas, strict=True):
        vec = round_update.encode(d, 10, spec, rng, weighted=False)
        agg.add_plain(name, round_update.pack(vec, spec.bits))
    out = agg.finish(names, RoundMetrics())
    assert isinstance(out, Commit)
    return np.asarray(out.delta, dtype=np.float64)


def test_aggregate_noise_has_the_configured_std() -> None:
    deltas = np.random.default_rng(1).normal(size=(DEVICES, PARAMS))  # norms ~8 > CLIP
    clean = _finish(None, deltas)
    # Clipping bounds every contribution, so the clean mean lies within CLIP.
    assert np.linalg.norm(clean) <= CLIP + 1e-3
    z = 1.5
    noise = np.concatenate([
        _finish(CentralNoise(noise_multiplier=z, rng=np.random.default_rng(s)), deltas) - clean
        for s in range(30)
    ])  # fmt: skip
    expected = z * CLIP / DEVICES  # std on the sum, divided by the weight (= reports)
    assert abs(noise.std() / expected - 1) < 5 / np.sqrt(2 * noise.size)
    assert stats.kstest(noise / expected, "norm").pvalue > 1e-4


def test_noise_parameters_are_checked() -> None:
    with pytest.raises(BadRequestError):
        CentralNoise(noise_multiplier=0.0, rng=np.random.default_rng(0))
    noise = CentralNoise(noise_multiplier=1.0, rng=np.random.default_rng(0))
    assert noise.sum_std(2.0) == 2.0
    with pytest.raises(BadRequestError):
        noise.apply(np.zeros(3), weight=0.0, clip_norm=1.0)
