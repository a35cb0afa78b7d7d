"""The device-side participant when its coordinator restarts: lost rounds, windows, back-offs."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.protocol import round_messages as rm
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import ParticipantState
from tests.sdk.participant_support import of, participant, plan, window


@pytest.mark.parametrize("stage", ["checked_in", "training", "reporting"])
def test_a_new_incarnation_ends_the_round_and_checks_in_soon(stage: str) -> None:
    p = participant()
    assert p.coordinator_online("aa11aa11", 0.0) == []  # the first heard is only noted
    p.check_in(0.0)
    if stage != "checked_in":
        p.receive(plan(), 1.0)
    if stage == "reporting":
        p.training_done(np.full(10, 0.1), 20, 2.0)
    sent = p.unacknowledged
    assert p.coordinator_online("aa11aa11", 3.0) == []  # the same again: a broker restart
    assert p.coordinator_online(None, 3.0) == []  # a coordinator that names none
    out = p.coordinator_online("bb22bb22", 10.0)
    assert {c.msg_id for c in of(out, pc.Forget)} == set(sent)  # type: ignore[attr-defined]
    assert not of(out, pc.Publish)  # no Abandon: the round is gone with the old process
    assert bool(of(out, pc.CancelTraining)) == (stage == "training")
    assert [e.round_id for e in of(out, pc.RoundEnded)] == ([] if stage == "checked_in" else [5])  # type: ignore[attr-defined]
    (at,) = of(out, pc.ScheduleCheckIn)
    assert 10.0 <= at.at <= 10.0 + 20.0  # type: ignore[attr-defined]
    assert p.state is ParticipantState.IDLE
    assert p.unacknowledged == frozenset()
    assert p.may_check_in(at.at)  # type: ignore[attr-defined]
    assert p.round_facts().coordinator == "bb22bb22"


def test_after_a_restart_an_idle_device_in_its_silence_back_off_comes_back_soon() -> None:
    p = participant(restart_spread=5.0)
    p.coordinator_online("aa11aa11", 0.0)
    p.check_in(0.0)
    p.tick(300.0)  # no plan, no window: the long back-off
    assert not p.may_check_in(300.0 + 700.0)
    (at,) = of(p.coordinator_online("bb22bb22", 400.0), pc.ScheduleCheckIn)
    assert 400.0 <= at.at <= 405.0  # type: ignore[attr-defined]
    # One holding a window the coordinator gave keeps it.
    q = participant(restart_spread=5.0)
    q.coordinator_online("aa11aa11", 0.0)
    q.check_in(0.0)
    q.receive(window(earliest=60.0), 1.0)
    before = q.not_before
    assert of(q.coordinator_online("bb22bb22", 2.0), pc.ScheduleCheckIn) == []
    assert q.not_before == before


def test_a_stale_refusal_does_not_end_a_new_check_in_and_a_window_replaces_a_back_off() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 1.0)
    (abandon,) = of(p.tick(100.0), pc.Publish)  # training too slow: Abandon, long back-off
    p.not_before = 0.0
    p.check_in(1000.0)
    # The refusal of that older Abandon (it came after the round was over) says nothing
    # about the new check-in.
    late = rm.Ack(msg_id=7, task_id="mnist", round_id=6,
                  acked=abandon.message.msg_id, status=rm.AckStatus.LATE)  # type: ignore[attr-defined]  # fmt: skip
    assert p.receive(late, 1001.0) == [pc.Forget(msg_id=late.acked)]
    assert p.state is ParticipantState.CHECKED_IN
    # A device that gave up on silence takes the coordinator's window when one comes after.
    p.tick(1000.0 + 300.0)
    assert p.state is ParticipantState.IDLE
    assert p.not_before > 1300.0 + 700.0
    (at,) = of(p.receive(window(round_id=6, earliest=2.0), 1305.0), pc.ScheduleCheckIn)
    assert 1307.0 <= at.at <= 1308.0  # type: ignore[attr-defined]


def test_a_late_answer_in_a_lost_round_ends_on_the_window_that_follows() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(secagg=False), 1.0)
    (update,) = of(p.training_done(np.full(10, 0.1), 20, 2.0), pc.Publish)
    # A restarted coordinator's answer: LATE for the lost round 5, then a short window.
    ack = rm.Ack(msg_id=3, task_id="mnist", round_id=0,
                 acked=update.message.msg_id, status=rm.AckStatus.LATE)  # type: ignore[attr-defined]  # fmt: skip
    assert p.receive(ack, 3.0) == [pc.Forget(msg_id=ack.acked)]
    assert p.state is ParticipantState.REPORTING
    out = p.receive(window(msg_id=4, earliest=1.0), 3.0)
    (ended,) = of(out, pc.RoundEnded)
    assert ended.reason is rm.ReconnectReason.ROUND_ABANDONED  # type: ignore[attr-defined]
    (at,) = of(out, pc.ScheduleCheckIn)
    assert at.at <= 5.0  # type: ignore[attr-defined]


def test_a_model_it_cannot_get_checks_in_again_once_the_abandon_is_acknowledged() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 1.0)
    out = p.training_abandoned(rm.AbandonReason.MODEL_UNAVAILABLE, 2.0, "bad signature")
    (pub,) = of(out, pc.Publish)
    assert not p.may_check_in(3.0)
    ack = rm.Ack(msg_id=5, task_id="mnist", round_id=5, acked=pub.message.msg_id,  # type: ignore[attr-defined]
                 status=rm.AckStatus.ACCEPTED)  # fmt: skip
    assert pc.ScheduleCheckIn(at=3.0) in p.receive(ack, 3.0)
    assert p.may_check_in(3.0)
