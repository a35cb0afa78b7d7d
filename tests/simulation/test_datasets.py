"""Digits loading, the held-out split and the three partition schemes."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.errors import UsageError
from fedrt.simulation.datasets import Dataset, Partition, holdout_split, load_digits, partition


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def test_digits_shape_and_range(digits: Dataset) -> None:
    assert digits.x.shape == (1797, 8, 8, 1)
    assert digits.x.dtype == np.float32
    assert digits.x.min() >= 0.0
    assert digits.x.max() <= 1.0
    assert set(np.unique(digits.y)) == set(range(10))


def test_holdout_is_a_stratified_quarter(digits: Dataset) -> None:
    train, test = holdout_split(digits, np.random.default_rng(0))
    assert len(train) + len(test) == len(digits)
    assert abs(len(test) / len(digits) - 0.25) < 0.01
    assert set(np.unique(test.y)) == set(range(10))


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "shards:2"])
def test_partitions_cover_data_without_overlap(digits: Dataset, spec: str) -> None:
    parts = partition(digits, 20, Partition.parse(spec), np.random.default_rng(1))
    assert len(parts) == 20
    joined = np.concatenate(parts)
    assert len(joined) == len(digits) == len(np.unique(joined))
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_is_skewed_and_iid_is_not(digits: Dataset) -> None:
    def max_class_share(spec: str) -> float:
        parts = partition(digits, 20, Partition.parse(spec), np.random.default_rng(2))
        shares = [np.bincount(digits.y[p], minlength=10).max() / len(p) for p in parts]
        return float(np.mean(shares))

    assert max_class_share("dirichlet:0.1") > 2 * max_class_share("iid")


def test_same_seed_same_partition(digits: Dataset) -> None:
    a = partition(digits, 5, Partition.parse("dirichlet:0.5"), np.random.default_rng(3))
    b = partition(digits, 5, Partition.parse("dirichlet:0.5"), np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("bad", ["", "dirichlet", "dirichlet:-1", "shards:1.5", "zipf:2"])
def test_bad_partition_specs_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        Partition.parse(bad)


def test_too_many_devices_is_a_usage_error(digits: Dataset) -> None:
    for how in ("shards:2", "dirichlet:0.5"):
        with pytest.raises(UsageError):
            partition(digits, 5000, Partition.parse(how), np.random.default_rng(0))
    with pytest.raises(UsageError):
        partition(digits, 0, Partition.parse("iid"), np.random.default_rng(0))


def test_iid_over_more_devices_than_examples_deals_the_data_out_again(digits: Dataset) -> None:
    parts = partition(digits, 5000, Partition.parse("iid"), np.random.default_rng(0))
    assert len(parts) == 5000
    assert min(len(p) for p in parts) >= 1
    held = np.bincount(np.concatenate(parts), minlength=len(digits))
    passes = -(-5000 // len(digits))
    # Every example is dealt out once per pass, and no device holds one twice.
    assert held.min() >= passes - 1
    assert held.max() <= passes
    assert all(len(set(p.tolist())) == len(p) for p in parts)
