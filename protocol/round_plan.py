"""The parts of a round plan: model reference, hyperparameters, update and SecAgg+ specs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fedrt.protocol.round_fields import (
    blob,
    fail,
    ident,
    positive,
    text,
    u64,
)

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRef:
    """Which model to start from: fetched over HTTP, verified before it is loaded."""

    version: int
    sha256: str
    url: str
    # The coordinator's Ed25519 signature over the artifact's sha256 (empty when unsigned).
    signature: bytes = b""

    def __post_init__(self) -> None:
        u64(self, "version")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise fail(ModelRef, "sha256 must be 64 lowercase hex digits")
        text(self, "url")
        blob(self, "signature", 128)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingConfig:
    """Local-training hyperparameters."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    # FedProx proximal term (Li et al. 2020); 0 is plain local SGD.
    fedprox_mu: float = 0.0
    # 0: no cap; otherwise stop after this many steps (bounds time on devices with much data).
    max_steps: int = 0

    def __post_init__(self) -> None:
        positive(self, "epochs", "batch_size")
        u64(self, "max_steps")
        for name in ("learning_rate", "fedprox_mu"):
            v = getattr(self, name)
            if not isinstance(v, float | int) or not (math.isfinite(v) and v >= 0):
                raise fail(TrainingConfig, f"{name} must be finite and >= 0, got {v!r}")
        if self.learning_rate <= 0:
            raise fail(TrainingConfig, "learning_rate must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class DpSpec:
    """Differential privacy on the device's vector (``round_dp``): integer noise added after
    quantization and before SecAgg+ masking, and the "within the clip bound" bit."""

    # Std, in quantization steps, of the noise each device adds to each coordinate (0: none).
    noise_std: float = 0.0
    # Skellam (difference of Poissons) instead of the discrete Gaussian.
    skellam: bool = False
    # Ring bits of the noisy sum (0: the usual b + ceil(log2 n)) and the bound h of its
    # noise: sums are read back centred, values above n (2^b - 1) + h being negative.
    ring_bits: int = 0
    noise_bound: int = 0
    # Send 1 if the update was within the clip bound (adaptive clipping), as one more secure
    # coordinate, with noise of this std (in units of the bit) when the noise is distributed.
    unclipped_bit: bool = False
    bit_noise_std: float = 0.0
    # L2 bound, in quantization steps, of a device's rounded parameters around the middle
    # level: the sensitivity the noise is calibrated to. Devices re-round until within it
    # (conditional randomized rounding, Kairouz et al. 2021). 0: no bound.
    rounded_norm: float = 0.0

    def __post_init__(self) -> None:
        u64(self, "ring_bits", "noise_bound")
        for name in ("noise_std", "bit_noise_std", "rounded_norm"):
            v = getattr(self, name)
            if not isinstance(v, float | int) or not (math.isfinite(v) and v >= 0):
                raise fail(DpSpec, f"{name} must be finite and >= 0, got {v!r}")
        if self.ring_bits > 62 or (self.noise_std and not self.ring_bits):
            raise fail(DpSpec, "noisy updates need ring_bits in 1..62")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSpec:
    """How a device turns its delta into what it sends: clip, weight, quantize."""

    # Number of float parameters of the flattened model (checked on both sides).
    params: int
    clip_norm: float
    # Quantization levels per coordinate: 2^bits.
    bits: int
    # The example count above which a device's weight stops growing (FedAvg weight = min(n, cap)).
    weight_cap: int
    # Non-empty: rotate the clipped delta with this seed before quantizing it, and quantize
    # each coordinate over a range sized for the rotated vector (``round_update``).
    rotation_seed: bytes = b""
    # Differential privacy done on the device (None: none).
    dp: DpSpec | None = None

    def __post_init__(self) -> None:
        positive(self, "params", "weight_cap")
        blob(self, "rotation_seed", 64)
        if self.dp is not None and not isinstance(self.dp, DpSpec):
            raise fail(UpdateSpec, "dp must be a DpSpec or None")
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise fail(UpdateSpec, f"bits must lie in [1, 32], got {self.bits!r}")
        v = self.clip_norm
        if not isinstance(v, float | int) or not (math.isfinite(v) and v > 0):
            raise fail(UpdateSpec, f"clip_norm must be finite and > 0, got {v!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortMember:
    """A selected device as SecAgg+ knows it: id and registered Ed25519 public key."""

    device_id: str
    identity_key: bytes

    def __post_init__(self) -> None:
        ident(self, "device_id")
        if not isinstance(self.identity_key, bytes) or len(self.identity_key) != 32:
            raise fail(CohortMember, "identity_key must be 32 raw bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggSpec:
    """SecAgg+ parameters of the round, the cohort, and this device's place in it.

    The whole cohort travels because each device derives the neighbour graph from the round
    id itself and checks its neighbours' signatures against their registered keys: the
    server cannot pick a device's neighbours or swap their keys.
    """

    # This device's index in ``members``.
    client_id: int
    threshold: int
    neighbors: int
    members: tuple[CohortMember, ...]

    def __post_init__(self) -> None:
        u64(self, "client_id")
        positive(self, "threshold", "neighbors")
        if not isinstance(self.members, tuple) or not all(
            isinstance(m, CohortMember) for m in self.members
        ):
            raise fail(SecAggSpec, "members must be a tuple of CohortMember")
        n = len(self.members)
        if self.client_id >= n:
            raise fail(SecAggSpec, "client_id must index members")
        # A device's secrets have k + 1 holders (its neighbours and itself).
        if self.neighbors > max(n - 1, 1) or self.threshold > self.neighbors + 1:
            raise fail(SecAggSpec, "need neighbors < len(members), threshold <= neighbors + 1")
        if len({m.device_id for m in self.members}) != n:
            raise fail(SecAggSpec, "a device appears twice in the cohort")

    @property
    def n_clients(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    name: str
    value: float

    def __post_init__(self) -> None:
        text(self, "name", 64)
        if not isinstance(self.value, float | int) or not math.isfinite(self.value):
            raise fail(Metric, f"{self.name}: value must be finite")


__all__ = [
    "CohortMember",
    "DpSpec",
    "Metric",
    "ModelRef",
    "SecAggSpec",
    "TrainingConfig",
    "UpdateSpec",
]
