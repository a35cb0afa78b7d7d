"""A device's update on the wire: its per-device key, and the plain or SecAgg+ first answer."""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.protocol import round_dp, round_update
from fedrt.protocol import round_messages as rm
from fedrt.protocol.prg import KeyedUniforms, RandomSource
from fedrt.protocol.secagg_client import SecAggClient
from fedrt.protocol.secagg_config import SecAggConfig
from fedrt.sdk.jitter import Jitter

__all__ = ["encode_update", "new_update_key"]


def new_update_key(rng: Jitter) -> bytes:
    """The key of a device's update randomness, drawn once per participant.

    The update's randomness (stochastic rounding, DP noise) comes from its own stream per
    round, so it does not depend on how many retries jittered ``rng`` before: the same seed
    gives the same update whatever the network timing was. The DP noise is a secret: its
    key carries 4 x 63 = 252 bits (from the OS on a device)."""
    return b"".join(int(rng.integers(2**63)).to_bytes(8, "big") for _ in range(4))


def encode_update(
    delta: npt.NDArray[np.floating],
    n_examples: int,
    plan: rm.Plan,
    *,
    update_key: bytes,
    identity: Ed25519PrivateKey,
    random: RandomSource,
    secagg: SecAggConfig | None,
) -> tuple[rm.Stage, bytes, SecAggClient | None]:
    """The stage and payload answering ``plan`` with ``delta``, and the SecAgg+ client that
    answers the round's later stages (None for a plain update). ``secagg``: the plan's
    SecAgg+ configuration, as the participant built it when it checked the plan."""
    masked = plan.secagg is not None
    vector: npt.NDArray[np.unsignedinteger]
    # Stochastic rounding and DP noise draw from the AES-CTR PRG (never numpy.random),
    # each under its own key: the noise is a secret, as unpredictable as the masks.
    seed_round = b"\x00" + update_key + b"\x00%d" % plan.round_id
    rounding = KeyedUniforms(hashlib.sha256(b"fedrt/update-rounding/v1" + seed_round).digest())
    if masked and plan.update.dp is not None:  # noise and clip bit before masking
        noise = KeyedUniforms(hashlib.sha256(b"fedrt/dp-noise/v1" + seed_round).digest())
        vector = round_dp.device_vector(delta, n_examples, plan.update, rounding, noise=noise)
    else:
        vector = round_update.encode(delta, n_examples, plan.update, rounding, weighted=masked)
    if plan.secagg is None:
        return rm.Stage.PLAIN_UPDATE, round_update.pack(vector, plan.update.bits), None
    assert secagg is not None  # a SecAgg+ plan was checked into its configuration
    client = SecAggClient(
        secagg,
        index=plan.secagg.client_id,
        identity=identity,
        random=random,
    )
    payload = client.start()
    client.set_input(vector)
    return rm.Stage.ADVERTISE_KEYS, payload, client
