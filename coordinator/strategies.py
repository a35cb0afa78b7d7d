"""Server optimizers (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad) and robust aggregators.

Two independent steps turn a round's device deltas into the next global model:

1. An **aggregator** reduces the per-device deltas to one delta. Under secure aggregation the
   server only ever sees the weighted sum, so the aggregator is necessarily the weighted mean
   (computed inside SecAgg+); tasks that turn SecAgg off may instead use a robust rule:
   coordinate-wise median, trimmed mean or (multi-)Krum.
2. A **server optimizer** treats that delta as a pseudo-gradient step (Reddi et al. 2021,
   "Adaptive Federated Optimization", Algorithm 2) and moves the global weights.

Everything is a pure function of numpy arrays: optimizer state lives in an immutable
``OptimizerState``. The round driver saves the state a round ends with as a blob next to the
model version that round produced (``optimizer_state.py``; ``ModelRecord``'s
``optimizer_state_sha256``), and a round starts with the state of the version it starts
from: after a restart (even kill -9), a pause/resume, a rollback or a promotion, FedAvgM's
momentum and FedAdam/FedYogi/FedAdagrad's moments continue bit for bit. FedAvg carries no
arrays, so nothing is saved for it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import ConfigError, CoordinatorError

FloatArray = npt.NDArray[np.floating]
Vector = npt.NDArray[np.float64]


class AggregationError(CoordinatorError):
    """Updates that cannot be aggregated as asked (shape mismatch, too few for the rule)."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class OptimizerState:
    """What a server optimizer carries from one round to the next (float64 arrays or None)."""

    rounds: int = 0
    # First moment (momentum) and second moment; None until the optimizer needs them.
    momentum: Vector | None = field(default=None, repr=False)
    second_moment: Vector | None = field(default=None, repr=False)


