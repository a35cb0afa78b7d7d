"""The random split of a round's selected devices into SecAgg+ cohorts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.selection.cohort_split import MIN_COHORT_SIZE, split


def _ids(n: int) -> list[str]:
    return [f"dev-{i:04d}" for i in range(n)]


@given(n=st.integers(2, 2000), size=st.integers(MIN_COHORT_SIZE, 600), seed=st.integers(0, 99))
def test_every_device_lands_in_exactly_one_cohort_of_balanced_size(
    n: int, size: int, seed: int
) -> None:
    ids = _ids(n)
    cohorts = split(ids, size, np.random.default_rng(seed))
    assert len(cohorts) == math.ceil(n / size)
    flat = [d for c in cohorts for d in c]
    assert sorted(flat) == ids  # all of them, none twice
    sizes = [len(c) for c in cohorts]
    assert max(sizes) <= size
    assert max(sizes) - min(sizes) <= 1
    if len(cohorts) > 1:  # a split never leaves a cohort too small for SecAgg+ to hide in
        assert min(sizes) >= 3


def test_the_split_is_deterministic_in_the_seed_and_random_across_seeds() -> None:
    ids = _ids(1000)
    a = split(ids, 250, np.random.default_rng(7))
    assert a == split(ids, 250, np.random.default_rng(7))
    b = split(ids, 250, np.random.default_rng(8))
    assert {frozenset(c) for c in a} != {frozenset(c) for c in b}
    # Not the check-in order cut into runs: membership is drawn afresh.
    runs = [tuple(ids[i : i + 250]) for i in range(0, 1000, 250)]
    assert {frozenset(c) for c in a}.isdisjoint({frozenset(r) for r in runs})


def test_membership_is_uniform_over_many_rounds() -> None:
    # Device 0 shares a cohort with each other device about equally often (no position
    # in the check-in order keeps company), bounded loop of 400 draws.
    ids = _ids(40)
    together = np.zeros(40)
    rng = np.random.default_rng(3)
    for _ in range(400):
        for c in split(ids, 10, rng):
            if ids[0] in c:
                together[[ids.index(d) for d in c]] += 1
    others = together[1:] / 400
    # Expected 9/39 = 0.23 each; 400 draws put 4 standard errors at about +-0.085.
    assert np.all(np.abs(others - 9 / 39) < 0.085), others


def test_one_cohort_keeps_the_given_order() -> None:
    ids = _ids(7)
    assert split(ids, 250, np.random.default_rng(0)) == [tuple(ids)]


@pytest.mark.parametrize("size", [-1, 0, 1, 2, MIN_COHORT_SIZE - 1])
def test_a_cohort_size_too_small_to_hide_anyone_is_refused(size: int) -> None:
    with pytest.raises(ConfigError, match="cohort_size"):
        split(_ids(10), size, np.random.default_rng(0))
