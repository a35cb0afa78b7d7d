"""A DP task's state between rounds: plans, charges, budget stops, rebuilt from the store."""

from __future__ import annotations

import dataclasses
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant

from fedrt.coordinator.api.views import task_view
from fedrt.coordinator.privacy.accounting import ACCOUNTING_ASSUMPTION, PrivacyBudgetExceeded
from fedrt.coordinator.privacy.config import (
    AdaptiveClip,
    AdaptiveClipSettings,
    DpConfig,
    DpMode,
    FixedClip,
)
from fedrt.coordinator.privacy.rounds import RoundDp, TaskPrivacy, training_rounds
from fedrt.coordinator.records import RoundRecord, RoundStatus
from fedrt.coordinator.tasks.spec import TaskSpec
from tests.coordinator.store_conformance import sha, task

CENTRAL = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, clip=FixedClip(fixed=2.0))


def _independent_epsilon(z: float, n: int, k: int, rounds: int, delta: float) -> float:
    """dp_accounting straight from its documentation: no caching, default orders."""
    acc = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        n, k, dp_accounting.GaussianDpEvent(z / 2.0)
    )
    acc.compose(event, rounds)
    return float(acc.get_epsilon(delta))


def test_training_rounds_leave_out_evaluation_rounds() -> None:
    assert training_rounds(100, 0) == 100
    assert training_rounds(12, 5) == 10  # rounds 6 and 12 evaluate
    assert training_rounds(1, 1) == 1


def test_central_plan_charge_and_epsilon_match_dp_accounting() -> None:
    p = TaskPrivacy(CENTRAL, train_rounds=10)
    assert p.epsilon == 0.0
    eps = []
    for _ in range(3):
        plan = p.plan(population=1000, cohort=100)
        assert (plan.clip, plan.update_noise_multiplier, plan.sum_std) == (2.0, 1.0, 2.0)
        noise = p.central_noise(plan, np.random.default_rng(0))
        assert noise is not None
        assert noise.noise_multiplier == 1.0
        eps.append(p.charge(plan))
    assert eps == sorted(eps)
    assert plan.round_epsilon == pytest.approx(eps[0])  # one round alone
    assert eps[-1] == pytest.approx(_independent_epsilon(1.0, 1000, 100, 3, 1e-5), rel=1e-3)


def test_a_round_is_charged_for_the_pool_it_really_sampled_from() -> None:
    p = TaskPrivacy(CENTRAL, train_rounds=10)
    plan = p.plan(population=400, cohort=100)  # the most that could check in
    thin = p.as_sampled(plan, pool=150, cohort=100)
    assert (thin.privacy.population, thin.privacy.cohort) == (150, 100)
    assert thin.privacy.noise_multiplier == plan.privacy.noise_multiplier
    assert thin.round_epsilon > plan.round_epsilon  # a thinner pool costs more
    assert p.charge(thin) == pytest.approx(_independent_epsilon(1.0, 150, 100, 1, 1e-5), rel=1e-3)
    # A pool smaller than a cohort: everyone was taken, no amplification.
    assert p.as_sampled(plan, pool=30, cohort=30).privacy.population == 30


def test_distributed_mode_leaves_noise_to_the_devices() -> None:
    dist = DpConfig(mode=DpMode.DISTRIBUTED, noise_multiplier=1.0)
    p = TaskPrivacy(dist, train_rounds=1)
    assert p.central_noise(p.plan(population=10, cohort=5), np.random.default_rng(0)) is None


def test_fewer_devices_than_a_cohort_are_charged_without_amplification() -> None:
    plan = TaskPrivacy(CENTRAL, train_rounds=1).plan(population=3, cohort=10)
    assert (plan.privacy.population, plan.privacy.cohort) == (10, 10)


def test_target_epsilon_is_calibrated_once_and_met_after_the_last_round() -> None:
    cfg = DpConfig(mode=DpMode.CENTRAL, target_epsilon=4.0, delta=1e-5)
    p = TaskPrivacy(cfg, train_rounds=5)
    plans = [p.plan(population=2000, cohort=100) for _ in range(5)]
    assert len({q.privacy.noise_multiplier for q in plans}) == 1
    for q in plans:
        p.charge(q)
    assert 3.9 < p.epsilon <= 4.0


