"""Uniform cohort sampling: which of the devices that checked in a round selects.

A round keeps check-in open for its whole window and draws its cohort uniformly at random,
without replacement, from the POOL of devices that checked in: first come, first served
would favour devices that are always online and near the broker, and would not be the
sampling the DP accountant assumes (``privacy.accounting``). The pool stops growing at
``pool_target``: once every eligible device is in (nothing more can come), or once it holds
``pool_factor`` x the cohort, so that a fleet of millions does not park millions of idle
devices on one round. A full pool closes check-in early. Who makes the pool is decided by
check-in time, which pace steering randomises and which is assumed independent of a
device's data; within the pool every device is selected with the same probability
K / |pool|, and that pool size is what each round's privacy is charged with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# A pool of 4 cohorts keeps the DP sampling rate K / |pool| at 1/4 or below (most of the
# amplification a larger pool gives at the noise levels tasks use) while parking at most 3
# devices per selected one on a round, to be sent away when it closes.
DEFAULT_POOL_FACTOR = 4.0


def pool_target(select_count: int, pool_factor: float, population: int | None) -> int:
    """Check-ins that close a round's check-in before its deadline.

    ``population``: devices that may check in (None: unknown, only the factor bounds it);
    never below ``select_count``, so a full cohort still closes at once.
    """
    cap = max(select_count, math.ceil(select_count * pool_factor - 1e-9))
    if population is None:
        return cap
    return max(select_count, min(cap, population))


def sample_cohort(pool: Sequence[str], size: int, rng: np.random.Generator) -> list[str]:
    """``size`` devices of ``pool`` drawn uniformly without replacement, in a random order.

    The order is the SecAgg+ index: random, so it says nothing about check-in time. With a
    pool no larger than ``size`` everyone is taken (in a random order).
    """
    if size < 1:
        raise ValueError(f"a cohort has at least one device, got {size}")
    if len(set(pool)) != len(pool):
        raise ValueError("the pool lists a device twice")
    picked = rng.permutation(len(pool))[: min(size, len(pool))]
    return [pool[int(i)] for i in picked]


__all__ = ["DEFAULT_POOL_FACTOR", "pool_target", "sample_cohort"]