def _as_vector(x: FloatArray, what: str) -> Vector:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise AggregationError(f"{what} must be a flat vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AggregationError(f"{what} contains NaN or infinity")
    return arr.astype(np.float64, copy=False)


def _check_pair(weights: FloatArray, delta: FloatArray) -> tuple[Vector, Vector]:
    w = _as_vector(weights, "weights")
    d = _as_vector(delta, "delta")
    if w.shape != d.shape:
        raise AggregationError(f"delta has {d.size} values, weights have {w.size}")
    return w, d


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _check_unit(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name} must lie in [0, 1), got {value!r}")


class ServerOptimizer(ABC):
    """Moves the global weights by an aggregated delta (``trained - global``, averaged)."""

    __slots__ = ()
    name: str
    # Whether the state carries arrays from round to round (everything but FedAvg).
    stateful: ClassVar[bool] = True

    @abstractmethod
    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[npt.NDArray[np.float32], OptimizerState]:
        """Return the new weights (float32) and the state to carry into the next round."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvg(ServerOptimizer):
    """x <- x + lr * delta (McMahan et al. 2017; lr = 1 is plain model averaging)."""

    server_lr: float = 1.0
    name: str = field(default="fedavg", init=False)
    stateful: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_positive("server_lr", self.server_lr)

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[npt.NDArray[np.float32], OptimizerState]:
        w, d = _check_pair(weights, delta)
        new = w + self.server_lr * d
        return new.astype(np.float32), OptimizerState(rounds=state.rounds + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvgM(ServerOptimizer):
    """Server momentum (Hsu et al. 2019): m <- beta * m + delta; x <- x + lr * m."""

    server_lr: float = 1.0
    # 0.9 is the value Hsu et al. found robust across non-IID splits.
    momentum: float = 0.9
    name: str = field(default="fedavgm", init=False)

    def __post_init__(self) -> None:
        _check_positive("server_lr", self.server_lr)
        _check_unit("momentum", self.momentum)

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[npt.NDArray[np.float32], OptimizerState]:
        w, d = _check_pair(weights, delta)
        m = d.copy() if state.momentum is None else self.momentum * state.momentum + d
        _same_size(m, w)
        new = w + self.server_lr * m
        return new.astype(np.float32), OptimizerState(rounds=state.rounds + 1, momentum=m)


def _same_size(state: Vector, w: Vector) -> None:
    if state.shape != w.shape:
        raise AggregationError(
            f"optimizer state has {state.size} values, weights have {w.size}: "
            "the model changed shape under a stateful optimizer"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Adaptive(ServerOptimizer):
    """Reddi et al. 2021, Algorithm 2, shared by FedAdagrad, FedAdam and FedYogi.

    m <- b1 m + (1 - b1) delta;  v <- rule(v, delta^2);  x <- x + lr * m / (sqrt(v) + tau).
    As in the paper there is no bias correction, and v starts at tau^2 (its lower bound).
    """

    # The paper's grid puts the best server rates for adaptive methods around 1e-2..1e-1
    # on most tasks; 1e-2 is a conservative start.
    server_lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    # tau controls adaptivity: the paper's experiments use 1e-3 as the default.
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_positive("server_lr", self.server_lr)
        _check_positive("tau", self.tau)
        _check_unit("beta1", self.beta1)
        _check_unit("beta2", self.beta2)

    @abstractmethod
    def _second(self, v: Vector, d2: Vector) -> Vector: ...

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[npt.NDArray[np.float32], OptimizerState]:
        w, d = _check_pair(weights, delta)
        m0 = np.zeros_like(w) if state.momentum is None else state.momentum
        v0 = np.full_like(w, self.tau**2) if state.second_moment is None else state.second_moment
        _same_size(m0, w)
        _same_size(v0, w)
        m = self.beta1 * m0 + (1.0 - self.beta1) * d
        v = self._second(v0, d * d)
        new = w + self.server_lr * m / (np.sqrt(v) + self.tau)
        return new.astype(np.float32), OptimizerState(
            rounds=state.rounds + 1, momentum=m, second_moment=v
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAdagrad(_Adaptive):
    """v <- v + delta^2."""

    name: str = field(default="fedadagrad", init=False)

    def _second(self, v: Vector, d2: Vector) -> Vector:
        return v + d2


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAdam(_Adaptive):
    """v <- b2 v + (1 - b2) delta^2."""

    name: str = field(default="fedadam", init=False)

    def _second(self, v: Vector, d2: Vector) -> Vector:
        return self.beta2 * v + (1.0 - self.beta2) * d2


@dataclass(frozen=True, slots=True, kw_only=True)
class FedYogi(_Adaptive):
    """v <- v - (1 - b2) delta^2 sign(v - delta^2): additive, so v grows slowly (Zaheer 2018)."""

    name: str = field(default="fedyogi", init=False)

    def _second(self, v: Vector, d2: Vector) -> Vector:
        return v - (1.0 - self.beta2) * d2 * np.sign(v - d2)


OPTIMIZERS: dict[str, type[ServerOptimizer]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}


# ---------------------------------------------------------------------------------------------
# Aggregators over individual updates (only possible when SecAgg is off).


def _as_matrix(updates: FloatArray) -> Vector:
    arr = np.asarray(updates)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise AggregationError(f"updates must be a non-empty (devices, params) matrix: {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AggregationError("updates contain NaN or infinity")
    return arr.astype(np.float64, copy=False)


def _as_weights(weights: FloatArray | None, n: int) -> Vector:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise AggregationError(f"need {n} weights, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise AggregationError("weights must be finite, non-negative, with a positive sum")
    return w


class Aggregator(ABC):
    """Reduces a (devices, params) matrix of deltas to one delta."""

    __slots__ = ()
    name: str

    @abstractmethod
    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        """``weights`` (example counts) are used only by rules that can use them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedMean(Aggregator):
    """sum_k w_k u_k / sum_k w_k: FedAvg's rule, and what SecAgg+ computes obliviously."""

    name: str = field(default="mean", init=False)

    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        u = _as_matrix(updates)
        w = _as_weights(weights, u.shape[0])
        result: Vector = (w @ u) / w.sum()
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinateMedian(Aggregator):
    """Per-coordinate median (Yin et al. 2018); unweighted, so one device is one vote."""

    name: str = field(default="median", init=False)

    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        result: Vector = np.median(_as_matrix(updates), axis=0)
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class TrimmedMean(Aggregator):
    """Per coordinate, drop the floor(fraction * n) largest and smallest values, then average."""

    # 10% per side tolerates that share of outliers at little cost in variance.
    fraction: float = 0.1
    name: str = field(default="trimmed_mean", init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fraction) and 0.0 <= self.fraction < 0.5):
            raise ConfigError(f"trimmed mean fraction must lie in [0, 0.5), got {self.fraction}")

    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        u = _as_matrix(updates)
        n = u.shape[0]
        k = math.floor(self.fraction * n)
        if n - 2 * k < 1:
            raise AggregationError(f"trimming {k} per side leaves nothing of {n} updates")
        s = np.sort(u, axis=0)
        result: Vector = s[k : n - k].mean(axis=0)
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class Krum(Aggregator):
    """(Multi-)Krum (Blanchard et al. 2017): average the ``select`` updates whose summed
    squared distance to their n - f - 2 nearest neighbours is smallest."""

    byzantine: int = 1
    select: int = 1
    name: str = field(default="krum", init=False)

    def __post_init__(self) -> None:
        if self.byzantine < 0 or self.select < 1:
            raise ConfigError("krum needs byzantine >= 0 and select >= 1")

    def scores(self, updates: FloatArray) -> Vector:
        """Each update's Krum score (lower is more central)."""
        u = _as_matrix(updates)
        n = u.shape[0]
        if n < 2 * self.byzantine + 3:
            raise AggregationError(
                f"krum with f={self.byzantine} needs at least {2 * self.byzantine + 3} updates,"
                f" got {n}"
            )
        sq = np.einsum("ij,ij->i", u, u)
        # Gram-matrix distances cost one BLAS call; rounding can make them slightly negative.
        dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (u @ u.T), 0.0)
        np.fill_diagonal(dist, np.inf)
        closest = np.sort(dist, axis=1)[:, : n - self.byzantine - 2]
        result: Vector = closest.sum(axis=1)
        return result

    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        u = _as_matrix(updates)
        if self.select > u.shape[0]:
            raise AggregationError(f"krum cannot select {self.select} of {u.shape[0]} updates")
        # Stable sort: ties go to the lower device index, so the result is deterministic.
        chosen = np.argsort(self.scores(u), kind="stable")[: self.select]
        result: Vector = u[chosen].mean(axis=0)
        return result


AGGREGATORS: dict[str, type[Aggregator]] = {
    "mean": WeightedMean,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "krum": Krum,
}


__all__ = [
    "AGGREGATORS",
    "OPTIMIZERS",
    "AggregationError",
    "Aggregator",
    "CoordinateMedian",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "Krum",
    "OptimizerState",
    "ServerOptimizer",
    "TrimmedMean",
    "WeightedMean",
]
