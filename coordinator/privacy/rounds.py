"""A task's differential privacy between rounds: noise per round, the clip bound, the budget.

``TaskPrivacy`` is what the round driver keeps per DP task. Before a training round it
``plan``s the round (population N, cohort K, noise multiplier, clip bound) and refuses it
with ``PrivacyBudgetExceeded`` if running it could take the cumulative epsilon past the
task's budget; after the round commits it ``charge``s it and returns the new cumulative
epsilon. Only committed training rounds are charged: an abandoned round releases nothing.
Each plan is stored in the round's ``detail["dp"]``, so ``from_rounds`` rebuilds the
accountant exactly after a restart. Sans I/O: the driver reads and writes the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedrt.coordinator.privacy.accounting import (
    ACCOUNTING_ASSUMPTION,
    PrivacyAccountant,
    RoundPrivacy,
    calibrate_noise_multiplier,
    round_epsilon,
)
from fedrt.coordinator.privacy.central import CentralNoise
from fedrt.coordinator.privacy.config import (
    AdaptiveClip,
    DpConfig,
    DpMode,
    FixedClip,
    adaptive_clip_update,
    default_count_std,
    noised_unclipped_fraction,
    split_noise_multiplier,
)
from fedrt.coordinator.privacy.device import DeviceDp
from fedrt.coordinator.records import RoundRecord, RoundStatus

__all__ = ["ACCOUNTING_ASSUMPTION", "RoundDp", "TaskPrivacy", "training_rounds"]


def training_rounds(max_rounds: int, eval_every: int) -> int:
    """How many of a task's ``max_rounds`` rounds train (every ``eval_every + 1``-th
    evaluates), i.e. how many rounds a ``target_epsilon`` is spread over."""
    if not eval_every:
        return max_rounds
    return max(1, max_rounds - max_rounds // (eval_every + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundDp:
    """One training round's DP plan, as the round is run and as it is stored."""

    privacy: RoundPrivacy  # what the accountant charges (z on the pair of sum and count)
    clip: float  # L2 bound of every update this round
    update_noise_multiplier: float  # z of the update sum (below z when a count is noised)
    count_std: float  # std of the noise on the unclipped count (adaptive clipping), or 0
    round_epsilon: float = 0.0  # what this round costs on its own, at the task's delta

    @property
    def sum_std(self) -> float:
        """Std of the noise on the SUM of the clipped updates (float units)."""
        return self.update_noise_multiplier * self.clip

    def to_json(self) -> dict[str, Any]:
        p = self.privacy
        return {
            "population": p.population,
            "cohort": p.cohort,
            "noise_multiplier": p.noise_multiplier,
            "update_noise_multiplier": self.update_noise_multiplier,
            "clip": self.clip,
            "count_std": self.count_std,
            "round_epsilon": self.round_epsilon,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RoundDp:
        return cls(
            privacy=RoundPrivacy(
                population=int(raw["population"]),
                cohort=int(raw["cohort"]),
                noise_multiplier=float(raw["noise_multiplier"]),
            ),
            clip=float(raw["clip"]),
            update_noise_multiplier=float(raw["update_noise_multiplier"]),
            count_std=float(raw["count_std"]),
            round_epsilon=float(raw.get("round_epsilon", 0.0)),
        )


class TaskPrivacy:
    """The DP state of one task (see the module docstring)."""

    def __init__(
        self,
        config: DpConfig,
        *,
        train_rounds: int,
        charged: Iterable[RoundDp] = (),
        clip: float | None = None,
    ) -> None:
        if not config.enabled:
            raise ValueError("TaskPrivacy is for tasks with a DP mode")
        self.config = config
        self.train_rounds = train_rounds
        charged = list(charged)
        self.accountant = PrivacyAccountant(delta=config.delta, rounds=[r.privacy for r in charged])
        if clip is not None:
            self.clip = clip
        elif isinstance(config.clip, FixedClip):
            self.clip = config.clip.norm
        else:
            self.clip = config.clip.initial
        # A target epsilon is turned into z once, for the first round's N and K, and kept.
        self._calibrated: float | None = (
            charged[0].privacy.noise_multiplier if charged and config.target_epsilon else None
        )

    @classmethod
    def from_rounds(
        cls,
        config: DpConfig,
        rounds: Iterable[RoundRecord],
        *,
        train_rounds: int,
        clip: float | None = None,
    ) -> TaskPrivacy:
        """The state after the stored ``rounds``: every committed round with a DP plan."""
        charged = [
            RoundDp.from_json(r.detail["dp"])
            for r in rounds
            if r.status is RoundStatus.COMMITTED and isinstance(r.detail.get("dp"), Mapping)
        ]
        return cls(config, train_rounds=train_rounds, charged=charged, clip=clip)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon at the task's delta over the rounds charged so far."""
        return self.accountant.epsilon

    @property
    def needs_calibration(self) -> bool:
        """A target epsilon whose noise multiplier is not computed yet (1-2 s of accounting)."""
        return self.config.noise_multiplier is None and self._calibrated is None

    def noise_multiplier(self, population: int, cohort: int) -> float:
        z = self.config.noise_multiplier
        if z is not None:
            return z
        if self._calibrated is None:
            assert self.config.target_epsilon is not None  # DpConfig guarantees one of them
            self._calibrated = calibrate_noise_multiplier(
                target_epsilon=self.config.target_epsilon,
                delta=self.config.delta,
                rounds=self.train_rounds,
                population=population,
                cohort=cohort,
            )
        return self._calibrated

    def plan(self, *, population: int, cohort: int) -> RoundDp:
        """The next training round's plan; ``PrivacyBudgetExceeded`` if it may not run.

        ``population`` is how many devices could have been selected and ``cohort`` how many
        are; with fewer devices than a cohort every one is taken (no amplification)."""
        cohort = max(1, cohort)
        population = max(population, cohort)
        z = self.noise_multiplier(population, cohort)
        privacy = RoundPrivacy(population=population, cohort=cohort, noise_multiplier=z)
        budget = self.config.budget_epsilon
        if budget is not None:
            self.accountant.check_budget(budget, privacy)
        count_std = 0.0
        z_update = z
        if isinstance(self.config.clip, AdaptiveClip):
            # Andrew et al.'s K / 20, but at least z: tiny cohorts would otherwise leave the
            # update (almost) no share of the noise (z_u <= 1.16 z either way).
            count_std = max(default_count_std(cohort), z)
            z_update = split_noise_multiplier(z, count_std)
        return RoundDp(
            privacy=privacy,
            clip=self.clip,
            update_noise_multiplier=z_update,
            count_std=count_std,
            round_epsilon=round_epsilon(privacy, self.config.delta),
        )

    def as_sampled(self, plan: RoundDp, *, pool: int, cohort: int) -> RoundDp:
        """``plan`` as the round actually sampled: ``cohort`` devices drawn uniformly from a
        pool of ``pool`` that checked in (``selection.sampling``). This, not the planned
        population, is what the round is charged: a smaller pool than planned costs more."""
        cohort = max(1, cohort)
        privacy = RoundPrivacy(
            population=max(pool, cohort),
            cohort=cohort,
            noise_multiplier=plan.privacy.noise_multiplier,
        )
        return replace(
            plan, privacy=privacy, round_epsilon=round_epsilon(privacy, self.config.delta)
        )

    def central_noise(self, plan: RoundDp, rng: np.random.Generator) -> CentralNoise | None:
        """The noise the coordinator adds (central mode); None when devices add it."""
        if self.config.mode is not DpMode.CENTRAL:
            return None
        return CentralNoise(noise_multiplier=plan.update_noise_multiplier, rng=rng)

    def device_dp(self, plan: RoundDp) -> DeviceDp | None:
        """What the devices do for privacy this round: add noise (distributed mode) and
        send the clip bit (adaptive clipping); None when they do neither."""
        adaptive = isinstance(self.config.clip, AdaptiveClip)
        if self.config.mode is DpMode.DISTRIBUTED:
            return DeviceDp(
                noise_multiplier=plan.update_noise_multiplier,
                skellam=self.config.distributed_noise == "skellam",
                unclipped_bit=adaptive,
                bit_sum_std=plan.count_std,
            )
        return DeviceDp(unclipped_bit=True) if adaptive else None

    def charge(self, plan: RoundDp) -> float:
        """Record a committed round; the new cumulative epsilon."""
        return self.accountant.record_round(plan.privacy)

    def commit(
        self,
        plan: RoundDp,
        *,
        included: int,
        unclipped: float | None,
        device_sum_std: float,
        rng: np.random.Generator,
    ) -> float:
        """A training round committed: charge it, move an adaptive clip bound with the
        (noised) count of unclipped updates, and return the std of the noise its SUM got:
        ``device_sum_std`` when the devices added it, z C when the coordinator did."""
        self.charge(plan)
        distributed = self.config.mode is DpMode.DISTRIBUTED
        if unclipped is not None and included >= 1:
            # Under distributed DP the count arrived noised by the devices already.
            std = 0.0 if distributed else plan.count_std
            self.adapt_clip(noised_unclipped_fraction(unclipped, included, std, rng))
        return device_sum_std if distributed else plan.sum_std

    def adapt_clip(self, unclipped_fraction: float) -> float:
        """Adaptive clipping: move the bound toward the target quantile (fixed: unchanged)."""
        c = self.config.clip
        if isinstance(c, AdaptiveClip) and math.isfinite(unclipped_fraction):
            self.clip = adaptive_clip_update(
                self.clip, unclipped_fraction, quantile=c.quantile, lr=c.lr
            )
        return self.clip
