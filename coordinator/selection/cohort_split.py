"""Splitting a round's selected devices into SecAgg+ cohorts at random (``rounds.cohorts``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedrt.coordinator.errors import ConfigError

__all__ = ["DEFAULT_COHORT_SIZE", "MIN_COHORT_SIZE", "split"]

# Bonawitz et al. 2019 run one SecAgg instance per Aggregator over a few hundred devices;
# why 250 here is in docs/secagg.md.
DEFAULT_COHORT_SIZE = 250
# Split c > 1 ways, n > (c - 1) x cohort_size devices leave each cohort at least
# floor(n / c) >= 3 of them when cohort_size >= 5 (a sum of 2 tells each the other's input).
MIN_COHORT_SIZE = 5


def split(ids: Sequence[str], cohort_size: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """``ids`` in ceil(n / cohort_size) cohorts whose sizes differ by at most one.

    Membership is a fresh permutation from the round's generator, so no device can choose
    its cohort (or its cohort's other members) by when, or how often, it checks in. One
    cohort keeps ``ids`` in their order (the machine already ordered them at random).
    """
    if cohort_size < MIN_COHORT_SIZE:
        raise ConfigError(f"cohort_size must be >= {MIN_COHORT_SIZE}, got {cohort_size}")
    n = len(ids)
    count = max(1, math.ceil(n / cohort_size))
    if count == 1:
        return [tuple(ids)]
    order = [ids[i] for i in rng.permutation(n)]
    base, extra = divmod(n, count)
    cohorts, start = [], 0
    for c in range(count):
        size = base + (c < extra)
        cohorts.append(tuple(order[start : start + size]))
        start += size
    return cohorts
