"""Per-cohort topics and cohort leases (issue 17): a SecAgg+ round's plan names each device's
cohort topic key, the device replies under it, the coordinator checks the key against the
sender's cohort, owns each cohort through a lease and reads only its cohorts' topics. Older
SDKs (no feature bit) keep the plain up-topics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.cohort_owners import CohortOwnership, cohort_lease_name
from fedrt.coordinator.rounds.states import RoundState
from fedrt.coordinator.store import Store
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import (
    decode_from_coordinator,
    decode_from_device,
    encode_message,
)
from fedrt.protocol.round_errors import WrongCohort
from fedrt.protocol.topics import (
    FEATURE_COHORT_TOPICS,
    UpChannel,
    cohort_key,
    cohort_up_filter,
    device_up_cohort,
)
from fedrt.sdk import participant_commands as pc
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets
from tests.coordinator.round_harness import Network, config

M = 32
N = 15


def _network(seed: int, old: Sequence[str] = ()) -> Network:
    """15 devices in three cohorts of 5; ``old`` devices' SDK predates cohort topics."""
    cfg = config(goal_count=N, min_reports=6, cohort_size=5, secagg_neighbors=None,
                 secagg_threshold=None, rotate=False)  # fmt: skip
    net = Network(cfg, N, np.zeros(M, np.float32), seed=seed)
    rng = np.random.default_rng(seed)
    for d in net.ids:
        v = rng.normal(size=M)
        net.deltas[d] = v * (0.5 / np.linalg.norm(v))
        net.examples[d] = int(rng.integers(1, 100))
    net.start()
    for i, (device_id, data) in enumerate(net.to_server):
        if device_id in old:  # an old SDK's check-in: without the feature bit
            msg = decode_from_device(data)
            assert isinstance(msg, rm.CheckIn)
            assert msg.features & FEATURE_COHORT_TOPICS
            net.to_server[i] = (device_id, encode_message(replace(msg, features=ra.FEATURE_ASYNC)))
    return net


def _plans(net: Network) -> dict[str, rm.Plan]:
    return {
        c.device_id: c.message
        for c in net.server_out
        if isinstance(c, rc.Send) and isinstance(c.message, rm.Plan)
    }


def _replies(net: Network, device_id: str) -> list[pc.Publish]:
    out = net.device_out.get(device_id, [])
    return [c for c in out if isinstance(c, pc.Publish) and isinstance(c.message, rm.StageResponse)]


def test_plans_name_each_devices_cohort_topic_and_its_replies_use_it() -> None:
    net = _network(1)
    net.run()
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    assert commit.metrics.dropped == ()
    formed = [c for c in net.server_out if isinstance(c, rc.CohortsFormed)]
    assert len(formed) == 1
    keys = formed[0].keys
    assert keys == tuple(cohort_key("mnist", 7, i) for i in range(3))
    # Formed before any plan named a key: the driver subscribes first.
    first_plan = next(i for i, c in enumerate(net.server_out) if isinstance(c, rc.Send)
                      and isinstance(c.message, rm.Plan))  # fmt: skip
    assert net.server_out.index(formed[0]) < first_plan
    plans = _plans(net)
    by_key: dict[str, set[str]] = {}
    for device_id, plan in plans.items():
        assert plan.cohort_topic in keys
        assert plan.secagg is not None
        by_key.setdefault(plan.cohort_topic, set()).add(device_id)
        # Every member of the device's cohort got the same key, and only they did.
        assert {m.device_id for m in plan.secagg.members} == set(
            d for d, p in plans.items() if p.cohort_topic == plan.cohort_topic
        )
        replies = _replies(net, device_id)
        assert replies
        assert all(r.cohort == plan.cohort_topic for r in replies)
    assert sorted(len(v) for v in by_key.values()) == [5, 5, 5]


