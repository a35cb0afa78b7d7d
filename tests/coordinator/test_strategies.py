"""Server optimizers and robust aggregators against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.strategies import (
    AGGREGATORS,
    OPTIMIZERS,
    AggregationError,
    CoordinateMedian,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    Krum,
    OptimizerState,
    TrimmedMean,
    WeightedMean,
)


def test_fedavg_adds_the_scaled_delta() -> None:
    new, state = FedAvg().apply(np.array([1.0, 2.0]), np.array([0.5, -1.0]), OptimizerState())
    assert new.dtype == np.float32
    np.testing.assert_array_equal(new, [1.5, 1.0])
    assert state.rounds == 1
    new, _ = FedAvg(server_lr=0.5).apply(np.array([1.0, 2.0]), np.array([0.5, -1.0]), state)
    np.testing.assert_array_equal(new, [1.25, 1.5])


def test_fedavgm_accumulates_momentum_over_rounds() -> None:
    opt = FedAvgM(momentum=0.9)
    w1, s1 = opt.apply(np.zeros(2), np.array([1.0, 0.0]), OptimizerState())
    np.testing.assert_allclose(w1, [1.0, 0.0])
    w2, s2 = opt.apply(w1, np.array([0.0, 1.0]), s1)
    # m = 0.9 * [1, 0] + [0, 1] = [0.9, 1]; w = [1, 0] + m
    np.testing.assert_allclose(w2, [1.9, 1.0], rtol=1e-6)
    assert s2.momentum is not None
    np.testing.assert_allclose(s2.momentum, [0.9, 1.0])


ADAPTIVE = dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)


def test_fedadam_first_round_by_hand() -> None:
    new, state = FedAdam(**ADAPTIVE).apply(np.zeros(1), np.array([2.0]), OptimizerState())
    # m = 0.1 * 2 = 0.2; v = 0.99 * tau^2 + 0.01 * 4 = 0.040099
    assert state.second_moment is not None
    assert state.second_moment[0] == pytest.approx(0.040099)
    assert new[0] == pytest.approx(0.1 * 0.2 / (math.sqrt(0.040099) + 0.01), rel=1e-6)
    assert new[0] == pytest.approx(0.0951265, rel=1e-5)


def test_fedyogi_and_fedadagrad_second_moments_by_hand() -> None:
    _, yogi = FedYogi(**ADAPTIVE).apply(np.zeros(1), np.array([2.0]), OptimizerState())
    _, ada = FedAdagrad(**ADAPTIVE).apply(np.zeros(1), np.array([2.0]), OptimizerState())
    assert yogi.second_moment is not None
    assert ada.second_moment is not None
    # Yogi: v0 < d^2, so v grows by (1 - 0.99) * 4; Adagrad: v grows by the full 4.
    assert yogi.second_moment[0] == pytest.approx(1e-4 + 0.04)
    assert ada.second_moment[0] == pytest.approx(1e-4 + 4.0)


def test_fedyogi_shrinks_v_when_the_delta_is_small() -> None:
    opt = FedYogi(**ADAPTIVE)
    state = OptimizerState(rounds=3, momentum=np.array([0.0]), second_moment=np.array([1.0]))
    w, s = opt.apply(np.array([5.0]), np.array([0.5]), state)
    assert s.second_moment is not None
    # v = 1 - 0.01 * 0.25 * sign(1 - 0.25) = 0.9975; m = 0.05
    assert s.second_moment[0] == pytest.approx(0.9975)
    assert w[0] == pytest.approx(5.0 + 0.1 * 0.05 / (math.sqrt(0.9975) + 0.01), rel=1e-6)
    assert s.rounds == 4


def test_stateful_optimizer_refuses_a_model_of_another_shape() -> None:
    state = OptimizerState(momentum=np.zeros(3), second_moment=np.ones(3))
    with pytest.raises(AggregationError, match="changed shape"):
        FedAdam().apply(np.zeros(2), np.zeros(2), state)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_rejects_bad_input(name: str) -> None:
    opt = OPTIMIZERS[name]()
    with pytest.raises(AggregationError, match="NaN"):
        opt.apply(np.zeros(2), np.array([np.nan, 0.0]), OptimizerState())
    with pytest.raises(AggregationError, match="values"):
        opt.apply(np.zeros(2), np.zeros(3), OptimizerState())
    with pytest.raises(AggregationError, match="flat"):
        opt.apply(np.zeros((2, 2)), np.zeros((2, 2)), OptimizerState())


def test_optimizer_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        FedAvg(server_lr=0.0)
    with pytest.raises(ConfigError):
        FedAvgM(momentum=1.0)
    with pytest.raises(ConfigError):
        FedAdam(tau=-1.0)
    with pytest.raises(ConfigError):
        FedYogi(beta2=float("nan"))


def test_weighted_mean_by_hand() -> None:
    u = np.array([[1.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(WeightedMean().aggregate(u, np.array([1.0, 3.0])), [2.5, 3.0])
    np.testing.assert_allclose(WeightedMean().aggregate(u), [2.0, 2.0])
    with pytest.raises(AggregationError):
        WeightedMean().aggregate(u, np.array([0.0, 0.0]))
    with pytest.raises(AggregationError):
        WeightedMean().aggregate(u, np.array([1.0]))


def test_median_ignores_one_outlier() -> None:
    u = np.array([[1.0, 10.0], [2.0, 20.0], [100.0, -5.0]])
    np.testing.assert_array_equal(CoordinateMedian().aggregate(u), [2.0, 10.0])


def test_trimmed_mean_by_hand() -> None:
    u = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    # floor(0.2 * 5) = 1 dropped per side: mean(2, 3, 4) = 3
    assert TrimmedMean(fraction=0.2).aggregate(u)[0] == pytest.approx(3.0)
    assert TrimmedMean(fraction=0.0).aggregate(u)[0] == pytest.approx(22.0)
    with pytest.raises(ConfigError):
        TrimmedMean(fraction=0.5)


def test_krum_scores_and_selection_by_hand() -> None:
    u = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0], [3.0, 3.0]])
    krum = Krum(byzantine=1)
    # n - f - 2 = 2 nearest: [0,0] -> 1 + 1; [1,0] -> 1 + 2; [0,1] -> 1 + 2;
    # [3,3] -> 13 + 13; the outlier -> (97^2 + 97^2) + (99^2 + 100^2).
    scores = krum.scores(u)
    np.testing.assert_allclose(scores[:3], [2.0, 3.0, 3.0])
    assert scores[4] == pytest.approx(26.0)
    assert scores[3] == pytest.approx(2 * 97.0**2 + 99.0**2 + 100.0**2)
    np.testing.assert_array_equal(krum.aggregate(u), [0.0, 0.0])
    np.testing.assert_allclose(Krum(byzantine=1, select=3).aggregate(u), [1 / 3, 1 / 3])


def test_krum_needs_enough_updates() -> None:
    with pytest.raises(AggregationError, match="at least 5"):
        Krum(byzantine=1).aggregate(np.zeros((4, 2)))
    with pytest.raises(AggregationError, match="select"):
        Krum(byzantine=0, select=4).aggregate(np.zeros((3, 2)))


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_rejects_garbage(name: str) -> None:
    agg = AGGREGATORS[name]()
    with pytest.raises(AggregationError):
        agg.aggregate(np.zeros((0, 3)))
    with pytest.raises(AggregationError):
        agg.aggregate(np.array([[np.inf, 0.0]] * 5))
    with pytest.raises(AggregationError):
        agg.aggregate(np.zeros(5))