def test_budget_stops_before_a_round_would_exceed_it() -> None:
    cfg = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=2.0, budget_epsilon=2.0)
    p = TaskPrivacy(cfg, train_rounds=100)
    charged = 0
    for _ in range(100):
        try:
            plan = p.plan(population=1000, cohort=50)
        except PrivacyBudgetExceeded:
            break  # refused before anything was charged
        p.charge(plan)
        charged += 1
    assert 1 <= charged < 100
    with pytest.raises(PrivacyBudgetExceeded, match="privacy budget exhausted") as info:
        p.plan(population=1000, cohort=50)
    assert info.value.budget == 2.0
    assert info.value.epsilon > 2.0 >= p.epsilon


def test_rebuilt_from_stored_rounds_charges_only_committed_ones() -> None:
    adaptive = AdaptiveClipSettings(quantile=0.5, initial=0.3)
    cfg = DpConfig(mode=DpMode.CENTRAL, target_epsilon=5.0, clip=AdaptiveClip(adaptive=adaptive))
    live = TaskPrivacy(cfg, train_rounds=4)
    rounds = []
    for no, status in enumerate([RoundStatus.COMMITTED, RoundStatus.ABANDONED] * 2, start=1):
        plan = live.plan(population=500, cohort=40)
        if status is RoundStatus.COMMITTED:
            live.charge(plan)
        rounds.append(
            RoundRecord(
                task_id="t",
                round_no=no,
                stage="x",
                status=status,
                model_sha256="0" * 64,
                started_at=0.0,
                detail={"kind": "train", "dp": plan.to_json()},
            )
        )
    rounds.append(
        RoundRecord(task_id="t", round_no=5, stage="x", status=RoundStatus.COMMITTED,
                    model_sha256="0" * 64, started_at=0.0, detail={"kind": "evaluate"})
    )  # fmt: skip
    again = TaskPrivacy.from_rounds(cfg, rounds, train_rounds=4, clip=0.7)
    assert again.epsilon == live.epsilon > 0
    assert len(again.accountant.rounds) == 2
    assert again.clip == 0.7
    nxt = again.plan(population=500, cohort=40)
    assert (
        nxt.privacy.noise_multiplier
        == live.plan(population=500, cohort=40).privacy.noise_multiplier
    )
    assert RoundDp.from_json(nxt.to_json()) == nxt


def test_adaptive_clip_splits_the_noise_and_moves_toward_the_quantile() -> None:
    clip = AdaptiveClip(adaptive=AdaptiveClipSettings(initial=1.0))
    cfg = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, clip=clip)
    p = TaskPrivacy(cfg, train_rounds=10)
    plan = p.plan(population=1000, cohort=100)
    assert plan.count_std == 5.0  # K / 20
    assert plan.update_noise_multiplier == pytest.approx(1 / math.sqrt(1 - 1 / 100))
    assert p.adapt_clip(1.0) < 1.0  # everyone unclipped: shrink
    low = p.clip
    assert p.adapt_clip(0.0) > low  # everyone clipped: grow
    tiny = p.plan(population=1000, cohort=4)
    assert tiny.count_std == 1.0  # at least z
    fixed = TaskPrivacy(CENTRAL, train_rounds=1)
    assert fixed.adapt_clip(1.0) == 2.0


def test_the_api_says_which_sampling_a_dp_task_is_accounted_for() -> None:
    dp_on = TaskSpec(dp=CENTRAL).to_json()
    record = dataclasses.replace(task("t", sha("m")), spec=dp_on)
    view = task_view(record)
    assert view["dp_accounting"] == ACCOUNTING_ASSUMPTION
    assert "uniformly without replacement" in ACCOUNTING_ASSUMPTION
    assert "checked in during the round's check-in window" in ACCOUNTING_ASSUMPTION
    plain = dataclasses.replace(record, spec=TaskSpec().to_json())
    assert task_view(plain)["dp_accounting"] is None
