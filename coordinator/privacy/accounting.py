"""Privacy accounting of DP rounds with Google's ``dp_accounting`` (RDP), and budget checks.

Assumption (``ACCOUNTING_ASSUMPTION``): each round the coordinator selects a FIXED number K
of devices uniformly at random, without replacement, from the POOL of N devices that
checked in during the round's check-in window (``selection.sampling``), and one user's data
lives on one device (user-level = device-level DP). Who makes the pool depends on when
devices check in (randomised by pace steering), assumed independent of their data; the
pool holds at most every eligible device or 4 cohorts. That is what the machine does, so
the accountant uses the matching analysis: sampling without replacement under the
replace-one neighbouring relation (Wang, Balle & Kasiviswanathan 2019, Thm. 27), with N
the pool the round REALLY drew from (``TaskPrivacy.as_sampled``; the plan made before
check-in uses the largest pool the round can have, so a round whose pool stays smaller
costs more than planned, never less). Poisson sampling (add/remove-one) would give smaller
epsilons but is not what happens: a cohort of exactly K is never a Poisson sample, and with
K fixed the number of contributors is public, which is precisely the replace-one model.
Replacing one device's clipped update (norm <= C) by another moves the sum by up to 2C, so
the Gaussian event is charged noise multiplier z / 2 (z = noise std on the sum / C). K
counts every SELECTED device: dropouts (assumed independent of the devices' data) only
lower the real sampling rate, and the noise is calibrated for the fewest survivors that can
unmask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dp_accounting
import numpy as np
import numpy.typing as npt
from dp_accounting.rdp import rdp_privacy_accountant

from fedrt.coordinator.errors import BadRequestError, ConflictError

__all__ = [
    "ACCOUNTING_ASSUMPTION",
    "PrivacyAccountant",
    "PrivacyBudgetExceeded",
    "RoundPrivacy",
    "calibrate_noise_multiplier",
    "round_epsilon",
    "round_event",
]

ACCOUNTING_ASSUMPTION = (
    "RDP (dp_accounting 0.6); fixed-size cohort of K sampled uniformly without replacement "
    "from the pool of N devices that checked in during the round's check-in window (N as "
    "observed each round; pool <= eligible devices and <= 4 K; check-in time independent "
    "of data), replace-one neighbours (sensitivity 2C), user-level = device-level; "
    "K = selected devices (dropouts independent of data)"
)

Floats = npt.NDArray[np.float64]
# dp_accounting's default orders less 256 and 512: below order 256 its sampling-without-
# replacement bound is exact and costs O(order^2) (256 alone is half the time of a curve);
# orders that high are optimal only for epsilons far below any useful budget (< ~0.1),
# and 1024 (a cheap Stirling bound) stays as the high-order fallback.
ORDERS: tuple[float, ...] = tuple(
    a for a in rdp_privacy_accountant.DEFAULT_RDP_ORDERS if a not in (256, 512)
)


class PrivacyBudgetExceeded(ConflictError):
    """Running one more round would take the task's epsilon past its budget."""

    def __init__(self, message: str, *, epsilon: float, budget: float) -> None:
        super().__init__(message)
        self.epsilon = epsilon
        self.budget = budget


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundPrivacy:
    """What one DP round costs depends on: who could be picked, how many were, the noise."""

    population: int  # N: the pool the cohort is drawn from (devices checked in)
    cohort: int  # K: devices selected (over-selection included)
    noise_multiplier: float  # z: std of the noise on the SUM / clip bound C

    def __post_init__(self) -> None:
        if not isinstance(self.population, int) or not isinstance(self.cohort, int):
            raise BadRequestError("population and cohort must be integers")
        if not 1 <= self.cohort <= self.population:
            raise BadRequestError(
                f"cohort must be in 1..population, got {self.cohort} of {self.population}"
            )
        z = self.noise_multiplier
        if not (math.isfinite(z) and z > 0):
            raise BadRequestError(f"noise_multiplier must be finite and > 0, got {z!r}")


def round_event(r: RoundPrivacy) -> dp_accounting.DpEvent:
    """The ``dp_accounting`` event of one round (see the module docstring for the factor 2)."""
    return dp_accounting.SampledWithoutReplacementDpEvent(
        r.population, r.cohort, dp_accounting.GaussianDpEvent(r.noise_multiplier / 2.0)
    )


def _fresh() -> dp_accounting.rdp.RdpAccountant:
    return dp_accounting.rdp.RdpAccountant(
        orders=list(ORDERS), neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )


