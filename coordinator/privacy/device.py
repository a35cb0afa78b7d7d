"""Distributed DP: the noise and the clip bit the devices of a round add (``protocol.round_dp``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceDp:
    """Differential privacy the devices take part in (``protocol.round_dp``)."""

    # Noise multiplier of the update sum the devices' noise adds up to (0: they add none).
    noise_multiplier: float = 0.0
    skellam: bool = False
    # Devices send the "within the clip bound" bit (adaptive clipping), with noise adding
    # up to this std on its sum when the noise is distributed.
    unclipped_bit: bool = False
    bit_sum_std: float = 0.0


__all__ = ["DeviceDp"]
