"""Central DP: Gaussian noise the trusted coordinator adds to a round's aggregate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import BadRequestError
from fedrt.protocol import dp

__all__ = ["CentralNoise"]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class CentralNoise:
    """N(0, (z C)^2) on the SUM of the clipped updates, i.e. z C / weight on their mean.

    ``noise_multiplier`` is what the update gets: with adaptive clipping pass
    ``privacy.config.split_noise_multiplier(z, count_std)``. The RNG is the round's own, so a
    seeded simulation is reproducible; a production coordinator passes an OS-seeded one.
    """

    noise_multiplier: float
    rng: np.random.Generator

    def __post_init__(self) -> None:
        z = self.noise_multiplier
        if not (np.isfinite(z) and z > 0):
            raise BadRequestError(f"noise_multiplier must be finite and > 0, got {z!r}")

    def sum_std(self, clip_norm: float) -> float:
        """Std of the noise on the sum of updates clipped to ``clip_norm`` (for the report)."""
        return self.noise_multiplier * clip_norm

    def apply(self, mean: npt.NDArray[np.floating], *, weight: float, clip_norm: float) -> Floats:
        """``mean`` (= sum / weight) with the sum's noise added. Under DP every device's
        weight is 1 (``weight_cap = 1``), so ``weight`` is the public count of reports."""
        if not weight > 0:
            raise BadRequestError(f"cannot noise a mean over weight {weight!r}")
        m = np.asarray(mean, dtype=np.float64)
        return m + dp.gaussian(self.sum_std(clip_norm), m.size, self.rng) / weight
