"""Which of a device's examples it holds out for evaluation: a seeded hash of each example id.

The task sets the share (``Plan.holdout``); the device owns the seed (drawn once and kept in
its example store, ``ExampleStore.holdout_seed``). An example is held out when the first 8
bytes of BLAKE2b(seed, id) read as a fraction of 2^64 fall below the share, so:

- the split is stable across rounds and restarts (ids never change, the seed is stored);
- examples added later fall on either side without moving the ones before them, and the
  retention policy dropping old examples moves none;
- a larger share holds out a superset of a smaller one's examples (one threshold moves);
- devices draw their own seeds, so no two devices' splits line up.

The device never trains on a held-out example; evaluation rounds evaluate only on them.
"""

from __future__ import annotations

import hashlib
import math

from fedrt.sdk.errors import SdkConfigError

__all__ = ["SEED_BYTES", "check_share", "held_out"]

SEED_BYTES = 16
_SCALE = float(2**64)


def check_share(share: float) -> float:
    """``share`` if it is a usable holdout share ([0, 1)), else ``SdkConfigError``."""
    if not (isinstance(share, float | int) and math.isfinite(share) and 0.0 <= share < 1.0):
        raise SdkConfigError(f"holdout share must lie in [0, 1), got {share!r}")
    return float(share)


def held_out(seed: bytes, example_id: int, share: float) -> bool:
    """Whether example ``example_id`` of the device with ``seed`` is held out at ``share``."""
    digest = hashlib.blake2b(example_id.to_bytes(8, "big"), key=seed, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < share
