"""Glue between the round protocol and SecAgg+: one round's ``SecAggConfig`` from a plan.

Both sides build the SecAgg+ configuration with ``secagg_config`` from the same plan fields
(task, round, cohort, threshold, neighbours, update spec), so they agree on every parameter
by construction; the round id binds each signed SecAgg+ message to one round of one task.
"""

from __future__ import annotations

import hashlib
import struct

from fedrt.protocol import codec
from fedrt.protocol.messages import ClientMessage
from fedrt.protocol.round_dp import secure_length, secure_ring_bits
from fedrt.protocol.round_errors import UnexpectedMessage
from fedrt.protocol.round_messages import SecAggSpec, UpdateSpec
from fedrt.protocol.secagg_config import ROUND_ID_BYTES, Member, SecAggConfig


def secagg_round_id(task_id: str, round_id: int) -> bytes:
    """The SecAgg+ round id both sides derive from the task and round: a message signed for
    one round of one task can never be replayed into another."""
    digest = hashlib.sha256(
        b"fedrt/round/v1\x00" + task_id.encode() + b"\x00" + struct.pack(">Q", round_id)
    ).digest()
    return digest[:ROUND_ID_BYTES]


def secagg_config(
    *, task_id: str, round_id: int, spec: SecAggSpec, update: UpdateSpec
) -> SecAggConfig:
    """The SecAgg+ configuration of a round (raises ``ParameterError`` if inconsistent)."""
    return SecAggConfig(
        round_id=secagg_round_id(task_id, round_id),
        members=tuple(
            Member(device_id=m.device_id, identity_key=m.identity_key) for m in spec.members
        ),
        threshold=spec.threshold,
        neighbors=spec.neighbors,
        bits=secure_ring_bits(update, spec.n_clients),
        length=secure_length(update),
    )


def sender_of(payload: bytes) -> int:
    """The device index a SecAgg+ client message claims to come from (decodes it)."""
    message = codec.decode(payload)
    if not isinstance(message, ClientMessage):
        raise UnexpectedMessage(f"{type(message).__name__} is not a SecAgg+ client message")
    return message.sender


__all__ = ["secagg_config", "secagg_round_id", "sender_of"]
