"""The device-side round participant, one event at a time."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import encode_message
from fedrt.protocol.round_errors import (
    DuplicateMessageId,
    IllegalTransition,
    MalformedMessage,
    StaleMessage,
    UnexpectedMessage,
)
from fedrt.protocol.round_secagg import secagg_config
from fedrt.protocol.topics import UpChannel
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.participant import TRANSITIONS, ParticipantState
from tests.sdk.participant_support import (
    UPDATE,
    of,
    participant,
    plan,
    request,
    snapshot,
    window,
)


def test_transitions_cover_every_state() -> None:
    assert set(TRANSITIONS) == set(ParticipantState)


def test_check_in_then_plan_then_train() -> None:
    p = participant()
    assert p.may_check_in(0.0)
    out = p.check_in(0.0)
    (pub,) = of(out, pc.Publish)
    assert pub.channel is UpChannel.CHECKIN  # type: ignore[attr-defined]
    assert isinstance(pub.message, rm.CheckIn)  # type: ignore[attr-defined]
    assert p.state is ParticipantState.CHECKED_IN
    with pytest.raises(IllegalTransition):
        p.check_in(1.0)
    out = p.receive(plan(), 2.0)
    (train,) = of(out, pc.Train)
    assert train.deadline == pytest.approx(2.0 + 100.0 - 5.0)  # type: ignore[attr-defined]
    assert p.state is ParticipantState.TRAINING


def test_training_done_sends_keys_and_answers_each_stage_request_once() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 1.0)
    out = p.training_done(np.full(10, 0.1), 20, 3.0)
    (pub,) = of(out, pc.Publish)
    msg = pub.message  # type: ignore[attr-defined]
    assert pub.channel is UpChannel.ROUND  # type: ignore[attr-defined]
    assert (msg.stage, msg.round_id) == (rm.Stage.ADVERTISE_KEYS, 5)
    assert p.state is ParticipantState.REPORTING
    # A request for a stage that does not come next, or with a payload that is not SecAgg+.
    before = snapshot(p)
    with pytest.raises(UnexpectedMessage):
        p.receive(
            request(11, rm.Stage.UNMASK),
            4.0,
        )
    with pytest.raises(ProtocolError):
        p.receive(
            request(12, rm.Stage.SHARE_KEYS, payload=b"junk"),
            4.0,
        )
    with pytest.raises(StaleMessage):
        p.receive(
            request(13, rm.Stage.SHARE_KEYS, round_id=4),
            4.0,
        )
    assert snapshot(p) == before


def test_the_secagg_client_runs_on_the_configuration_built_when_the_plan_was_checked() -> None:
    p = participant()
    p.check_in(0.0)
    secagg_plan = plan()
    assert secagg_plan.secagg is not None
    p.receive(secagg_plan, 1.0)
    checked = p._secagg
    assert checked == secagg_config(
        task_id="mnist", round_id=5, spec=secagg_plan.secagg, update=UPDATE
    )
    p.training_done(np.full(10, 0.1), 20, 3.0)
    assert p._client is not None
    assert p._client.config is checked
    # A plain round's plan has none.
    p.receive(window(msg_id=30, earliest=0.0, latest=0.0), 4.0)
    p.check_in(5.0)
    p.receive(plan(round_id=6, msg_id=31, secagg=False), 5.0)
    assert p._secagg is None


def test_plain_update_goes_on_the_update_channel_at_its_exact_size() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(secagg=False), 1.0)
    (pub,) = of(p.training_done(np.full(10, 0.1), 20, 3.0), pc.Publish)
    msg = pub.message  # type: ignore[attr-defined]
    assert pub.channel is UpChannel.UPDATE  # type: ignore[attr-defined]
    assert msg.stage is rm.Stage.PLAIN_UPDATE
    vector = round_update.unpack(msg.payload, UPDATE)
    delta, count = round_update.decode_one(vector, UPDATE)
    assert count == 20
    np.testing.assert_allclose(delta, 0.1, atol=round_update.step(UPDATE))


def test_a_delta_of_the_wrong_size_raises_and_keeps_training() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 1.0)
    before = snapshot(p)
    with pytest.raises(ProtocolError):
        p.training_done(np.zeros(11), 20, 2.0)
    assert snapshot(p) == before
    out = p.training_abandoned(rm.AbandonReason.ERROR, 2.0, "model mismatch")
    (pub,) = of(out, pc.Publish)
    assert pub.message.reason is rm.AbandonReason.ERROR  # type: ignore[attr-defined]
    assert p.state is ParticipantState.IDLE
    (at,) = of(out, pc.ScheduleCheckIn)
    assert 2.0 + 720.0 <= at.at <= 2.0 + 1080.0  # type: ignore[attr-defined]


def test_deadlines_abandon_training_and_give_up_on_silence() -> None:
    p = participant(grace=10.0)
    p.check_in(0.0)
    p.receive(plan(), 0.0)
    assert p.tick(94.0) == []
    out = p.tick(95.0)
    assert of(out, pc.CancelTraining)
    (pub,) = of(out, pc.Publish)
    assert pub.message.reason is rm.AbandonReason.DEADLINE  # type: ignore[attr-defined]
    assert p.state is ParticipantState.IDLE
    assert not p.may_check_in(100.0)
    # Next round: answer, then hear nothing.
    p.not_before = 0.0
    p.check_in(1000.0)
    p.receive(plan(round_id=6), 1000.0)
    p.training_done(np.zeros(10), 5, 1001.0)
    assert p.next_deadline() == pytest.approx(1001.0 + 100.0 + 10.0)
    (ended,) = of(p.tick(1111.0), pc.RoundEnded)
    assert ended.reason is None  # type: ignore[attr-defined]
    assert p.state is ParticipantState.IDLE


def test_late_training_result_becomes_an_abandon() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 0.0)
    out = p.training_done(np.zeros(10), 5, 200.0)
    assert [type(c.message) for c in of(out, pc.Publish)] == [rm.Abandon]  # type: ignore[attr-defined]


def test_acks_forget_and_duplicates_are_refused() -> None:
    p = participant()
    (pub,) = of(p.check_in(0.0), pc.Publish)
    msg_id = pub.message.msg_id  # type: ignore[attr-defined]
    ack = rm.Ack(msg_id=1, task_id="mnist", round_id=5, acked=msg_id, status=rm.AckStatus.ACCEPTED)
    assert p.receive(ack, 1.0) == [pc.Forget(msg_id=msg_id)]
    assert p.unacknowledged == frozenset()
    with pytest.raises(DuplicateMessageId):
        p.receive(ack, 1.0)
    other = rm.Ack(msg_id=2, task_id="mnist", round_id=5, acked=999, status=rm.AckStatus.ACCEPTED)
    with pytest.raises(DuplicateMessageId):
        p.receive(other, 1.0)


def test_a_refused_check_in_backs_off() -> None:
    p = participant()
    (pub,) = of(p.check_in(0.0), pc.Publish)
    out = p.receive(
        rm.Ack(
            msg_id=1,
            task_id="mnist",
            round_id=5,
            acked=pub.message.msg_id,  # type: ignore[attr-defined]
            status=rm.AckStatus.REJECTED,
        ),
        1.0,
    )
    assert of(out, pc.ScheduleCheckIn)
    assert p.state is ParticipantState.IDLE


def test_reconnect_window_schedules_the_next_check_in_inside_it() -> None:
    p = participant()
    p.check_in(0.0)
    full = window(msg_id=3, earliest=60.0, latest=90.0, reason=rm.ReconnectReason.ROUND_FULL)
    out = p.receive_data(encode_message(full), 10.0)
    (at,) = of(out, pc.ScheduleCheckIn)
    assert 70.0 <= at.at <= 100.0  # type: ignore[attr-defined]
    assert not of(out, pc.RoundEnded)
    assert not p.may_check_in(at.at - 0.1)  # type: ignore[attr-defined]
    assert p.may_check_in(at.at)  # type: ignore[attr-defined]
    with pytest.raises(UnexpectedMessage):
        p.receive(
            window(msg_id=4, earliest=1.0, reason=rm.ReconnectReason.NO_ROUND),
            11.0,
        )


def test_a_window_during_training_cancels_it() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 0.0)
    out = p.receive(
        window(msg_id=30, earliest=1.0, reason=rm.ReconnectReason.ROUND_FULL),
        5.0,
    )
    assert of(out, pc.CancelTraining)
    (ended,) = of(out, pc.RoundEnded)
    assert ended.reason is rm.ReconnectReason.ROUND_FULL  # type: ignore[attr-defined]


def test_bad_plans_change_nothing() -> None:
    p = participant()
    p.check_in(0.0)
    before = snapshot(p)
    with pytest.raises(MalformedMessage, match="another device"):
        p.receive(plan(client_id=1), 1.0)
    with pytest.raises(StaleMessage):
        p.receive(rm.Plan(**{**_fields(plan()), "task_id": "other"}), 1.0)
    assert snapshot(p) == before
    p.receive(plan(round_id=5), 1.0)
    p.receive(
        window(msg_id=31, earliest=0.0, latest=0.0),
        2.0,
    )
    # A replayed plan of a round already taken part in is refused.
    with pytest.raises(StaleMessage):
        p.receive(plan(round_id=5, msg_id=99), 3.0)
    with pytest.raises(DuplicateMessageId):
        p.receive(
            window(msg_id=31, earliest=0.0, latest=0.0),
            3.0,
        )


def test_evaluation_plans_evaluate_and_report_sums() -> None:
    p = participant()
    p.check_in(0.0)
    (ev,) = of(p.receive(plan(kind=rm.RoundKind.EVALUATE, secagg=False), 0.0), pc.Evaluate)
    with pytest.raises(IllegalTransition):
        p.training_done(np.zeros(10), 1, 1.0)
    (pub,) = of(p.evaluation_done(40, {"loss_sum": 12.0, "correct": 30}, 1.0), pc.Publish)
    report = pub.message  # type: ignore[attr-defined]
    assert isinstance(report, rm.EvalReport)
    assert report.n_examples == 40
    assert {m.name: m.value for m in report.metrics} == {"loss_sum": 12.0, "correct": 30}
    assert ev.plan.kind is rm.RoundKind.EVALUATE  # type: ignore[attr-defined]


def test_announcements_gate_check_ins_and_other_tasks_are_refused() -> None:
    p = participant()
    p.receive(rm.TaskAnnouncement(msg_id=1, task_id="mnist", accepting=False, round_id=3), 0.0)
    assert not p.may_check_in(0.0)
    p.receive(rm.TaskAnnouncement(msg_id=2, task_id="mnist", accepting=True, round_id=4), 0.0)
    assert p.may_check_in(0.0)
    with pytest.raises(StaleMessage):
        p.receive(rm.TaskAnnouncement(msg_id=3, task_id="other", accepting=True, round_id=4), 0.0)
    with pytest.raises(UnexpectedMessage):
        p.receive_data(encode_message(rm.CheckIn(msg_id=1, task_id="mnist", sdk_version="")), 0)


def test_config_is_validated() -> None:
    with pytest.raises(SdkConfigError):
        pc.ParticipantConfig(device_id="a/b", task_id="mnist")
    with pytest.raises(SdkConfigError):
        pc.ParticipantConfig(device_id="a", task_id="mnist", retry_latest=1.0)


def _fields(msg: rm.Plan) -> dict[str, object]:
    return {name: getattr(msg, name) for name in msg.__dataclass_fields__}
