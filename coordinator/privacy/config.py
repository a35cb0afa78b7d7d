"""A task's differential-privacy settings (``DpConfig``) and adaptive clipping (Andrew et al.).

Task config shape (TOML / JSON), every combination checked on construction
(a pydantic model: the OpenAPI schema is generated from it)::

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
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
    model_validator,
)

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.validation import JsonFloat, Positive, WireModel

__all__ = [
    "AdaptiveClip",
    "AdaptiveClipSettings",
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


class FixedClip(WireModel):
    """``{fixed = C}``: every update is clipped to L2 norm C."""

    fixed: Positive

    @property
    def norm(self) -> float:
        return self.fixed


class AdaptiveClipSettings(WireModel):
    """Defaults from Andrew et al. 2021: the median, geometric rate 0.2, start at 0.1 (the
    rate lets C grow 20% a round)."""

    quantile: JsonFloat = Field(0.5, gt=0, lt=1)
    lr: Positive = 0.2
    initial: Positive = 0.1


class AdaptiveClip(WireModel):
    """``{adaptive = {quantile, lr, initial}}``: a clip bound tracking the ``quantile`` of
    update norms."""

    adaptive: AdaptiveClipSettings

    @property
    def quantile(self) -> float:
        return self.adaptive.quantile

    @property
    def lr(self) -> float:
        return self.adaptive.lr

    @property
    def initial(self) -> float:
        return self.adaptive.initial


def _clip_kind(value: object) -> str | None:
    """The tag of a clip: its one key (JSON) or its class (Python); None: neither shape."""
    if isinstance(value, FixedClip | AdaptiveClip):
        return "fixed" if isinstance(value, FixedClip) else "adaptive"
    if isinstance(value, Mapping) and len(value) == 1:
        (key,) = value
        return key if key in ("fixed", "adaptive") else None
    return None


Clip = Annotated[
    Annotated[FixedClip, Tag("fixed")] | Annotated[AdaptiveClip, Tag("adaptive")],
    Discriminator(
        _clip_kind,
        custom_error_type="clip_shape",
        custom_error_message="must be {fixed = C} or {adaptive = {quantile, lr, initial}}",
    ),
]
_NOISE = ("noise_multiplier", "target_epsilon")


def _mode_is(modes: list[str]) -> dict[str, Any]:
    return {"properties": {"mode": {"enum": modes}}}


class DpConfig(WireModel):
    """A task's DP settings. Exactly one of noise_multiplier / target_epsilon with noise."""

    model_config = ConfigDict(
        # The rules of _check that a schema can state: no noise, nothing to calibrate;
        # with noise, exactly one way to calibrate it.
        json_schema_extra={
            "if": _mode_is([DpMode.NONE.value]),
            "then": {"not": {"anyOf": [{"required": [k]} for k in (*_NOISE, "budget_epsilon")]}},
            "else": {"oneOf": [{"required": [k]} for k in _NOISE]},
        }
    )
    where = "dp"

    mode: DpMode = DpMode.NONE
    # None: unset (in JSON the key is left out: WireModel refuses null).
    noise_multiplier: Positive | None = None
    target_epsilon: Positive | None = None
    # 1e-5: below 1 / population for the >= 1,000-device populations DP is meant for.
    delta: JsonFloat = Field(1e-5, gt=0, lt=1)
    # Stop the task before a round would take the cumulative epsilon past this.
    budget_epsilon: Positive | None = None
    clip: Clip = FixedClip(fixed=1.0)
    # Distributed DP only: "discrete_gaussian" (Kairouz et al. 2021) or "skellam".
    distributed_noise: Literal["discrete_gaussian", "skellam"] = "discrete_gaussian"

    @model_validator(mode="after")
    def _check(self) -> DpConfig:
        given = [n for n in _NOISE if getattr(self, n) is not None]
        if self.mode is DpMode.NONE:
            extra = [*given, *(["budget_epsilon"] if self.budget_epsilon is not None else [])]
            _need(not extra, f"mode 'none' adds no noise, so {', '.join(extra)} cannot be set")
        else:
            _need(
                len(given) == 1,
                f"mode '{self.mode.value}' needs exactly one of noise_multiplier or "
                f"target_epsilon, got {', '.join(given) or 'neither'}",
            )
        if self.target_epsilon is not None and self.budget_epsilon is not None:
            _need(
                self.target_epsilon <= self.budget_epsilon,
                f"target_epsilon {self.target_epsilon} exceeds budget_epsilon "
                f"{self.budget_epsilon}: the task would stop before its last round",
            )
        return self

    @model_serializer(mode="wrap")
    def _canonical(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # What the store and the API show: unset keys left out, the noise kind only where
        # it is used (a stored spec reads back equal).
        out: dict[str, Any] = handler(self)
        for name in (*_NOISE, "budget_epsilon"):
            if out.get(name) is None:
                out.pop(name, None)
        if self.mode is not DpMode.DISTRIBUTED:
            out.pop("distributed_noise", None)
        return out

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
    def from_mapping(cls, raw: Any) -> DpConfig:
        """The config from its TOML/JSON table (see the module docstring); unknown keys refused."""
        return cls.from_json(raw)

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of ``from_mapping`` (what the store and the API show)."""
        return self.to_json()


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
