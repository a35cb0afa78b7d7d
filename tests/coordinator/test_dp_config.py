"""DpConfig validation and adaptive clipping (convergence to the target quantile)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.privacy.config import (
    AdaptiveClipSettings,
    DpConfig,
    DpMode,
    FixedClip,
    adaptive_clip_update,
    default_count_std,
    noised_unclipped_fraction,
    split_noise_multiplier,
)


def test_defaults_are_no_dp() -> None:
    cfg = DpConfig()
    assert cfg.mode is DpMode.NONE
    assert not cfg.enabled
    assert cfg.to_mapping() == {"mode": "none", "delta": 1e-5, "clip": {"fixed": 1.0}}


@pytest.mark.parametrize(
    "raw",
    [
        {"mode": "central", "noise_multiplier": 1.1, "delta": 1e-6, "clip": {"fixed": 0.5}},
        {"mode": "distributed", "target_epsilon": 4, "budget_epsilon": 8.0,
         "clip": {"adaptive": {"quantile": 0.6, "lr": 0.1, "initial": 0.2}},
         "distributed_noise": "skellam"},
        {"mode": "none", "clip": {"fixed": 3.0}},
    ],
)  # fmt: skip
def test_mapping_round_trip(raw: dict[str, Any]) -> None:
    cfg = DpConfig.from_mapping(raw)
    assert DpConfig.from_mapping(cfg.to_mapping()) == cfg
    assert cfg.mode.value == raw["mode"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mode": "central"}, "exactly one of noise_multiplier or target_epsilon"),
        ({"mode": "central", "noise_multiplier": 1, "target_epsilon": 2}, "exactly one"),
        ({"mode": "none", "noise_multiplier": 1.0}, "mode 'none' adds no noise"),
        ({"mode": "none", "budget_epsilon": 3.0}, "budget_epsilon cannot be set"),
        ({"mode": "loud"}, "mode must be one of"),
        ({"mode": "central", "noise_multiplier": -1.0}, "noise_multiplier must be > 0"),
        ({"mode": "central", "noise_multiplier": math.inf}, "noise_multiplier must be finite"),
        ({"mode": "central", "noise_multiplier": True}, "noise_multiplier must be float"),
        ({"mode": "central", "noise_multiplier": 1.0, "delta": 0}, "delta must be > 0"),
        ({"mode": "central", "noise_multiplier": 1.0, "delta": 1.5}, "delta must be < 1"),
        ({"mode": "central", "target_epsilon": 9.0, "budget_epsilon": 8.0}, "exceeds budget"),
        ({"mode": "central", "noise_multiplier": 1.0, "clip": {"fixed": 0}}, "clip.fixed"),
        ({"mode": "central", "noise_multiplier": 1.0, "clip": {"fixed": 1, "adaptive": {}}},
         "clip must be {fixed = C} or {adaptive"),
        ({"mode": "central", "noise_multiplier": 1.0,
          "clip": {"adaptive": {"quantile": 1.0}}}, "clip.adaptive.quantile must be < 1"),
        ({"mode": "central", "noise_multiplier": 1.0,
          "clip": {"adaptive": {"rate": 1.0}}}, "unknown key: dp.clip.adaptive.rate"),
        ({"mode": "central", "noise_multiplier": 1.0, "epsilon": 3}, "unknown key: dp.epsilon"),
        ({"mode": "distributed", "noise_multiplier": 1.0, "distributed_noise": "laplace"},
         "distributed_noise"),
    ],
)  # fmt: skip
def test_invalid_combinations_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        DpConfig.from_mapping(raw)


def test_task_level_checks() -> None:
    dist = DpConfig(mode=DpMode.DISTRIBUTED, noise_multiplier=1.0)
    with pytest.raises(BadRequestError, match="set secagg = true"):
        dist.check_task(secagg=False, mean_aggregation=True, population=1000)
    dist.check_task(secagg=True, mean_aggregation=True, population=1000)
    central = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, delta=1e-3)
    with pytest.raises(BadRequestError, match="below 1 / population"):
        central.check_task(secagg=False, mean_aggregation=True, population=5000)
    with pytest.raises(BadRequestError, match="mean-based"):
        central.check_task(secagg=False, mean_aggregation=False, population=100)
    DpConfig().check_task(secagg=False, mean_aggregation=False, population=10**9)


def test_split_noise_keeps_the_total_privacy() -> None:
    z, s = 1.0, default_count_std(100)
    zu = split_noise_multiplier(z, s)
    assert zu > z
    assert zu**-2 + (2 * s) ** -2 == pytest.approx(z**-2)
    with pytest.raises(BadRequestError, match="count_std > z / 2"):
        split_noise_multiplier(4.0, 1.0)


def test_clip_update_direction() -> None:
    assert adaptive_clip_update(1.0, 0.9, quantile=0.5, lr=0.2) < 1.0
    assert adaptive_clip_update(1.0, 0.1, quantile=0.5, lr=0.2) > 1.0
    assert adaptive_clip_update(1.0, 0.5, quantile=0.5, lr=0.2) == 1.0
    with pytest.raises(BadRequestError):
        adaptive_clip_update(0.0, 0.5, quantile=0.5, lr=0.2)


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_adaptive_clipping_converges_to_the_target_quantile(quantile: float) -> None:
    """Synthetic population of 2,000 devices with log-normal update norms; cohorts of 100;
    noised counts. After 300 rounds C sits at the population's norm quantile."""
    rng = np.random.default_rng(int(quantile * 10))
    norms = rng.lognormal(mean=0.0, sigma=0.7, size=2000)
    target = float(np.quantile(norms, quantile))
    cfg = AdaptiveClipSettings(quantile=quantile, lr=0.2, initial=0.01)
    clip, tail = cfg.initial, []
    for step in range(300):
        cohort = norms[rng.choice(norms.size, 100, replace=False)]
        b = noised_unclipped_fraction(int((cohort <= clip).sum()), 100, default_count_std(100), rng)
        clip = adaptive_clip_update(clip, b, quantile=cfg.quantile, lr=cfg.lr)
        if step >= 200:
            tail.append(clip)
    assert abs(float(np.mean(tail)) / target - 1) < 0.1
    reached = float(np.mean(norms <= np.mean(tail)))
    assert abs(reached - quantile) < 0.05


def test_fixed_clip_is_the_default() -> None:
    assert isinstance(DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0).clip, FixedClip)
