"""The device-side round participant, one event at a time."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.prg import SeededRandom
from fedrt.protocol.round_codec import encode_message
from fedrt.protocol.round_errors import (
    DuplicateMessageId,
    IllegalTransition,
    MalformedMessage,
    StaleMessage,
    UnexpectedMessage,
)
from fedrt.protocol.topics import UpChannel
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.participant import TRANSITIONS, Participant, ParticipantState

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
            rm.StageRequest(
                msg_id=11,
                task_id="mnist",
                round_id=5,
                stage=rm.Stage.UNMASK,
                respond_within=5.0,
                payload=b"",
            ),
            4.0,
        )
    with pytest.raises(ProtocolError):
        p.receive(
            rm.StageRequest(
                msg_id=12,
                task_id="mnist",
                round_id=5,
                stage=rm.Stage.SHARE_KEYS,
                respond_within=5.0,
                payload=b"junk",
            ),
            4.0,
        )
    with pytest.raises(StaleMessage):
        p.receive(
            rm.StageRequest(
                msg_id=13,
                task_id="mnist",
                round_id=4,
                stage=rm.Stage.SHARE_KEYS,
                respond_within=5.0,
                payload=b"",
            ),
            4.0,
        )
    assert snapshot(p) == before


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
    window = rm.ReconnectWindow(
        msg_id=3,
        task_id="mnist",
        round_id=5,
        reason=rm.ReconnectReason.ROUND_FULL,
        earliest=60.0,
        latest=90.0,
    )
    out = p.receive_data(encode_message(window), 10.0)
    (at,) = of(out, pc.ScheduleCheckIn)
    assert 70.0 <= at.at <= 100.0  # type: ignore[attr-defined]
    assert not of(out, pc.RoundEnded)
    assert not p.may_check_in(at.at - 0.1)  # type: ignore[attr-defined]
    assert p.may_check_in(at.at)  # type: ignore[attr-defined]
    with pytest.raises(UnexpectedMessage):
        p.receive(
            rm.ReconnectWindow(
                msg_id=4,
                task_id="mnist",
                round_id=5,
                reason=rm.ReconnectReason.NO_ROUND,
                earliest=1.0,
                latest=2.0,
            ),
            11.0,
        )


def test_a_window_during_training_cancels_it() -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(plan(), 0.0)
    out = p.receive(
        rm.ReconnectWindow(
            msg_id=30,
            task_id="mnist",
            round_id=5,
            reason=rm.ReconnectReason.ROUND_FULL,
            earliest=1.0,
            latest=2.0,
        ),
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
        rm.ReconnectWindow(
            msg_id=31,
            task_id="mnist",
            round_id=5,
            reason=rm.ReconnectReason.ROUND_ABANDONED,
            earliest=0.0,
            latest=0.0,
        ),
        2.0,
    )
    # A replayed plan of a round already taken part in is refused.
    with pytest.raises(StaleMessage):
        p.receive(plan(round_id=5, msg_id=99), 3.0)
    with pytest.raises(DuplicateMessageId):
        p.receive(
            rm.ReconnectWindow(
                msg_id=31,
                task_id="mnist",
                round_id=5,
                reason=rm.ReconnectReason.ROUND_ABANDONED,
                earliest=0.0,
                latest=0.0,
            ),
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


# --- the coordinator restarted --------------------------------------------------------------


def _window(round_id: int = 5, msg_id: int = 40, earliest: float = 1.0) -> rm.ReconnectWindow:
    return rm.ReconnectWindow(msg_id=msg_id, task_id="mnist", round_id=round_id,
                              reason=rm.ReconnectReason.ROUND_ABANDONED, earliest=earliest,
                              latest=earliest + 1.0)  # fmt: skip


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
    q.receive(_window(earliest=60.0), 1.0)
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
    (at,) = of(p.receive(_window(round_id=6, earliest=2.0), 1305.0), pc.ScheduleCheckIn)
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
    out = p.receive(_window(msg_id=4, earliest=1.0), 3.0)
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