@functools.lru_cache(maxsize=512)
def _round_rdp(r: RoundPrivacy) -> tuple[float, ...]:
    # Cohort sizes and populations repeat from round to round: computing the RDP curve of
    # sampling without replacement costs ~0.3 s, composing cached curves costs nothing.
    acc = _fresh()
    acc.compose(round_event(r))
    return tuple(float(v) for v in acc.rdp)


def _epsilon(rdp: Floats, delta: float) -> float:
    if not rdp.any():
        return 0.0
    eps, _ = rdp_privacy_accountant.compute_epsilon(ORDERS, rdp, delta)
    return float(eps)


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise BadRequestError(f"delta must be in (0, 1), got {delta!r}")


class PrivacyAccountant:
    """Cumulative (epsilon, delta) of a task's rounds; ``record_round`` after each commit."""

    def __init__(self, *, delta: float, rounds: Iterable[RoundPrivacy] = ()) -> None:
        """A fresh accountant, or one replaying ``rounds`` (e.g. read back from the store)."""
        _check_delta(delta)
        self.delta = delta
        self._rdp: Floats = np.zeros(len(ORDERS))
        self._rounds: list[RoundPrivacy] = []
        for r in rounds:
            self.record_round(r)

    @property
    def rounds(self) -> Sequence[RoundPrivacy]:
        return tuple(self._rounds)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon at ``delta`` over every recorded round (0 before any)."""
        return _epsilon(self._rdp, self.delta)

    def epsilon_after(self, r: RoundPrivacy) -> float:
        """Cumulative epsilon if round ``r`` were recorded next (nothing is recorded)."""
        return _epsilon(self._rdp + np.asarray(_round_rdp(r)), self.delta)

    def would_exceed(self, budget_epsilon: float, r: RoundPrivacy) -> bool:
        """Whether running round ``r`` would take the cumulative epsilon past the budget."""
        if not (budget_epsilon > 0):  # also refuses NaN
            raise BadRequestError(f"a privacy budget must be > 0, got {budget_epsilon!r}")
        return self.epsilon_after(r) > budget_epsilon

    def check_budget(self, budget_epsilon: float, r: RoundPrivacy) -> None:
        """``PrivacyBudgetExceeded`` (saying by how much) unless round ``r`` fits the budget."""
        if self.would_exceed(budget_epsilon, r):
            after = self.epsilon_after(r)
            raise PrivacyBudgetExceeded(
                f"privacy budget exhausted: round {len(self._rounds) + 1} would bring epsilon "
                f"from {self.epsilon:.4g} to {after:.4g} > budget {budget_epsilon:.4g} "
                f"at delta={self.delta:g}",
                epsilon=after,
                budget=budget_epsilon,
            )

    def record_round(self, r: RoundPrivacy) -> float:
        """Charge round ``r``; returns the new cumulative epsilon (store it with the round)."""
        self._rdp = self._rdp + np.asarray(_round_rdp(r))
        self._rounds.append(r)
        return self.epsilon


def round_epsilon(r: RoundPrivacy, delta: float) -> float:
    """Epsilon of round ``r`` on its own at ``delta``."""
    _check_delta(delta)
    return _epsilon(np.asarray(_round_rdp(r)), delta)


def calibrate_noise_multiplier(
    *, target_epsilon: float, delta: float, rounds: int, population: int, cohort: int
) -> float:
    """The smallest z (to 0.5%, at least 0.05) keeping ``rounds`` rounds within the target."""
    _check_delta(delta)
    if not (math.isfinite(target_epsilon) and target_epsilon > 0) or rounds < 1:
        raise BadRequestError("target_epsilon must be finite and > 0, rounds >= 1")

    def eps(z: float) -> float:
        r = RoundPrivacy(population=population, cohort=cohort, noise_multiplier=z)
        return _epsilon(np.asarray(_round_rdp(r)) * rounds, delta)

    lo, hi = 0.05, 0.1
    while eps(hi) > target_epsilon:  # epsilon falls as z grows; bounded by the z cap
        lo, hi = hi, hi * 4
        if hi > 1e4:
            raise BadRequestError(f"epsilon {target_epsilon} is out of reach at delta {delta}")
    # Geometric bisection: z spans orders of magnitude, a 0.5% relative step is enough.
    for _ in range(64):
        if hi / lo < 1.005:
            break
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= target_epsilon else (mid, hi)
    return hi
