"""The RDP accountant: equal to an independent dp_accounting computation, budgets enforced."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from fedrt.coordinator.errors import BadRequestError, ConflictError
from fedrt.coordinator.privacy.accounting import (
    ACCOUNTING_ASSUMPTION,
    PrivacyAccountant,
    PrivacyBudgetExceeded,
    RoundPrivacy,
    calibrate_noise_multiplier,
    round_epsilon,
)

ROUND = RoundPrivacy(population=1000, cohort=100, noise_multiplier=2.0)


def _independent(population: int, cohort: int, z: float, rounds: int, delta: float) -> float:
    """Straight from dp_accounting: fixed-size sampling w/o replacement, replace-one,
    sensitivity 2C of a sum of C-clipped updates."""
    acc = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        population, cohort, dp_accounting.GaussianDpEvent(z / 2)
    )
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(acc.get_epsilon(delta))


def test_cumulative_epsilon_equals_an_independent_computation() -> None:
    acc = PrivacyAccountant(delta=1e-5)
    assert acc.epsilon == 0.0
    per_round = []
    for _ in range(20):
        per_round.append(acc.record_round(ROUND))
    assert per_round == sorted(per_round)
    assert acc.epsilon == pytest.approx(_independent(1000, 100, 2.0, 20, 1e-5), rel=1e-9)
    assert per_round[0] == pytest.approx(round_epsilon(ROUND, 1e-5), rel=1e-9)
    assert per_round[0] == pytest.approx(_independent(1000, 100, 2.0, 1, 1e-5), rel=1e-9)


def test_changing_cohorts_compose_like_a_composed_event() -> None:
    rounds = [
        ROUND,
        RoundPrivacy(population=1200, cohort=130, noise_multiplier=2.0),
        RoundPrivacy(population=900, cohort=100, noise_multiplier=3.0),
    ]
    acc = PrivacyAccountant(delta=1e-6, rounds=rounds)
    ref = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    for r in rounds:
        ref.compose(
            dp_accounting.SampledWithoutReplacementDpEvent(
                r.population, r.cohort, dp_accounting.GaussianDpEvent(r.noise_multiplier / 2)
            )
        )
    assert acc.epsilon == pytest.approx(float(ref.get_epsilon(1e-6)), rel=1e-9)
    assert acc.rounds == tuple(rounds)


def test_full_participation_is_the_plain_gaussian_mechanism() -> None:
    """K = N: no amplification; RDP of a Gaussian with sensitivity 2C is 2 a / z^2, so the
    epsilon lies below the classic conversion min_a 2 a / z^2 + log(1/delta) / (a - 1)."""
    z, delta = 8.0, 1e-5
    eps = round_epsilon(RoundPrivacy(population=50, cohort=50, noise_multiplier=z), delta)
    classic = min(2 * a / z**2 + math.log(1 / delta) / (a - 1) for a in range(2, 2000))
    assert 0.5 * classic < eps <= classic


def test_budget_check_stops_before_exceeding() -> None:
    acc = PrivacyAccountant(delta=1e-5)
    budget = 1.5 * round_epsilon(ROUND, 1e-5)
    assert not acc.would_exceed(budget, ROUND)
    acc.check_budget(budget, ROUND)
    acc.record_round(ROUND)
    ran = 1
    for _ in range(50):
        if acc.would_exceed(budget, ROUND):
            break
        acc.record_round(ROUND)
        ran += 1
    assert acc.epsilon <= budget < acc.epsilon_after(ROUND)
    assert ran < 50
    with pytest.raises(PrivacyBudgetExceeded, match="budget exhausted") as info:
        acc.check_budget(budget, ROUND)
    assert isinstance(info.value, ConflictError)
    assert info.value.budget == budget
    assert info.value.epsilon > budget
    assert len(acc.rounds) == ran  # a refused check records nothing


def test_calibration_meets_the_target_epsilon() -> None:
    z = calibrate_noise_multiplier(
        target_epsilon=4.0, delta=1e-5, rounds=30, population=1000, cohort=100
    )
    assert _independent(1000, 100, z, 30, 1e-5) <= 4.0
    assert _independent(1000, 100, z / 1.01, 30, 1e-5) > 4.0


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(BadRequestError):
        RoundPrivacy(population=10, cohort=11, noise_multiplier=1.0)
    with pytest.raises(BadRequestError):
        RoundPrivacy(population=10, cohort=5, noise_multiplier=0.0)
    with pytest.raises(BadRequestError):
        PrivacyAccountant(delta=0.0)
    with pytest.raises(BadRequestError):
        PrivacyAccountant(delta=1e-5).would_exceed(math.nan, ROUND)
    assert "without replacement" in ACCOUNTING_ASSUMPTION
