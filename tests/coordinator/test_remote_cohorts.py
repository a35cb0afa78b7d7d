"""Cohorts run away from their round's owner (``rounds.remote_cohorts``): each cohort's
set-up, read back from JSON, is run by its own ``RemoteCohort`` against real SDK
participants; the results, added, are the aggregate of the same round run in one machine,
bit for bit; a member lost mid-stage is survived, a cohort given up is left out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrt.coordinator.errors import StoreError
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.remote_cohorts import (
    CohortSetup,
    RemoteCohort,
    remote_first_msg_id,
    setup_of,
)
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device
from fedrt.protocol.round_errors import LateMessage, UnknownParticipant
from tests.coordinator.round_harness import Network, config

M = 32
N = 15


def _network(seed: int, drop: dict[str, str] | None = None) -> Network:
    cfg = config(goal_count=N, min_reports=6, cohort_size=5, secagg_neighbors=None,
                 secagg_threshold=None, rotate=False)  # fmt: skip
    net = Network(cfg, N, np.zeros(M, np.float32), seed=seed, drop=drop or {})
    rng = np.random.default_rng(seed)
    for d in net.ids:
        v = rng.normal(size=M)
        net.deltas[d] = v * (rng.uniform(0.1, 0.9) / np.linalg.norm(v))
        net.examples[d] = int(rng.integers(1, 100))
    return net


def _delegated_round(
    net: Network, handed: list[int], silent: int | None = None, give_up: int | None = None
) -> dict[int, RemoteCohort]:
    """Run ``net``'s round with cohorts ``handed`` run by ``RemoteCohort``s (as other
    instances would, set up from JSON) and the rest by the machine, which adds the results
    it is given; ``silent``: that cohort's owner never writes its result; ``give_up``: that
    cohort's owner stops at once. The runners, by cohort index."""
    net.start()
    for _ in range(100):
        if not net.to_server:
            break
        device_id, data = net.to_server.popleft()
        net._server(net.receive(device_id, data))
    cohorts = net.machine._agg.cohorts
    assert cohorts is not None
    assert net.machine.deadline is not None
    by = net.machine.deadline + 5 * net.cfg.stage_timeout
    net.machine.delegate(handed, results_by=by)
    runners: dict[str, RemoteCohort] = {}
    for i in handed:
        setup = setup_of(cohorts.cohorts[i], task_id=net.cfg.task_id, round_id=net.cfg.round_id,
                         training_deadline=net.machine.deadline,
                         stage_timeout=net.cfg.stage_timeout, floor=2,
                         first_msg_id=remote_first_msg_id(1, i), away=(1.0, 2.0))  # fmt: skip
        stored = CohortSetup.from_json(json.loads(json.dumps(setup.to_json())))
        assert stored == setup
        runner = RemoteCohort(stored)
        if i == give_up:
            runner.give_up("its owner stopped")
        runners.update({d: runner for d in cohorts.cohorts[i].members})
    owners = list({id(r): r for r in runners.values()}.values())
    reported: set[int] = set()

    def report() -> None:
        for r in owners:
            if r.result is not None and r.setup.index not in reported | {silent}:
                reported.add(r.setup.index)
                net._server(net.machine.remote_result(r.result, net.now))

    for _ in range(10_000):
        if net.to_server:
            device_id, data = net.to_server.popleft()
            run_by = runners.get(device_id)
            if run_by is None:
                net._server(net.receive(device_id, data))
                continue
            assert net.topic_keys.pop((device_id, data), None) == run_by.setup.key
            message = decode_from_device(data)
            try:
                net._server(list(run_by.receive(device_id, message, net.now)))
            except LateMessage as exc:
                net._server([run_by.rejection(device_id, message, exc)])
            report()
        elif net.to_device:
            device_id, data = net.to_device.popleft()
            if device_id not in net.dead:
                net._device(device_id, net.devices[device_id].receive_data(data, net.now))
        else:
            pending = [r.deadline for r in owners if not r.finished] + [
                t
                for d, p in net.devices.items()
                if d not in net.dead and (t := p.next_deadline()) is not None
            ]
            if (t := net.machine.next_deadline()) is not None:
                pending.append(t)
            if not pending:
                return {r.setup.index: r for r in owners}
            net.now = max(net.now, min(pending))
            for r in owners:
                net._server(list(r.tick(net.now)))
            report()
            net._server(net.machine.tick(net.now))
            for d, p in net.devices.items():
                if d not in net.dead:
                    net._device(d, p.tick(net.now))
    raise AssertionError("the round did not settle")


def test_the_round_machine_adds_the_results_of_cohorts_run_elsewhere_exactly() -> None:
    reference = _network(4)
    reference.start()
    reference.run()
    commit = reference.outcome()
    assert isinstance(commit, rc.Commit)
    net = _network(4)
    _delegated_round(net, [1, 2])
    got = net.outcome()
    assert isinstance(got, rc.Commit)
    assert np.array_equal(got.delta, commit.delta)
    assert got.metrics.cohorts_committed == 3
    # The cohorts run elsewhere never take an id the round's owner uses.
    owner_ids = {c.message.msg_id for c in reference.server_out if isinstance(c, rc.Send)}
    remote_ids = {c.message.msg_id for c in net.server_out if isinstance(c, rc.Send)}
    assert min(remote_ids - owner_ids) > max(owner_ids)


def test_a_member_lost_mid_stage_is_survived_and_a_cohort_given_up_is_left_out() -> None:
    net = _network(5, drop={"dev-04": "masked_input"})
    runners = _delegated_round(net, [0, 1, 2], give_up=1)
    lost = runners[1].result
    assert lost is not None
    assert lost.failed == "its owner stopped"
    got = net.outcome()
    assert isinstance(got, rc.Commit)
    assert got.metrics.cohorts_committed == 2
    cohorts = net.machine._agg.cohorts
    assert cohorts is not None
    assert "dev-04" not in cohorts.cohorts[1].members
    assert got.metrics.included == N - 1 - len(cohorts.cohorts[1].members)


def test_a_cohort_whose_owner_writes_no_result_is_left_out_and_the_round_commits() -> None:
    net = _network(4)
    _delegated_round(net, [1, 2], silent=2)
    got = net.outcome()
    assert isinstance(got, rc.Commit)
    assert got.metrics.cohorts_committed == 2
    cohorts = net.machine._agg.cohorts
    assert cohorts is not None
    assert "cohort 2" in cohorts.failures()
    assert "no result" in cohorts.failures()


def test_a_cohort_refuses_strangers_and_malformed_set_ups() -> None:
    net = _network(6)
    net.start()
    net.deliver()
    cohorts = net.machine._agg.cohorts
    assert cohorts is not None
    setup = setup_of(cohorts.cohorts[0], task_id="mnist", round_id=7, training_deadline=60.0,
                     stage_timeout=10.0, floor=2, first_msg_id=1, away=(1.0, 2.0))  # fmt: skip
    runner = RemoteCohort(setup)
    stranger = next(d for d in net.ids if d not in cohorts.cohorts[0].members)
    answer = rm.StageResponse(msg_id=9, task_id="mnist", round_id=7,
                              stage=rm.Stage.ADVERTISE_KEYS, payload=b"x")  # fmt: skip
    with pytest.raises(UnknownParticipant):
        runner.receive(stranger, answer, 0.0)
    data = setup.to_json()
    for bad in ({**data, "members": "nope"}, {**data, "threshold": 99}, {}):
        with pytest.raises(StoreError):
            CohortSetup.from_json(bad)
