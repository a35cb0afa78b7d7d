"""A device's update kept between an async task's TRAIN plan and its cohort round."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm

__all__ = ["HeldUpdate", "report_examples"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class HeldUpdate:
    """The delta trained for the TRAIN plan ``ticket`` (its round id), not yet reported.

    Kept in memory only: a device that restarts offers nothing and is trained again."""

    ticket: int
    delta: npt.NDArray[np.floating]
    n_examples: int


def report_examples(held: HeldUpdate, plan: rm.Plan) -> int:
    """The example count that reports ``held`` in the cohort round of ``plan``: discounted
    for the staleness the plan states, so the weight is inside what the device encodes."""
    return ra.weighted_examples(held.n_examples, plan.update.weight_cap, plan.staleness)
