"""Robust aggregators over individual updates (only possible when SecAgg is off).

Under secure aggregation the server only ever sees the weighted sum, so the aggregator is
necessarily the weighted mean (computed inside SecAgg+); tasks that turn SecAgg off may
instead use a robust rule: coordinate-wise median, trimmed mean or (multi-)Krum.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.strategies.optimizers import AggregationError, FloatArray, Vector


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


__all__ = ["AGGREGATORS", "Aggregator", "CoordinateMedian", "Krum", "TrimmedMean", "WeightedMean"]
