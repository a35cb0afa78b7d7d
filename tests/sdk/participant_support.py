"""What the participant's tests share: a device, its cohort, plans, stage requests, windows."""

from __future__ import annotations

import numpy as np

from fedrt.protocol import round_messages as rm
from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.prg import SeededRandom
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import Participant

SHA = "cd" * 32
MODEL = rm.ModelRef(version=2, sha256=SHA, url="/m")
UPDATE = rm.UpdateSpec(params=10, clip_norm=1.0, bits=8, weight_cap=50)
KEYS = [identity_from_seed(bytes([i + 1]) * 32) for i in range(4)]
COHORT = tuple(
    rm.CohortMember(device_id=f"dev-{i}", identity_key=k.public_key().public_bytes_raw())
    for i, k in enumerate(KEYS)
)


def participant(**cfg: object) -> Participant:
    config = pc.ParticipantConfig(device_id="dev-0", task_id="mnist", **cfg)  # type: ignore[arg-type]
    return Participant(
        config, identity=KEYS[0], rng=np.random.default_rng(0), random=SeededRandom(b"s" * 32)
    )


def plan(
    *,
    round_id: int = 5,
    secagg: bool = True,
    kind: rm.RoundKind = rm.RoundKind.TRAIN,
    msg_id: int = 10,
    client_id: int = 0,
) -> rm.Plan:
    spec = rm.SecAggSpec(client_id=client_id, threshold=3, neighbors=3, members=COHORT)
    return rm.Plan(
        msg_id=msg_id,
        task_id="mnist",
        round_id=round_id,
        kind=kind,
        model=MODEL,
        training=rm.TrainingConfig(),
        update=UPDATE,
        secagg=spec if secagg else None,
        report_within=100.0,
    )


def of(commands: list[pc.Command], kind: type) -> list[object]:
    return [c for c in commands if isinstance(c, kind)]


def snapshot(p: Participant) -> tuple[object, ...]:
    return (p.state, p.deadline, p.round_id, p.next_msg_id, p.unacknowledged, p.not_before)


def window(
    *,
    round_id: int = 5,
    msg_id: int = 40,
    earliest: float = 1.0,
    latest: float | None = None,
    reason: rm.ReconnectReason = rm.ReconnectReason.ROUND_ABANDONED,
) -> rm.ReconnectWindow:
    """A reconnect window for task mnist; ``latest`` defaults to a second after ``earliest``."""
    return rm.ReconnectWindow(
        msg_id=msg_id,
        task_id="mnist",
        round_id=round_id,
        reason=reason,
        earliest=earliest,
        latest=earliest + 1.0 if latest is None else latest,
    )


def request(
    msg_id: int,
    stage: rm.Stage,
    *,
    round_id: int = 5,
    payload: bytes = b"",
    respond_within: float = 5.0,
) -> rm.StageRequest:
    """The coordinator's request for ``stage`` of a round of task mnist."""
    return rm.StageRequest(msg_id=msg_id, task_id="mnist", round_id=round_id, stage=stage,
                           respond_within=respond_within, payload=payload)  # fmt: skip
