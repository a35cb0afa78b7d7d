"""The round roster's running counts (``rounds.roster``): after any mix of status changes and
answers, and through a whole SecAgg+ round of the machine, they equal a recount."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.cohort_results import CohortResult
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.roster import DeviceStatus, RoundRoster
from fedrt.coordinator.rounds.states import RoundState
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device
from fedrt.protocol.round_errors import DuplicateMessageId, UnexpectedMessage
from tests.coordinator.round_harness import Network, config

M = 16
N = 15
S = RoundState


def _check(roster: RoundRoster) -> None:
    active = roster.active()
    assert roster.n_active() == len(active)
    for stage in rm.Stage:
        assert roster.n_answered(stage) == sum(stage in d.answered for d in active)


_OPS = st.tuples(
    st.sampled_from(["status", "answer", "remove"]),
    st.integers(0, 9),
    st.sampled_from(list(DeviceStatus)),
    st.sampled_from(list(rm.Stage)),
)


@given(ops=st.lists(_OPS, max_size=60))
def test_counts_equal_a_recount_after_any_mix_of_changes(
    ops: list[tuple[str, int, DeviceStatus, rm.Stage]],
) -> None:
    roster = RoundRoster()
    ids = [f"d{i}" for i in range(10)]
    for i, d in enumerate(ids):
        roster.add(d, i)
    roster.select(ids[:8])
    roster.unselect(ids[8])
    _check(roster)
    for op, i, status, stage in ops:
        dev = roster.get(ids[i])
        if dev is None:
            continue
        if op == "status":
            roster.set_status(dev, status)
        elif op == "answer":  # twice: a repeated answer counts once
            roster.answer(dev, stage)
            roster.answer(dev, stage)
        else:
            roster.remove(dev.device_id)
        _check(roster)


def _check_machine(m: RoundMachine) -> None:
    _check(m._roster)
    if m.cohorts is not None:  # devices of handed-over cohorts counted as in
        remote = m.cohorts.remote
        done = sum(len(r.included) for r in remote.values() if r is not None)
        assert m.cohorts.elsewhere() == done + sum(len(c.members) for c in m.cohorts.pending())
    status = m.status()
    assert status.active == len(m._roster.active())
    stage = m._expected_stage()
    if stage is not None:
        assert status.answered == sum(stage in d.answered for d in m._roster.active())


def _selected(cfg: rc.RoundConfig) -> Network:
    """``cfg``'s round on N devices, its check-ins taken (selection closed), no plan out."""
    net = Network(cfg, N, np.zeros(M, np.float32), seed=3)
    net.deltas = {d: np.full(M, 0.01) for d in net.ids}
    net.start()
    for _ in range(N):
        device_id, data = net.to_server.popleft()
        net._server(net.receive(device_id, data))
        _check_machine(net.machine)
    assert net.machine.state is S.TRAINING
    return net


def test_the_devices_counted_elsewhere_follow_each_handed_over_cohorts_result() -> None:
    m = _selected(config(goal_count=N, min_reports=6, cohort_size=5)).machine
    assert m.cohorts is not None
    m.delegate([0, 2], results_by=100.0)
    _check_machine(m)
    assert m.cohorts.elsewhere() == 10
    first, third = m.cohorts.cohorts[0], m.cohorts.cohorts[2]
    m.remote_result(CohortResult(index=0, key=first.key, included=first.members[:3]), 1.0)
    _check_machine(m)
    assert m.cohorts.elsewhere() == 3 + 5
    with pytest.raises(UnexpectedMessage):  # a result not awaited changes nothing
        m.remote_result(CohortResult(index=0, key=first.key, included=first.members), 1.0)
    with pytest.raises(UnexpectedMessage):
        m.remote_result(CohortResult(index=2, key=first.key, included=()), 1.0)
    assert m.cohorts.elsewhere() == 3 + 5
    m.remote_result(CohortResult(index=2, key=third.key, failed="its owner stopped"), 1.0)
    _check_machine(m)
    assert m.cohorts.elsewhere() == 3


@pytest.mark.parametrize(("handed", "spare"), [([], 0), ([1], 0), ([], 1)])
def test_the_machines_counts_equal_a_recount_through_a_secagg_round(
    handed: list[int], spare: int
) -> None:
    """Answers, their replays, a withdrawal, a check-in again, losses cut at two deadlines,
    every stage change; ``handed``: cohorts given to another instance (whose result never
    comes); ``spare``: that many more selected than the goal never answer, so training
    closes on the goal and cuts them (and the one lost in training) as not needed."""
    goal = N - 3 - spare if spare else N
    cfg = config(goal_count=goal, over_selection=N / goal, min_reports=6, cohort_size=5,
                 secagg_neighbors=None, secagg_threshold=None, rotate=False)  # fmt: skip
    net = _selected(cfg)
    m = net.machine
    assert m.cohorts is not None
    assert m.deadline is not None
    if handed:
        m.delegate(handed, results_by=m.deadline + 5 * cfg.stage_timeout)
        net.dead.update(d for i in handed for d in m.cohorts.cohorts[i].members)
        _check_machine(m)
    mine = [d for d in net.ids if d not in net.dead]
    net.drop = {mine[0]: "training", mine[5]: "masked_input"}
    withdraws, rejoins = mine[2], mine[7]
    net.stragglers = {withdraws, rejoins, *mine[len(mine) - spare :]}
    replayed: set[rm.Stage] = set()
    states: set[RoundState] = set()

    def tap(device_id: str, data: bytes) -> None:
        _check_machine(m)
        states.add(m.state)
        if withdraws not in net.dead:
            bye = rm.Abandon(msg_id=900, task_id=cfg.task_id, round_id=cfg.round_id,
                             reason=rm.AbandonReason.INELIGIBLE)  # fmt: skip
            net._server(m.receive(withdraws, bye, net.now))
            _check_machine(m)
            again = rm.CheckIn(msg_id=901, task_id=cfg.task_id, sdk_version="t")
            net._server(m.receive(rejoins, again, net.now))
            net.dead.update({withdraws, rejoins})
            _check_machine(m)
        msg = decode_from_device(data)
        if isinstance(msg, rm.StageResponse) and msg.stage not in replayed:
            replayed.add(msg.stage)
            before = m.status()
            with pytest.raises(DuplicateMessageId):
                m.receive_data(device_id, data, net.now)
            with pytest.raises(UnexpectedMessage):
                m.receive(device_id, dataclasses.replace(msg, msg_id=msg.msg_id + 1000), net.now)
            assert m.status() == before
            _check_machine(m)

    net.tap = tap
    net.run()
    _check_machine(m)
    assert m.status().state == S.COMMITTED.value  # (m.state: narrowed to TRAINING above)
    assert states >= {S.TRAINING, S.SHARE_KEYS, S.MASKED_INPUT, S.CONSISTENCY_CHECK, S.UNMASK}
    assert replayed >= {rm.Stage.ADVERTISE_KEYS, rm.Stage.SHARE_KEYS, rm.Stage.UNMASK}
    # Withdrawn, checked in again, cut at the masked input's deadline, and at training's
    # unless the goal closed it first.
    assert m.status().dropped == (3 if spare else 4)
