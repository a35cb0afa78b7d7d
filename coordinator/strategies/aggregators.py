"""Robust aggregators over individual updates (only possible when SecAgg is off).

Under secure aggregation the server only ever sees the weighted sum, so the aggregator is
necessarily the weighted mean (computed inside SecAgg+); tasks that turn SecAgg off may
instead use a robust rule: coordinate-wise median, trimmed mean, (multi-)Krum or Bulyan.
Each rule says how many updates it discarded (``robust``), and ``norm_outliers`` counts the
updates whose norm stands out of the round's: the attack-detection figures of a round.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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


# Iglewicz & Hoaglin (1993): a modified z-score 0.6745 (x - median) / MAD above 3.5 marks an
# outlier. Where half the norms or more are equal (MAD 0, e.g. all at the clip bound), only
# a norm above twice the median counts: an equal spread says nothing about the rest.
OUTLIER_Z = 3.5
_MAD_SCALE = 0.6745


def norm_outliers(norms: FloatArray) -> int:
    """How many of ``norms`` (the updates' L2 norms, before the server clips them) stand
    out ABOVE the others: large updates are how a poisoning device moves the model."""
    x = np.asarray(norms, dtype=np.float64)
    if x.size < 3:
        return 0  # no "rest" to stand out of
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    if mad > 0:
        return int(np.count_nonzero(_MAD_SCALE * (x - med) / mad > OUTLIER_Z))
    return int(np.count_nonzero(x > 2.0 * med))


class Aggregator(ABC):
    """Reduces a (devices, params) matrix of deltas to one delta."""

    __slots__ = ()
    name: str

    @abstractmethod
    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        """``weights`` (example counts) are used only by rules that can use them."""

    def robust(self, updates: FloatArray, weights: FloatArray | None = None) -> tuple[Vector, int]:
        """(aggregate, updates discarded): whole updates a selecting rule left out, or for a
        coordinate-wise rule the values it dropped in each coordinate (0: the mean)."""
        return self.aggregate(updates, weights), 0


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

    def robust(self, updates: FloatArray, weights: FloatArray | None = None) -> tuple[Vector, int]:
        n = _as_matrix(updates).shape[0]
        return self.aggregate(updates, weights), n - (2 if n % 2 == 0 else 1)


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

    def robust(self, updates: FloatArray, weights: FloatArray | None = None) -> tuple[Vector, int]:
        n = _as_matrix(updates).shape[0]
        return self.aggregate(updates, weights), 2 * math.floor(self.fraction * n)


def _krum_scores(u: Vector, byzantine: int) -> Vector:
    """Each row's summed squared distance to its n - f - 2 nearest other rows (at least 1)."""
    n = u.shape[0]
    sq = np.einsum("ij,ij->i", u, u)
    # Gram-matrix distances cost one BLAS call; rounding can make them slightly negative.
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (u @ u.T), 0.0)
    np.fill_diagonal(dist, np.inf)
    closest = np.sort(dist, axis=1)[:, : max(1, n - byzantine - 2)]
    result: Vector = closest.sum(axis=1)
    return result


def _check_byzantine(byzantine: object) -> None:
    if not isinstance(byzantine, int) or isinstance(byzantine, bool) or byzantine < 0:
        raise ConfigError(f"byzantine (f) must be an integer >= 0, got {byzantine!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Krum(Aggregator):
    """(Multi-)Krum (Blanchard et al. 2017): average the ``select`` (m) updates whose summed
    squared distance to their n - f - 2 nearest neighbours is smallest, ``byzantine`` (f)
    being how many updates may be hostile. Needs n >= 2f + 3 and m <= n - f (beyond that
    an average could take in a hostile update by construction)."""

    byzantine: int = 1
    select: int = 1
    name: str = field(default="krum", init=False)

    def __post_init__(self) -> None:
        _check_byzantine(self.byzantine)
        if not isinstance(self.select, int) or isinstance(self.select, bool) or self.select < 1:
            raise ConfigError(f"krum needs select (m) >= 1, got {self.select!r}")

    def scores(self, updates: FloatArray) -> Vector:
        """Each update's Krum score (lower is more central)."""
        u = _as_matrix(updates)
        n = u.shape[0]
        if n < 2 * self.byzantine + 3:
            raise AggregationError(
                f"krum with f={self.byzantine} needs at least {2 * self.byzantine + 3} updates,"
                f" got {n}"
            )
        return _krum_scores(u, self.byzantine)

    def chosen(self, updates: FloatArray) -> npt.NDArray[np.intp]:
        """Indices of the ``select`` most central updates, most central first."""
        u = _as_matrix(updates)
        if self.select > u.shape[0] - self.byzantine:
            raise AggregationError(
                f"multi-krum with f={self.byzantine} selects at most {u.shape[0] - self.byzantine}"
                f" of {u.shape[0]} updates, not {self.select}"
            )
        # Stable sort: ties go to the lower device index, so the result is deterministic.
        return np.argsort(self.scores(u), kind="stable")[: self.select]

    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        return self.robust(updates, weights)[0]

    def robust(self, updates: FloatArray, weights: FloatArray | None = None) -> tuple[Vector, int]:
        u = _as_matrix(updates)
        result: Vector = u[self.chosen(u)].mean(axis=0)
        return result, u.shape[0] - self.select


@dataclass(frozen=True, slots=True, kw_only=True)
class Bulyan(Aggregator):
    """Bulyan (El Mhamdi, Guerraoui & Rouault 2018) over f = ``byzantine`` hostile updates:
    Krum picks theta = n - 2f updates one at a time (each pick leaves the candidates), then
    each coordinate averages the beta = theta - 2f picked values closest to their median.
    Needs n >= 4f + 3. Krum alone can be steered along single coordinates; the trimmed
    second stage bounds what any one coordinate of a hostile update can do."""

    byzantine: int = 1
    name: str = field(default="bulyan", init=False)

    def __post_init__(self) -> None:
        _check_byzantine(self.byzantine)

    def selected(self, updates: FloatArray) -> list[int]:
        """The theta updates Krum picks, in the order picked."""
        u = _as_matrix(updates)
        n, f = u.shape[0], self.byzantine
        if n < 4 * f + 3:
            raise AggregationError(f"bulyan with f={f} needs at least {4 * f + 3} updates, got {n}")
        left = list(range(n))
        picked: list[int] = []
        for _ in range(n - 2 * f):
            # Stable: ties go to the lower device index.
            best = int(np.argmin(_krum_scores(u[left], f)))
            picked.append(left.pop(best))
        return picked

    def aggregate(self, updates: FloatArray, weights: FloatArray | None = None) -> Vector:
        return self.robust(updates, weights)[0]

    def robust(self, updates: FloatArray, weights: FloatArray | None = None) -> tuple[Vector, int]:
        u = _as_matrix(updates)
        picked = u[self.selected(u)]
        beta = picked.shape[0] - 2 * self.byzantine
        med = np.median(picked, axis=0)
        # Per coordinate, the beta values nearest the median (ties: the earlier pick).
        nearest = np.argsort(np.abs(picked - med), axis=0, kind="stable")[:beta]
        result: Vector = np.take_along_axis(picked, nearest, axis=0).mean(axis=0)
        return result, u.shape[0] - picked.shape[0]


AGGREGATORS: dict[str, type[Aggregator]] = {
    "mean": WeightedMean,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "krum": Krum,
    "bulyan": Bulyan,
}


__all__ = [
    "AGGREGATORS", "OUTLIER_Z", "Aggregator", "Bulyan", "CoordinateMedian", "Krum", "TrimmedMean",
    "WeightedMean", "norm_outliers",
]  # fmt: skip
