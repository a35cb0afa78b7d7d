"""A task's differential-privacy settings (``DpConfig``) and adaptive clipping (Andrew et al.).

Task config shape (TOML / JSON), every combination checked on construction::

    dp = {mode = "none" | "central" | "distributed",
          noise_multiplier = Z | target_epsilon = E, delta = D, budget_epsilon = B,
          clip = {fixed = C} | {adaptive = {quantile = Q, lr = ETA, initial = C0}}}

Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping") tracks the ``quantile`` of the devices' update norms: each device reports the
bit "my update was within C" (under SecAgg+ as one more secure coordinate), the server
learns the noised fraction b~ and sets C <- C * exp(-lr * (b~ - quantile)). The noise on
that count is paid for out of the same budget: the update noise becomes
``split_noise_multiplier(z, count_std)`` so the pair is exactly as private as z alone.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrt.coordinator.errors import BadRequestError

__all__ = [
    "AdaptiveClip",
    "DpConfig",
    "DpMode",
    "FixedClip",
    "adaptive_clip_update",
    "default_count_std",
    "noised_unclipped_fraction",
    "split_noise_multiplier",
]


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise BadRequestError(f"dp: {message}")


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f"dp: {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    _need(math.isfinite(number) and number > 0, f"{name} must be finite and > 0, got {number!r}")
    return number


class DpMode(enum.Enum):
    NONE = "none"  # no noise (clipping alone gives no formal guarantee)
    CENTRAL = "central"  # the trusted coordinator adds Gaussian noise to the aggregate
    DISTRIBUTED = "distributed"  # devices add integer noise inside the SecAgg+ ring


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedClip:
    """Every update is clipped to L2 norm ``norm``."""

    norm: float

    def __post_init__(self) -> None:
        _positive(self.norm, "clip.fixed")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveClip:
    """Clip bound tracking the ``quantile`` of update norms; defaults from Andrew et al. 2021
    (median, geometric rate 0.2, start at 0.1: the rate lets C grow 20% a round)."""

    quantile: float = 0.5
    lr: float = 0.2
    initial: float = 0.1

    def __post_init__(self) -> None:
        _need(
            isinstance(self.quantile, float | int) and 0 < self.quantile < 1,
            f"clip.adaptive.quantile must be in (0, 1), got {self.quantile!r}",
        )
        _positive(self.lr, "clip.adaptive.lr")
        _positive(self.initial, "clip.adaptive.initial")


@dataclass(frozen=True, slots=True, kw_only=True)
class DpConfig:
    """A task's DP settings. Exactly one of noise_multiplier / target_epsilon with noise."""

    mode: DpMode = DpMode.NONE
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    # 1e-5: below 1 / population for the >= 1,000-device populations DP is meant for.
    delta: float = 1e-5
    # Stop the task before a round would take the cumulative epsilon past this.
    budget_epsilon: float | None = None
    clip: FixedClip | AdaptiveClip = field(default_factory=lambda: FixedClip(norm=1.0))
    # Distributed DP only: "discrete_gaussian" (Kairouz et al. 2021) or "skellam".
    distributed_noise: str = "discrete_gaussian"

    def __post_init__(self) -> None:
        _need(isinstance(self.mode, DpMode), f"mode must be a DpMode, got {self.mode!r}")
        _need(isinstance(self.clip, FixedClip | AdaptiveClip), "clip must be fixed or adaptive")
        given = [n for n in ("noise_multiplier", "target_epsilon") if getattr(self, n) is not None]
        if self.mode is DpMode.NONE:
            extra = [*given, *(["budget_epsilon"] if self.budget_epsilon is not None else [])]
            _need(not extra, f"mode 'none' adds no noise, so {', '.join(extra)} cannot be set")
        else:
            _need(
                len(given) == 1,
                f"mode '{self.mode.value}' needs exactly one of noise_multiplier or "
                f"target_epsilon, got {', '.join(given) or 'neither'}",
            )
        for name in (*given, "budget_epsilon"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name)
        d = self.delta
        _need(
            isinstance(d, float | int) and 0 < d < 1 and math.isfinite(d),
            f"delta must be in (0, 1), got {d!r}",
        )
        if self.target_epsilon is not None and self.budget_epsilon is not None:
            _need(
                self.target_epsilon <= self.budget_epsilon,
                f"target_epsilon {self.target_epsilon} exceeds budget_epsilon "
                f"{self.budget_epsilon}: the task would stop before its last round",
            )
        _need(
            self.distributed_noise in ("discrete_gaussian", "skellam"),
            f"distributed_noise must be discrete_gaussian or skellam, got "
            f"{self.distributed_noise!r}",
        )

    @property
    def enabled(self) -> bool:
        return self.mode is not DpMode.NONE

    def check_task(self, *, secagg: bool, mean_aggregation: bool, population: int) -> None:
        """Refuse combinations that only the task as a whole reveals."""
        if self.mode is DpMode.DISTRIBUTED:
            _need(secagg, "distributed DP adds noise inside SecAgg+: set secagg = true")
        if self.enabled:
            # The calibration bounds what ONE device moves a weighted MEAN; a median or
            # Krum has another sensitivity altogether.
            _need(mean_aggregation, "DP needs a mean-based strategy (not median/krum/trimmed)")
            _need(
                self.delta < 1.0 / population,
                f"delta {self.delta:g} must be below 1 / population (1/{population}): "
                "otherwise leaking one device outright is within the guarantee",
            )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DpConfig:
        """The config from its TOML/JSON table (see the module docstring); unknown keys refused."""
        _need(isinstance(raw, Mapping), "dp must be a table")
        known = {"mode", "noise_multiplier", "target_epsilon", "delta", "budget_epsilon",
                 "clip", "distributed_noise"}  # fmt: skip
        unknown = sorted(set(raw) - known)
        _need(not unknown, f"unknown key(s) {', '.join(unknown)}")
        modes = [m.value for m in DpMode]
        _need(raw.get("mode", "none") in modes, f"mode must be one of {', '.join(modes)}")
        # null is not "unset": an absent key is (the API documents no nullable DP field).
        nulls = sorted(k for k in raw if raw[k] is None)
        _need(not nulls, f"{', '.join(nulls)} must not be null (leave the key out instead)")
        kwargs: dict[str, Any] = {k: raw[k] for k in known - {"mode", "clip"} if k in raw}
        if "clip" in raw:
            kwargs["clip"] = _clip_from(raw["clip"])
        return cls(mode=DpMode(raw.get("mode", "none")), **kwargs)

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of ``from_mapping`` (what the store and the API show)."""
        out: dict[str, Any] = {"mode": self.mode.value, "delta": self.delta}
        for name in ("noise_multiplier", "target_epsilon", "budget_epsilon"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if isinstance(self.clip, FixedClip):
            out["clip"] = {"fixed": self.clip.norm}
        else:
            c = self.clip
            out["clip"] = {"adaptive": {"quantile": c.quantile, "lr": c.lr, "initial": c.initial}}
        if self.mode is DpMode.DISTRIBUTED:
            out["distributed_noise"] = self.distributed_noise
        return out


def _clip_from(raw: object) -> FixedClip | AdaptiveClip:
    _need(
        isinstance(raw, Mapping) and len(raw) == 1 and set(raw) <= {"fixed", "adaptive"},
        "clip must be {fixed = C} or {adaptive = {quantile, lr}}",
    )
    assert isinstance(raw, Mapping)
    if "fixed" in raw:
        return FixedClip(norm=raw["fixed"])
    inner = raw["adaptive"]
    _need(isinstance(inner, Mapping), "clip.adaptive must be a table")
    unknown = sorted(set(inner) - {"quantile", "lr", "initial"})
    _need(not unknown, f"unknown key(s) in clip.adaptive: {', '.join(unknown)}")
    return AdaptiveClip(**inner)


# --- adaptive clipping ---------------------------------------------------------------------


def default_count_std(cohort: int) -> float:
    """Noise std on the count of unclipped devices: cohort / 20 (Andrew et al. 2021, Sec. 3),
    which costs the update noise only a few percent of its multiplier."""
    _need(cohort >= 1, "cohort must be >= 1")
    return cohort / 20.0


def split_noise_multiplier(noise_multiplier: float, count_std: float) -> float:
    """The update's noise multiplier z_u once the count takes its share:
    z_u = (z^-2 - (2 count_std)^-2)^(-1/2), so (updates, count) is as private as z."""
    z = _positive(noise_multiplier, "noise_multiplier")
    s = _positive(count_std, "count_std")
    rest = 1.0 / (z * z) - 1.0 / (4.0 * s * s)
    _need(
        rest > 0,
        f"count noise std {s:g} too small for noise multiplier {z:g}: need count_std > z / 2",
    )
    return 1.0 / math.sqrt(rest)


def noised_unclipped_fraction(
    unclipped: int | float, reports: int, count_std: float, rng: np.random.Generator
) -> float:
    """Central DP: the fraction of the ``reports`` devices whose update was within the clip
    bound, with N(0, count_std^2) added to the count. Under distributed DP the count
    arrives already noised: pass ``count_std=0`` and the noisy sum as ``unclipped``."""
    _need(reports >= 1 and 0 <= count_std < math.inf, "need reports >= 1 and count_std >= 0")
    noise = float(rng.standard_normal()) * count_std if count_std else 0.0
    return (float(unclipped) + noise) / reports


def adaptive_clip_update(
    clip: float, unclipped_fraction: float, *, quantile: float, lr: float
) -> float:
    """The next clip bound: C * exp(-lr * (b~ - quantile)). Too many unclipped devices
    (b~ > quantile) shrink C; the geometric step adapts across orders of magnitude."""
    _positive(clip, "clip")
    _need(math.isfinite(unclipped_fraction), "unclipped_fraction must be finite")
    return clip * math.exp(-lr * (unclipped_fraction - quantile))
