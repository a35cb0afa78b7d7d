"""Server optimizers (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad): the pseudo-gradient step.

A server optimizer treats a round's aggregated delta as a pseudo-gradient step (Reddi et al.
2021, "Adaptive Federated Optimization", Algorithm 2) and moves the global weights.

Everything is a pure function of numpy arrays: optimizer state lives in an immutable
``OptimizerState``. The round driver saves the state a round ends with as a blob next to the
model version that round produced (``models/optimizer_state.py``; ``ModelRecord``'s
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
    # SCAFFOLD's server control variate c (``strategies.scaffold``); None until a round.
    control_variate: Vector | None = field(default=None, repr=False)


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


__all__ = [
    "OPTIMIZERS",
    "AggregationError",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "FloatArray",
    "OptimizerState",
    "ServerOptimizer",
    "Vector",
]
