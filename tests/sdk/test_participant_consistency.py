"""Participants against a real SecAgg+ server: one shown an uncertified survivor set leaves."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedrt.protocol import codec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.messages import UnmaskRequest
from fedrt.protocol.prg import SeededRandom
from fedrt.protocol.round_secagg import secagg_config
from fedrt.protocol.secagg_server import SecAggServer
from fedrt.protocol.topics import UpChannel
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import Participant, ParticipantState
from tests.sdk.participant_support import KEYS, UPDATE, of, plan, request

_STAGES = (rm.Stage.SHARE_KEYS, rm.Stage.MASKED_INPUT, rm.Stage.CONSISTENCY_CHECK)


def _payload(out: list[pc.Command]) -> bytes:
    (pub,) = of(out, pc.Publish)
    message = pub.message  # type: ignore[attr-defined]
    assert isinstance(message, rm.StageResponse)
    return message.payload


def _request(msg_id: int, stage: rm.Stage, payload: bytes) -> rm.StageRequest:
    return request(msg_id, stage, payload=payload, respond_within=30.0)


def test_an_uncertified_survivor_set_makes_the_device_abandon_and_go_idle() -> None:
    plans = [plan(client_id=i) for i in range(4)]
    devices = [
        Participant(
            pc.ParticipantConfig(device_id=f"dev-{i}", task_id="mnist"),
            identity=KEYS[i],
            rng=np.random.default_rng(i),
            random=SeededRandom(bytes([i + 1]) * 32),
        )
        for i in range(4)
    ]
    spec = plans[0].secagg
    assert spec is not None
    server = SecAggServer(secagg_config(task_id="mnist", round_id=5, spec=spec, update=UPDATE))
    for p, its_plan in zip(devices, plans, strict=True):
        p.receive(its_plan, 0.0)
        server.receive(_payload(p.training_done(np.full(10, 0.1), 20, 1.0)))
    requests = server.close_stage()
    msg_id = 100
    for stage in _STAGES:
        for i, payload in requests.items():
            server.receive(_payload(devices[i].receive(_request(msg_id, stage, payload), 2.0)))
            msg_id += 1
        requests = server.close_stage()
    assert set(requests) == {0, 1, 2, 3}
    # An honest unmask request is answered ...
    assert _payload(devices[1].receive(_request(200, rm.Stage.UNMASK, requests[1]), 3.0))
    # ... one without the committee's signatures on the set is not: the device leaves.
    forged = dataclasses.replace(codec.decode(requests[0]), signatures=())
    assert isinstance(forged, UnmaskRequest)
    out = devices[0].receive(_request(201, rm.Stage.UNMASK, codec.encode(forged)), 3.0)
    (pub,) = of(out, pc.Publish)
    abandon = pub.message  # type: ignore[attr-defined]
    assert isinstance(abandon, rm.Abandon)
    assert pub.channel is UpChannel.ROUND
    assert (abandon.round_id, abandon.reason) == (5, rm.AbandonReason.SERVER_INCONSISTENT)
    assert "consistency check failed" in abandon.detail
    (ended,) = of(out, pc.RoundEnded)
    assert ended.round_id == 5
    assert "consistency" in ended.detail
    assert of(out, pc.ScheduleCheckIn)
    assert devices[0].state is ParticipantState.IDLE
    assert devices[0].next_deadline() is None
