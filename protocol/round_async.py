"""Asynchronous (FedBuff) rounds on the wire: the async capability, plan roles, staleness weight.

An async task trains devices outside any round: a ``Plan`` with ``async_role`` TRAIN has the
device train from the latest version and keep its delta (it answers nothing); it then
checks in again naming that plan (``CheckIn.async_ticket``), and once ``buffer_size``
devices are ready the coordinator puts them in one cohort round, whose ``Plan`` (role
REPORT) states each member's ``staleness``: the device scales its clipped delta by
``staleness_weight`` BEFORE encoding (its example count stays as it is), so the discount
travels inside the (secure) sum and shrinks the commit's step.
"""

from __future__ import annotations

import math

from fedrt.protocol.round_errors import UnexpectedMessage

__all__ = [
    "ASYNC_REPORT",
    "ASYNC_ROLES",
    "ASYNC_TRAIN",
    "FEATURE_ASYNC",
    "AsyncNotSupported",
    "staleness_weight",
]

# CheckIn.features bits: what the device's SDK can do (0: an SDK older than async rounds).
FEATURE_ASYNC = 1
# Plan.async_role: 0 a synchronous round's plan; TRAIN: train and keep the delta; REPORT:
# answer this cohort round with the kept delta, weighted for ``Plan.staleness``.
ASYNC_TRAIN = 1
ASYNC_REPORT = 2
ASYNC_ROLES = (0, ASYNC_TRAIN, ASYNC_REPORT)


class AsyncNotSupported(UnexpectedMessage):
    """A device whose SDK predates async rounds checked in to an async task (refused)."""


def staleness_weight(staleness: int) -> float:
    """FedBuff's polynomial staleness discount (Nguyen et al. 2022): 1 / sqrt(1 + s)."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return 1.0 / math.sqrt(1.0 + staleness)
