"""Multi-Krum, Bulyan and the norm-outlier count: hand-computed cases and an attack."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.strategies import (
    AggregationError,
    Bulyan,
    CoordinateMedian,
    Krum,
    TrimmedMean,
    WeightedMean,
    norm_outliers,
)

LINE = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [100.0], [-100.0]])


def test_multi_krum_with_f_and_m_by_hand() -> None:
    # f = 2: each value's 3 nearest. 0 -> 1+4+9 = 14, 1, 2, 3 -> 6 each, 4 -> 14, the two
    # far ones ~ 3e4: m = 3 averages 1, 2, 3 and leaves 4 updates out.
    krum = Krum(byzantine=2, select=3)
    np.testing.assert_allclose(krum.scores(LINE)[:5], [14.0, 6.0, 6.0, 6.0, 14.0])
    assert list(krum.chosen(LINE)) == [1, 2, 3]
    delta, discarded = krum.robust(LINE)
    np.testing.assert_allclose(delta, [2.0])
    assert discarded == 4
    with pytest.raises(AggregationError, match="at most 5"):
        Krum(byzantine=2, select=6).robust(LINE)
    with pytest.raises(AggregationError, match="at least 9"):
        Krum(byzantine=3).robust(LINE)
    with pytest.raises(ConfigError):
        Krum(byzantine=-1)
    with pytest.raises(ConfigError):
        Krum(select=0)


def test_bulyan_by_hand() -> None:
    # n = 7, f = 1: Krum picks theta = 5 one at a time (k = max(1, left - 3) nearest):
    #   all 7, k = 4: (0,5) 26+29+34+41, (1,0) 1+4+9+26 = 40, (2,0) 1+1+4+29 = 35 <- pick
    #   6 left, k = 3: (1,0) 26+4+9 = 39, (3,0) 1+4+34 = 39 -> (1,0), the earlier
    #   5 left, k = 2: (3,0) 1+34 = 35 <- pick; 4 left, k = 1: (0,5) 41 = (4,0) 41 -> (0,5)
    #   3 left, k = 1: (4,0) 96^2 = (100,0) 96^2 -> (4,0).
    # Then beta = 3 per coordinate nearest the median: x: 2, 1, 3 -> 2; y: 0, 0, 0 -> 0.
    u = LINE @ np.array([[1.0, 0.0]])
    u[0, 1] = 5.0
    bulyan = Bulyan(byzantine=1)
    assert bulyan.selected(u) == [2, 1, 3, 0, 4]
    delta, discarded = bulyan.robust(u)
    np.testing.assert_allclose(delta, [2.0, 0.0])
    assert discarded == 2
    np.testing.assert_allclose(bulyan.aggregate(u), delta)
    with pytest.raises(AggregationError, match="at least 11"):
        Bulyan(byzantine=2).robust(u)
    with pytest.raises(ConfigError):
        Bulyan(byzantine=True)


def test_coordinate_rules_report_the_values_dropped_per_coordinate() -> None:
    assert TrimmedMean(fraction=0.2).robust(LINE)[1] == 2  # floor(0.2 * 7) per side
    assert CoordinateMedian().robust(LINE)[1] == 6
    assert CoordinateMedian().robust(LINE[:6])[1] == 4  # the mean of the middle two
    assert WeightedMean().robust(LINE)[1] == 0


def test_norm_outliers_by_hand() -> None:
    # median 1.025, MAD 0.05: 10 scores 0.6745 * 8.975 / 0.05 = 121 > 3.5; 1.1 scores 1.0.
    assert norm_outliers(np.array([1.0, 1.1, 0.9, 1.0, 1.05, 10.0])) == 1
    assert norm_outliers(np.array([1.0, 1.0, 1.0, 1.0, 5.0])) == 1  # MAD 0: above 2 x median
    assert norm_outliers(np.array([1.0, 1.0, 1.0, 1.0, 1.9])) == 0
    assert norm_outliers(np.array([0.01, 1.0, 1.0, 1.1, 0.9])) == 0  # small ones are not
    assert norm_outliers(np.array([1.0, 50.0])) == 0  # nothing to stand out of


def test_an_attack_moves_the_mean_but_not_the_robust_rules() -> None:
    rng = np.random.default_rng(18)
    true = rng.normal(size=50)
    honest = true + 0.1 * rng.normal(size=(12, 50))
    hostile = np.tile(-20.0 * true, (2, 1))  # two colluding devices, f = 2
    u = np.vstack([honest, hostile])
    err = {
        "mean": np.linalg.norm(WeightedMean().aggregate(u) - true),
        "krum": np.linalg.norm(Krum(byzantine=2, select=5).aggregate(u) - true),
        "bulyan": np.linalg.norm(Bulyan(byzantine=2).aggregate(u) - true),
    }
    assert err["mean"] > 2 * np.linalg.norm(true)  # it even points the wrong way
    # Within the honest devices' own spread (0.1 per coordinate: ~0.7 per update).
    assert err["krum"] < 0.1 * np.linalg.norm(true)
    assert err["bulyan"] < 0.1 * np.linalg.norm(true)
    # Neither hostile update is among Multi-Krum's picks. Bulyan's last Krum pick, over few
    # candidates, does take one of the identical pair (each other's nearest): its second
    # stage, 2f values cut per coordinate around the median, is what keeps it out.
    assert not {12, 13} & set(Krum(byzantine=2, select=5).chosen(u).tolist())
    assert {12, 13} & set(Bulyan(byzantine=2).selected(u))
    assert norm_outliers(np.linalg.norm(u, axis=1)) == 2
