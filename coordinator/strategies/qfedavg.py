"""q-FedAvg on the coordinator: what a round's plan says, the rest is the weighted mean.

The devices do the strategy's work (``protocol.qfedavg``): each sends ``F^q d / b`` weighted
by ``b`` (its loss-driven h term) through the ordinary update encoding, so the round's
weighted mean, applied by the plain FedAvg optimizer at server_lr 1, is q-FedAvg's step
``w + sum F^q d / sum b``. The coordinator only puts q in the plan and widens the weight cap
so that the count coordinates can carry b (``protocol.qfedavg.WEIGHT_CAP``).
"""

from __future__ import annotations

from fedrt.protocol.qfedavg import WEIGHT_CAP

__all__ = ["qfedavg_q", "weight_cap"]


def qfedavg_q(strategy: str, q: float) -> float | None:
    """The plan's q: the task's ``q`` for strategy qfedavg, None for any other strategy."""
    return float(q) if strategy == "qfedavg" else None


def weight_cap(strategy: str, cap: int) -> int:
    """The update's weight cap: b's range for qfedavg, the task's example ``cap`` otherwise."""
    return WEIGHT_CAP if strategy == "qfedavg" else cap
