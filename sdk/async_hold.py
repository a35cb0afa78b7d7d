"""A device's update kept between an async task's TRAIN plan and its cohort round."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update

__all__ = ["HeldUpdate", "report"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class HeldUpdate:
    """The delta trained for the TRAIN plan ``ticket`` (its round id), not yet reported.

    Kept in memory only: a device that restarts offers nothing and is trained again."""

    ticket: int
    delta: npt.NDArray[np.floating]
    n_examples: int


def report(held: HeldUpdate, plan: rm.Plan) -> tuple[npt.NDArray[np.floating], int]:
    """The delta and example count that report ``held`` in the cohort round of ``plan``:
    the clipped delta scaled by the staleness weight the plan states, and the example count
    as it was. The commit is then FedBuff's staleness-discounted step in its example-weighted
    form, sum n_i w_i d_i / sum n_i: a stale update shrinks the step instead of only losing
    share to fresher ones (a discount carried by the count cancels when a cohort is equally
    stale), and it works alike in a plain update, inside a SecAgg+ sum, and under DP, where
    every device weighs 1 and the sum moves by at most the clip per device, as the noise
    assumes."""
    delta = np.asarray(held.delta, np.float64)
    if plan.update.dp is None or not plan.update.dp.unclipped_bit:
        delta = round_update.clip(delta, plan.update.clip_norm)
    # (With adaptive clipping the device must say whether ITS update fit the clip, so it is
    # not clipped here: the encoding clips the discounted delta.)
    return delta * ra.staleness_weight(plan.staleness), held.n_examples
