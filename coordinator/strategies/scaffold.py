"""SCAFFOLD's server step (Karimireddy et al. 2020, option II): the model and the variate c.

Each device of a SCAFFOLD round sends one vector of 2P values (P = the model's parameters):
its model delta ``y_i - x`` followed by its new variate ``c_i+`` multiplied by
``protocol.scaffold.variate_scale`` (the client learning rate times the local epochs: the
round's clip and quantization range, sized for model deltas, fit it). SecAgg+ hands the
server the weighted mean of those vectors, never one of them, and this step splits it::

    x <- x + server_lr * mean(delta_y)
    c <- (1 - |S| / N) * c + (|S| / N) * mean(c_i+)

|S| is the number of updates in the round, N the task's population (enrolled devices its
labels admit). The paper adds (|S| / N) mean(c_i+ - c_i) to c, which keeps c = mean(c_i)
in exact arithmetic; but the mean arrives through 8-bit quantization (and the clip), and a
c summed from increments keeps every round's error: it random-walks away from the devices'
c_i (fedrt bench learning, zoo:cnn, dirichlet:0.1: |c - mean c_i| 1.78 against |mean
c_i| 1.35 by round 60, accuracy falling from 0.95 to 0.72-0.90). As a running mean of the
fresh variates, c holds the same devices' gradients on average, and each round's error
fades by (1 - |S| / N) a round instead of adding up. The mean is the round's FedAvg
weighting (min(n, cap) / cap), the same one the model delta gets. c lives in
``OptimizerState.control_variate`` and is saved with the version the round produced
(``models.optimizer_state``), so it survives restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.strategies.optimizers import (
    AggregationError,
    FloatArray,
    OptimizerState,
    ServerOptimizer,
    Vector,
)

NAME = "scaffold"
# Under a version's URL: its optimizer state, which holds c (``rounds.scaffold``).
CONTROL_VARIATE = "control_variate"


def participation(included: int, population: int | None) -> float:
    """|S| / N, at most 1; 1 when the population is unknown (then c moves by the mean)."""
    if not population or population <= 0:
        return 1.0
    return min(1.0, included / population)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scaffold(ServerOptimizer):
    """SCAFFOLD: x += server_lr * mean(delta_y); c moves by participation to mean(c_i+)."""

    server_lr: float = 1.0
    # What the devices' variate updates arrive multiplied by (protocol.scaffold).
    variate_scale: float = 0.01
    # |S| / N of the round being applied (``for_round``).
    participation: float = 1.0
    name: str = field(default=NAME, init=False)

    def __post_init__(self) -> None:
        for what in ("server_lr", "variate_scale"):
            value = getattr(self, what)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{what} must be a positive finite number, got {value!r}")
        if not (math.isfinite(self.participation) and 0.0 < self.participation <= 1.0):
            raise ConfigError(f"participation must lie in (0, 1], got {self.participation!r}")

    def for_round(self, *, included: int, population: int | None) -> Scaffold:
        """This optimizer for a round that aggregated ``included`` of ``population``."""
        return replace(self, participation=participation(included, population))

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[npt.NDArray[np.float32], OptimizerState]:
        w = np.asarray(weights, np.float64)
        d = np.asarray(delta, np.float64)
        p = w.size
        if w.ndim != 1 or d.shape != (2 * p,):
            raise AggregationError(
                f"a SCAFFOLD update holds {2 * p} values (model delta, variate update), "
                f"got shape {d.shape}"
            )
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(d))):
            raise AggregationError("weights or delta contain NaN or infinity")
        c: Vector = np.zeros(p) if state.control_variate is None else state.control_variate
        if c.shape != (p,):
            raise AggregationError(
                f"control variate has {c.size} values, weights have {p}: the model changed shape"
            )
        new = w + self.server_lr * d[:p]
        fresh = d[p:] / self.variate_scale
        share = self.participation
        return new.astype(np.float32), OptimizerState(
            rounds=state.rounds + 1, control_variate=(1.0 - share) * c + share * fresh
        )


def for_round(
    optimizer: ServerOptimizer, *, included: int, population: int | None
) -> ServerOptimizer:
    """The optimizer that applies a round of ``included`` updates (SCAFFOLD's |S| / N)."""
    if isinstance(optimizer, Scaffold):
        return optimizer.for_round(included=included, population=population)
    return optimizer


__all__ = [
    "CONTROL_VARIATE", "NAME", "Scaffold", "for_round", "participation",
]  # fmt: skip
