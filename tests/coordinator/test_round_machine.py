"""The coordinator's round state machine, one event at a time."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.states import FINAL, TRANSITIONS, RoundState
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.strategies import CoordinateMedian, FedAvg, OptimizerState
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import encode_message
from fedrt.protocol.round_errors import (
    DuplicateMessageId,
    IllegalTransition,
    LateMessage,
    MalformedMessage,
    StaleMessage,
    UnexpectedMessage,
    UnknownParticipant,
)
from tests.coordinator.round_harness import Network, config

M = 20


def machine(cfg: rc.RoundConfig, keys: dict[str, bytes] | None = None) -> RoundMachine:
    if keys is None:
        keys = {f"dev-{i:02d}": bytes([i + 1]) * 32 for i in range(20)}
    return RoundMachine(
        cfg,
        weights=np.zeros(M, np.float32),
        optimizer=FedAvg(),
        optimizer_state=OptimizerState(),
        pace=PaceSteering(),
        rng=np.random.default_rng(0),
        identity_keys=keys,
    )


def checkin(d: int, msg_id: int = 1, task: str = "mnist") -> rm.CheckIn:
    return rm.CheckIn(msg_id=msg_id, task_id=task, sdk_version="t")


def sent(commands: list[rc.Command], kind: type) -> list[tuple[str, object]]:
    return [
        (c.device_id, c.message)
        for c in commands
        if isinstance(c, rc.Send) and isinstance(c.message, kind)
    ]


def snapshot(m: RoundMachine) -> tuple[object, ...]:
    return (m.state, m.status(), m.next_msg_id, m.next_deadline())


def test_transition_table_is_closed_and_final_states_are_sinks() -> None:
    assert set(TRANSITIONS) == set(RoundState)
    for state in FINAL:
        assert TRANSITIONS[state] == frozenset()
    # Every non-final state can be abandoned except before the round opened.
    for state in set(RoundState) - FINAL - {RoundState.CREATED}:
        assert RoundState.ABANDONED in TRANSITIONS[state]


def test_start_announces_and_check_ins_close_selection_at_the_pool_target() -> None:
    # 6 selected (4 x 1.5) from a pool of 8: every eligible device (population) is in.
    m = machine(
        config(goal_count=4, over_selection=1.5, min_reports=3, pool_factor=4.0, population=8)
    )
    out = m.start(0.0)
    (ann,) = [c for c in out if isinstance(c, rc.Announce)]
    assert ann.message.accepting
    assert m.state is RoundState.CHECK_IN
    for i in range(7):
        out = m.receive(f"dev-{i:02d}", checkin(i), 1.0)
        assert m.state is RoundState.CHECK_IN
        assert sent(out, rm.Ack)[0][1].status is rm.AckStatus.ACCEPTED  # type: ignore[attr-defined]
    out = m.receive("dev-07", checkin(7), 2.0)
    assert m.state is RoundState.TRAINING
    plans = sent(out, rm.Plan)
    assert len(plans) == 6
    # The two the sample left out are told to come back (when the next round opens).
    left = sent(out, rm.ReconnectWindow)
    assert len(left) == 2
    assert not {d for d, _ in left} & {d for d, _ in plans}
    for _, w in left:
        assert w.reason is rm.ReconnectReason.ROUND_FULL  # type: ignore[attr-defined]
        assert w.earliest < 60.0 + 30.0 + 1.0  # type: ignore[attr-defined]
    assert m.status().checked_in == 8
    assert m.status().active == 6
    ids = sorted(p.secagg.client_id for _, p in plans)  # type: ignore[attr-defined]
    assert ids == list(range(6))
    plan = plans[0][1]
    assert isinstance(plan, rm.Plan)
    assert plan.secagg is not None
    assert [mb.device_id for mb in plan.secagg.members] == [
        d
        for d, p in sorted(
            plans,
            key=lambda x: x[1].secagg.client_id,  # type: ignore[attr-defined]
        )
    ]
    assert plan.update.params == M
    assert plan.report_within == 60.0
    assert not next(c for c in out if isinstance(c, rc.Announce)).message.accepting
    # A late check-in is acknowledged and sent away for later.
    out = m.receive("dev-08", checkin(8), 3.0)
    (window,) = sent(out, rm.ReconnectWindow)
    assert window[1].reason is rm.ReconnectReason.ROUND_FULL  # type: ignore[attr-defined]
    assert window[1].earliest >= 60.0  # type: ignore[attr-defined]
    assert sent(out, rm.Ack)


def test_bad_check_ins_raise_and_change_nothing() -> None:
    m = machine(config(), keys={"dev-00": b"\x01" * 32, "dev-01": b"\x02" * 32})
    with pytest.raises(IllegalTransition):
        m.receive("dev-00", checkin(0), 0.0)
    m.start(0.0)
    m.receive("dev-00", checkin(0, msg_id=5), 1.0)
    before = snapshot(m)
    with pytest.raises(DuplicateMessageId) as dup:
        m.receive("dev-00", checkin(0, msg_id=5), 1.0)
    assert dup.value.msg_id == 5
    with pytest.raises(StaleMessage):
        m.receive("dev-01", checkin(1, task="other"), 1.0)
    with pytest.raises(UnknownParticipant):
        m.receive("dev-09", checkin(9), 1.0)
    with pytest.raises(MalformedMessage):
        m.receive_data("dev-01", b"\xfe\x01\x01garbage", 1.0)
    with pytest.raises(UnexpectedMessage):
        m.receive_data(
            "dev-01",
            encode_message(
                rm.TaskAnnouncement(msg_id=1, task_id="mnist", accepting=True, round_id=7)
            ),
            1.0,
        )
    assert snapshot(m) == before
    # Checking in again with a new message id (a resend after a reboot) is harmless.
    out = m.receive("dev-00", checkin(0, msg_id=6), 1.0)
    assert [type(c.message) for c in out if isinstance(c, rc.Send)] == [rm.Ack]
    assert snapshot(m)[:2] == before[:2]


def test_a_device_checking_in_again_mid_round_is_dropped() -> None:
    net = _network_in_training(min_reports=3)
    out = net.machine.receive("dev-02", checkin(2, msg_id=400), 5.0)
    (window,) = sent(out, rm.ReconnectWindow)
    assert window[1].reason is rm.ReconnectReason.DROPPED  # type: ignore[attr-defined]
    assert net.machine.status().dropped == 1
    assert net.machine.status().active == 5


def test_too_few_check_ins_abandon_at_the_deadline() -> None:
    m = machine(config(min_reports=4))
    m.start(0.0)
    for i in range(3):
        m.receive(f"dev-{i:02d}", checkin(i), 1.0)
    assert m.tick(29.0) == []
    out = m.tick(30.0)
    assert m.state is RoundState.ABANDONED
    (abandon,) = [c for c in out if isinstance(c, rc.AbandonRound)]
    assert "3 devices checked in" in abandon.reason
    windows = sent(out, rm.ReconnectWindow)
    assert {d for d, _ in windows} == {"dev-00", "dev-01", "dev-02"}
    assert all(w.reason is rm.ReconnectReason.ROUND_ABANDONED for _, w in windows)  # type: ignore[attr-defined]
    assert m.next_deadline() is None
    with pytest.raises(IllegalTransition):
        m.cancel("again", 31.0)


def test_enough_check_ins_at_the_deadline_start_training() -> None:
    m = machine(config(goal_count=6, min_reports=4))
    m.start(0.0)
    for i in range(4):
        m.receive(f"dev-{i:02d}", checkin(i), 1.0)
    out = m.tick(30.0)
    assert m.state is RoundState.TRAINING
    assert len(sent(out, rm.Plan)) == 4
    assert m.next_deadline() == 90.0


def test_goal_met_early_sends_the_over_selected_away() -> None:
    net = Network(
        config(goal_count=4, over_selection=1.5, min_reports=3), 6, np.zeros(M, np.float32)
    )
    for d in net.ids:
        net.deltas[d] = np.full(M, 0.01)
    net.stragglers = {"dev-04", "dev-05"}
    net.start()
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.Commit)
    assert out.metrics.included == 4
    full = [
        (c.device_id, c.message.reason)
        for c in net.server_out
        if isinstance(c, rc.Send)
        and isinstance(c.message, rm.ReconnectWindow)
        and c.message.reason is rm.ReconnectReason.ROUND_FULL
    ]
    assert sorted(d for d, _ in full) == ["dev-04", "dev-05"]
    assert out.metrics.dropped == ()


def _network_in_training(**overrides: object) -> Network:
    """A network whose devices hold their plans, with the machine in TRAINING."""
    net = Network(config(**overrides), 6, np.zeros(M, np.float32))
    for d in net.ids:
        net.deltas[d] = np.full(M, 0.01)
    net.stragglers = set(net.ids)
    net.start()
    net.deliver()
    assert net.machine.state is RoundState.TRAINING
    return net


def test_wrong_stage_garbage_and_replays_change_nothing() -> None:
    net = _network_in_training()
    m = net.machine
    p = net.devices["dev-00"]
    (publish,) = [c for c in p.training_done(np.full(M, 0.01), 10, 1.0) if hasattr(c, "message")]
    good = publish.message  # type: ignore[attr-defined]
    before = snapshot(m)
    cases = [
        rm.StageResponse(
            msg_id=900, task_id="mnist", round_id=7, stage=rm.Stage.UNMASK, payload=good.payload
        ),
        rm.StageResponse(
            msg_id=901,
            task_id="mnist",
            round_id=7,
            stage=rm.Stage.ADVERTISE_KEYS,
            payload=b"not secagg",
        ),
        rm.StageResponse(
            msg_id=902,
            task_id="mnist",
            round_id=6,
            stage=rm.Stage.ADVERTISE_KEYS,
            payload=good.payload,
        ),
        rm.EvalReport(msg_id=903, task_id="mnist", round_id=7, n_examples=1, metrics=()),
    ]
    for bad in cases:
        with pytest.raises(ProtocolError):
            m.receive("dev-00", bad, 2.0)
        assert snapshot(m) == before
    # Another device's valid keys presented as dev-01's own.
    with pytest.raises(UnexpectedMessage, match="another device"):
        m.receive("dev-01", good, 2.0)
    # A device outside the round.
    with pytest.raises(UnknownParticipant):
        m.receive("dev-19", good, 2.0)
    assert snapshot(m) == before
    # The genuine message is still accepted afterwards, exactly once.
    out = m.receive("dev-00", good, 2.0)
    assert sent(out, rm.Ack)[0][1].status is rm.AckStatus.ACCEPTED  # type: ignore[attr-defined]
    with pytest.raises(DuplicateMessageId):
        m.receive("dev-00", good, 2.0)
    dup = m.rejection("dev-00", good, DuplicateMessageId("x", msg_id=good.msg_id))
    assert dup.message.status is rm.AckStatus.DUPLICATE  # type: ignore[union-attr]
    assert dup.message.acked == good.msg_id  # type: ignore[union-attr]


def test_stragglers_are_cut_at_the_deadline_and_their_late_answers_refused() -> None:
    net = _network_in_training(min_reports=3)
    m = net.machine
    answers = {}
    for d in net.ids:
        (pub,) = [
            c
            for c in net.devices[d].training_done(np.full(M, 0.01), 10, 1.0)
            if hasattr(c, "message")
        ]
        answers[d] = pub.message  # type: ignore[attr-defined]
    for d in net.ids[:4]:
        m.receive(d, answers[d], 2.0)
    out = m.tick(60.0)
    assert m.state is RoundState.SHARE_KEYS
    cut = {d for d, w in sent(out, rm.ReconnectWindow)}
    assert cut == {"dev-04", "dev-05"}
    assert {d for d, _ in sent(out, rm.StageRequest)} == set(net.ids[:4])
    with pytest.raises(LateMessage):
        m.receive("dev-04", answers["dev-04"], 61.0)
    ack = m.rejection("dev-04", answers["dev-04"], LateMessage("late"))
    assert ack.message.status is rm.AckStatus.LATE  # type: ignore[union-attr]
    assert m.status().dropped == 2


def test_withdrawals_below_min_reports_abandon_at_once() -> None:
    net = _network_in_training(min_reports=5)
    m = net.machine
    for i, d in enumerate(net.ids[:2]):
        out = m.receive(
            d,
            rm.Abandon(
                msg_id=500 + i, task_id="mnist", round_id=7, reason=rm.AbandonReason.INELIGIBLE
            ),
            5.0,
        )
    assert m.state is RoundState.ABANDONED
    (a,) = [c for c in out if isinstance(c, rc.AbandonRound)]
    assert "4 devices left" in a.reason
    assert a.metrics.dropped == (("training", 2),)
    assert not [c for c in out if isinstance(c, rc.Commit)]


def test_cancel_abandons_and_tells_every_device() -> None:
    net = _network_in_training()
    out = net.machine.cancel("task paused", 3.0)
    assert net.machine.state is RoundState.ABANDONED
    assert len(sent(out, rm.ReconnectWindow)) == 6
    assert [c.reason for c in out if isinstance(c, rc.AbandonRound)] == ["task paused"]


def test_evaluation_round_reports_example_weighted_means() -> None:
    net = Network(config(kind=rm.RoundKind.EVALUATE, secagg=False), 5, np.zeros(M, np.float32))
    net.examples = {d: 10 * (i + 1) for i, d in enumerate(net.ids)}
    net.start()
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.EvaluationDone)
    assert out.n_examples == 150
    assert dict(out.metrics) == pytest.approx({"correct": 0.75, "loss_sum": 0.5})
    assert out.model_version == 3


def test_plain_round_with_median_ignores_an_outlier() -> None:
    cfg = config(secagg=False, aggregator=CoordinateMedian(), clip_norm=10.0)
    net = Network(cfg, 5, np.zeros(M, np.float32))
    for i, d in enumerate(net.ids):
        net.deltas[d] = np.full(M, 0.1 * (i + 1) / np.sqrt(M))
    net.deltas["dev-04"] = np.full(M, 9.0 / np.sqrt(M))  # the poisoned one
    net.start()
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.Commit)
    spec = net.machine.update_spec
    # Each rotated coordinate of the median is one honest device's value, off by less than one
    # quantization step; rotating back keeps the L2 norm of that error (below step * sqrt(n))
    # but spreads it, so one coordinate may be off by more than a step. The outlier (9.0)
    # would be off by ~30 steps per coordinate.
    n = round_update.quant_spec(spec).params
    error = np.asarray(out.weights) - 0.3 / np.sqrt(M)
    assert np.linalg.norm(error) < round_update.step(spec) * np.sqrt(n)


def test_plain_updates_of_the_wrong_size_are_refused() -> None:
    net = _network_in_training(secagg=False)
    bad = rm.StageResponse(
        msg_id=77, task_id="mnist", round_id=7, stage=rm.Stage.PLAIN_UPDATE, payload=b"\x00" * 3
    )
    before = snapshot(net.machine)
    with pytest.raises(ProtocolError):
        net.machine.receive("dev-00", bad, 1.0)
    assert snapshot(net.machine) == before


def test_refused_answers_count_as_discarded_once_late_and_repeated_ones_do_not() -> None:
    net = _network_in_training(secagg=False)
    m = net.machine
    bad = rm.StageResponse(
        msg_id=77, task_id="mnist", round_id=7, stage=rm.Stage.PLAIN_UPDATE, payload=b"\x00" * 3
    )
    for _ in range(2):  # a QoS 1 redelivery of the same refused message
        with pytest.raises(ProtocolError) as refused:
            m.receive("dev-00", bad, 1.0)
        ack = m.rejection("dev-00", bad, refused.value)
        assert ack.message.status is rm.AckStatus.REJECTED  # type: ignore[union-attr]
    late = rm.StageResponse(
        msg_id=78, task_id="mnist", round_id=6, stage=rm.Stage.PLAIN_UPDATE, payload=b""
    )
    m.rejection("dev-01", late, StaleMessage("round 6"))
    m.rejection("dev-02", checkin(2, msg_id=79), UnknownParticipant("no key"))
    (abandon,) = [c for c in m.cancel("test", 2.0) if isinstance(c, rc.AbandonRound)]
    assert abandon.metrics.discarded == 1
    assert not abandon.metrics.secagg


def test_secagg_rounds_say_so_in_their_metrics() -> None:
    net = _network_in_training()
    (abandon,) = [c for c in net.machine.cancel("test", 2.0) if isinstance(c, rc.AbandonRound)]
    assert abandon.metrics.secagg
    assert abandon.metrics.discarded == 0
