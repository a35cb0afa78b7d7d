"""A participant restarted mid-round resumes (nothing lost) or abandons (secrets lost) cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import IllegalTransition, StaleMessage, UnexpectedMessage
from fedrt.protocol.topics import UpChannel
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.participant import Participant, ParticipantState
from fedrt.sdk.round_facts import STATE_FILE, RoundFacts, load_state, save_state
from tests.sdk.participant_support import KEYS, of, participant, plan, request

P = ParticipantState


def _stopped(p: Participant) -> tuple[RoundFacts, int]:
    """What a device process wrote to disk before it died, read back as the next one does."""
    return RoundFacts.from_json(json.loads(json.dumps(p.round_facts().to_json()))), p.next_msg_id


def _restarted(p: Participant, now: float) -> tuple[Participant, list[pc.Command]]:
    facts, next_id = _stopped(p)
    fresh = Participant(
        p.config, identity=KEYS[0], rng=np.random.default_rng(1), first_msg_id=next_id
    )
    return fresh, fresh.restart(facts, now)


def _ack(acked: int, *, msg_id: int = 90, status: rm.AckStatus = rm.AckStatus.ACCEPTED) -> rm.Ack:
    return rm.Ack(msg_id=msg_id, task_id="mnist", round_id=5, acked=acked, status=status)


def test_a_secagg_round_is_abandoned_its_answers_forgotten_and_check_in_waits_for_the_ack() -> None:
    before = participant(checkin_timeout=30.0)
    before.check_in(0.0)
    before.receive(plan(), 1.0)
    keys = of(before.training_done(np.full(10, 0.1), 20, 2.0), pc.Publish)[0]
    sent = before.unacknowledged
    assert keys.message.msg_id in sent  # type: ignore[attr-defined]

    p, out = _restarted(before, 100.0)
    forgotten = {c.msg_id for c in of(out, pc.Forget)}  # type: ignore[attr-defined]
    assert forgotten == set(sent)  # the outbox drops the lost round's answers, keys included
    (pub,) = of(out, pc.Publish)
    abandon = pub.message  # type: ignore[attr-defined]
    assert pub.channel is UpChannel.ROUND  # type: ignore[attr-defined]
    assert isinstance(abandon, rm.Abandon)
    assert (abandon.round_id, abandon.reason) == (5, rm.AbandonReason.RESTARTED)
    assert abandon.msg_id >= before.next_msg_id  # never an id the dead process used
    (ended,) = of(out, pc.RoundEnded)
    assert ended.round_id == 5
    assert ended.reason is None
    assert p.state is P.IDLE
    assert p.unacknowledged == {abandon.msg_id}
    # No check-in before the coordinator heard of the abandon (or checkin_timeout passed).
    assert not p.may_check_in(100.0)
    assert of(out, pc.ScheduleCheckIn) == [pc.ScheduleCheckIn(at=130.0)]
    back = p.receive(_ack(abandon.msg_id, status=rm.AckStatus.LATE), 101.0)
    assert back == [pc.Forget(msg_id=abandon.msg_id), pc.ScheduleCheckIn(at=101.0)]
    assert p.may_check_in(101.0)
    # What the coordinator had queued for the lost round is refused; the next round is taken.
    stale = request(91, rm.Stage.SHARE_KEYS)
    with pytest.raises(UnexpectedMessage):
        p.receive(stale, 101.0)
    with pytest.raises(StaleMessage):
        p.receive(plan(msg_id=92), 101.0)
    assert of(p.receive(plan(round_id=6, msg_id=93), 102.0), pc.Train)


def test_training_is_abandoned_too() -> None:
    before = participant()
    before.check_in(0.0)
    before.receive(plan(secagg=False), 1.0)
    p, out = _restarted(before, 5.0)
    (pub,) = of(out, pc.Publish)
    assert pub.message.reason is rm.AbandonReason.RESTARTED  # type: ignore[attr-defined]
    assert "training" in pub.message.detail  # type: ignore[attr-defined]
    assert p.state is P.IDLE


def test_a_plain_update_already_sent_is_kept_and_the_round_end_awaited() -> None:
    before = participant(grace=10.0)
    before.check_in(0.0)
    before.receive(plan(secagg=False), 1.0)
    (update,) = of(before.training_done(np.full(10, 0.1), 20, 2.0), pc.Publish)
    update_id = update.message.msg_id  # type: ignore[attr-defined]

    p, out = _restarted(before, 50.0)
    assert out == []  # the outbox still holds the update and resends it
    assert (p.state, p.round_id, p.deadline) == (P.REPORTING, 5, 60.0)
    assert update_id in p.unacknowledged
    assert p.receive(_ack(update_id), 51.0) == [pc.Forget(msg_id=update_id)]
    window = rm.ReconnectWindow(msg_id=91, task_id="mnist", round_id=5,
                                reason=rm.ReconnectReason.ROUND_COMPLETE, earliest=1.0,
                                latest=2.0)  # fmt: skip
    out = p.receive(window, 52.0)
    assert of(out, pc.RoundEnded) == [
        pc.RoundEnded(round_id=5, reason=rm.ReconnectReason.ROUND_COMPLETE)
    ]
    assert p.state is P.IDLE


def test_a_check_in_keeps_waiting_for_its_plan_and_idle_stays_idle() -> None:
    before = participant(checkin_timeout=20.0)
    before.check_in(0.0)
    p, out = _restarted(before, 3.0)
    assert out == []
    assert (p.state, p.deadline) == (P.CHECKED_IN, 23.0)
    assert of(p.receive(plan(), 4.0), pc.Train)
    idle, out = _restarted(participant(), 3.0)
    assert out == []
    assert idle.state is P.IDLE
    assert idle.may_check_in(3.0)


def test_restart_comes_first_and_bad_facts_are_typed_errors() -> None:
    p = participant()
    p.check_in(0.0)
    with pytest.raises(IllegalTransition):
        p.restart(RoundFacts(state="idle"), 1.0)
    for bad in (
        [],
        {"state": "dreaming"},
        {"state": "training", "round_id": -1},
        {"state": "reporting", "round_id": 3, "answered": "GOSSIP"},
        {"state": "idle", "unacked": [1, "2"]},
        {"state": "idle", "unacked": 5},
        {"state": "idle", "secagg": "yes"},
        {"state": "idle", "surprise": 1},
        {"state": "idle", "coordinator": "not hex"},
        {"state": "idle", "cohort": 3},
        {"state": "idle", "cohort": [[4]]},
        {"state": "idle", "cohort": [[4, -1]]},
    ):
        with pytest.raises(SdkConfigError):
            RoundFacts.from_json(bad)
    facts = RoundFacts(state="reporting", round_id=3, answered=rm.Stage.MASKED_INPUT,
                       secagg=True, unacked=(4, 9), coordinator="0a1b2c3d",
                       cohort=((9, 3),))  # fmt: skip
    assert RoundFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
    # An older SDK's file names no cohort replies, and a file without them is one it reads.
    assert RoundFacts.from_json({"state": "idle", "unacked": [4]}).cohort == ()
    assert "cohort" not in RoundFacts(state="idle", unacked=(4,)).to_json()


def test_a_device_restarted_across_a_coordinator_restart_leaves_its_round() -> None:
    before = participant(checkin_timeout=20.0)
    before.coordinator_online("0a1b2c3d", 0.0)
    before.check_in(0.0)
    p, _ = _restarted(before, 3.0)  # resumes waiting for its plan ...
    assert p.coordinator_online("0a1b2c3d", 3.0) == []
    assert p.state is P.CHECKED_IN
    p, _ = _restarted(before, 3.0)  # ... unless the coordinator it waited on is gone
    assert of(p.coordinator_online("4e5f6a7b", 3.0), pc.ScheduleCheckIn)
    assert p.state is P.IDLE


def test_save_state_writes_only_what_changed_and_load_state_reads_it_back(tmp_path: Path) -> None:
    facts = participant().round_facts()
    first = save_state(tmp_path, next_msg_id=7, task_id="mnist", facts=facts)
    path = tmp_path / STATE_FILE
    assert load_state(tmp_path) == json.loads(first)
    assert load_state(tmp_path)["next_msg_id"] == 7
    path.write_text("{}")  # were the same state saved again, this would be overwritten
    assert save_state(tmp_path, next_msg_id=7, task_id="mnist", facts=facts, written=first) == first
    assert path.read_text() == "{}"
    second = save_state(tmp_path, next_msg_id=8, task_id="mnist", facts=facts, written=first)
    assert second != first
    assert load_state(tmp_path)["next_msg_id"] == 8