def test_an_old_sdk_gets_no_key_and_its_plain_topic_replies_count() -> None:
    old = ("dev-01", "dev-07", "dev-12")
    net = _network(2, old=old)
    net.run()
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    assert commit.metrics.included == N
    plans = _plans(net)
    for device_id in old:
        assert plans[device_id].cohort_topic == ""  # left off the wire: an old SDK reads it
        assert all(r.cohort == "" for r in _replies(net, device_id))
    assert all(plans[d].cohort_topic for d in net.ids if d not in old)


def test_a_reply_under_another_cohorts_key_a_forged_one_or_a_check_in_is_refused() -> None:
    net = _network(3)
    for _ in range(10 * N):  # check-ins only, up to selection
        if net.machine.state is not RoundState.CHECK_IN:
            break
        device_id, data = net.to_server.popleft()
        net._server(net.receive(device_id, data))
    while net.to_device:  # the plans: every device trains at once and sends its keys
        device_id, data = net.to_device.popleft()
        net._device(device_id, net.devices[device_id].receive_data(data, net.now))
    plans = _plans(net)
    device_id, data = net.to_server[0]
    mine = plans[device_id].cohort_topic
    other = next(p.cohort_topic for p in plans.values() if p.cohort_topic != mine)
    before = net.machine.status()
    forged = cohort_key("mnist", 7, 9)  # well formed, no such cohort
    for key in (other, forged, cohort_key("another-task", 1, 0)):
        with pytest.raises(WrongCohort):
            net.machine.receive_data(device_id, data, net.now, cohort=key)
    checkin = rm.CheckIn(msg_id=999, task_id="mnist", sdk_version="x", features=2)
    with pytest.raises(WrongCohort):
        net.machine.receive(device_id, checkin, net.now, cohort=mine)
    assert net.machine.status() == before  # nothing changed
    # Under its own key (or the plain topic, as an old SDK would) it is taken; the round
    # goes on and commits.
    net._server(net.machine.receive_data(device_id, data, net.now, cohort=mine))
    net.to_server.popleft()
    net.topic_keys.pop((device_id, data), None)
    assert net.machine.status().answered == before.answered + 1
    net.run()
    assert isinstance(net.outcome(), rc.Commit)


# --- the served driver: leases and subscriptions ---------------------------------------------


def test_the_round_owns_its_cohorts_reads_their_topics_and_lets_go_after(tmp_path: Path) -> None:
    fleet = Fleet(10, pull_to_targets)
    coordinator = fleet.open(tmp_path / "data")
    try:
        fleet.create_task(secagg=True, cohort_size=5, max_rounds=2)
        store = fleet.svc.store
        me = fleet.svc.ownership.instance_id
        seen: dict[int, set[tuple[str, str]]] = {}
        refused: list[tuple[str, rm.Ack]] = []

        def watch() -> bool:
            # The cohort leases while round N runs: (name, owner).
            for x in store.list_leases():
                if x.name.startswith("cohort:"):
                    seen.setdefault(int(x.name.split(":")[2]), set()).add((x.name, x.owner))
            run = coordinator.driver.runs.get(TASK)
            machine = run.machine if run is not None else None
            if not refused and machine is not None and machine.state is RoundState.TRAINING:
                # A device's reply under a topic it may publish on (its own up/ subtree),
                # naming a cohort of round 1 it is not in: refused, typed, nothing changed.
                before = machine.status()
                forged = encode_message(rm.StageResponse(
                    msg_id=10**6, task_id=TASK, round_id=1, stage=rm.Stage.ADVERTISE_KEYS,
                    payload=b"x"))  # fmt: skip
                topic = device_up_cohort(fleet.ids[0], cohort_key(TASK, 1, 7), UpChannel.ROUND)
                outcome = fleet.svc.on_device_message(topic, forged)
                target, ack = fleet.to_devices.pop()  # not delivered: the device sent nothing
                assert isinstance(decode_from_coordinator(ack), rm.Ack)
                refused.append((outcome, decode_from_coordinator(ack)))  # type: ignore[arg-type]
                assert target == fleet.ids[0]
                assert machine.status() == before
            return fleet.done()

        fleet.run_until(watch)
        ((outcome, ack),) = refused
        assert outcome == "rejected"
        assert (ack.acked, ack.status) == (10**6, rm.AckStatus.REJECTED)
        rounds = store.list_rounds(TASK)
        assert [r.status for r in rounds] == [RoundStatus.COMMITTED] * 2
        assert all(r.detail["metrics"]["cohorts_committed"] == 2 for r in rounds)
        for n in (1, 2):
            assert seen[n] == {(cohort_lease_name(TASK, n, i), me) for i in range(2)}
        # Dropped at the end of each round: no row left behind.
        assert not [x for x in store.list_leases() if x.name.startswith("cohort:")]
        keys = [cohort_key(TASK, n, i) for n in (1, 2) for i in range(2)]
        assert fleet.followed == [cohort_up_filter(k) for k in keys]
        assert not fleet.unread  # every reply came under a key the coordinator read
        # A stage window after the round, its topics are let go.
        fleet.now += 3600.0
        fleet.svc.tick()
        assert fleet.following == set()
        # Topics outside the layout are refused before the driver sees them.
        data = encode_message(rm.StageResponse(msg_id=10**6 + 1, task_id=TASK, round_id=2,
                                               stage=rm.Stage.UNMASK, payload=b""))  # fmt: skip
        topic = device_up_cohort(fleet.ids[0], cohort_key(TASK, 2, 0), UpChannel.ROUND)
        for bad in (topic.replace("/c/", "/x/"), topic.replace("/round", "/checkin"),
                    topic.replace(cohort_key(TASK, 2, 0), "A.B")):  # fmt: skip
            assert fleet.svc.on_device_message(bad, data) == "bad_topic"
    finally:
        coordinator.close()


def test_cohort_leases_are_claimed_renewed_dropped_and_topics_linger(each_store: Store) -> None:
    calls: list[tuple[tuple[str, ...], bool]] = []
    owner = CohortOwnership(each_store, "a", lambda f, on: calls.append((tuple(f), on)),
                            lease_s=10.0, linger_s=30.0)  # fmt: skip
    keys = [cohort_key("t", 4, i) for i in range(3)]
    # Another instance holds cohort 2 (a remote cohort owner): not taken from it.
    assert each_store.claim_lease(cohort_lease_name("t", 4, 2), "b", now=100.0, ttl=60.0)
    owner.formed("t", 4, keys, now=100.0)
    assert calls == [(tuple(cohort_up_filter(k) for k in keys), True)]
    held = {x.name: x.owner for x in each_store.list_leases()}
    assert held == {cohort_lease_name("t", 4, i): o for i, o in enumerate("aab")}
    assert [x.expires_at for x in owner.leases("t")] == [110.0, 110.0]
    assert owner.renew(105.0) == []
    assert [x.expires_at for x in owner.leases("t")] == [115.0, 115.0]
    owner.ended("t", now=120.0)
    assert [x.name for x in each_store.list_leases()] == [cohort_lease_name("t", 4, 2)]
    owner.tick(149.0)
    assert len(calls) == 1  # still reading: a straggler gets its LATE ack
    owner.tick(150.0)
    assert calls[-1] == (tuple(cohort_up_filter(k) for k in keys), False)
    assert owner.filters() == []


def test_a_cohort_lease_taken_over_is_reported_lost(each_store: Store) -> None:
    owner = CohortOwnership(each_store, "a", None, lease_s=10.0)
    owner.formed("t", 1, [cohort_key("t", 1, 0)], now=100.0)
    # Expired (the owner paused past it) and claimed by another instance.
    assert each_store.claim_lease(cohort_lease_name("t", 1, 0), "b", now=200.0, ttl=10.0)
    assert owner.renew(201.0) == ["t"]
    assert owner.leases("t") == []
    owner.ended("t", now=202.0)  # drops nothing of b's
    assert [(x.name, x.owner) for x in each_store.list_leases()] == [("cohort:t:1:0", "b")]
