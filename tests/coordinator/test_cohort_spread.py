"""One SecAgg+ round's cohorts spread over two instances on one PostgreSQL (``[cluster]
spread_cohorts``, ``rounds.cohort_spread``): each instance runs cohorts of the other's round
and reads only their topics; the round's owner adds the results it reads from the store and
commits the exact sum; an instance that dies with a cohort loses only that cohort.
Real PostgreSQL and real drivers; the broker is the harness's FIFO, delivering a cohort
topic to the instances that subscribed to it (as ``test_cohort_owners``)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from paho.mqtt.client import topic_matches_sub

from fedrt.coordinator.config import ClusterConfig, Secret, StoreConfig
from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.rounds.cohort_spread import OFFERS_KEY, result_key, setup_key
from fedrt.coordinator.rounds.relay import DeviceRelay
from fedrt.coordinator.security.signing import KEY_FILE
from tests.coordinator.driver_harness import (
    PACE,
    TASK,
    Coordinator,
    Fleet,
    pull_to_targets,
    weights_of,
)
from tests.coordinator.test_cohort_owners import CohortSplit
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

N = 15


class SpreadSplit(CohortSplit):
    """``CohortSplit`` with ``spread_cohorts`` on, every device on a current SDK, and the
    cohorts an instance runs for another's round followed like its own."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.dead: set[str] = set()
        # Cohort replies no instance read yet: published again after each tick, as the
        # SDK's outbox resends what was not acknowledged (an instance whose nudge was lost
        # takes the cohorts offered to it on its next sync), and how many there were.
        self.held: list[tuple[str, bytes]] = []
        self.ever_held = 0

    def start(self, name: str, data_dir: Path, url: str, lease_s: float = 15.0) -> Coordinator:
        if self.instances:
            data_dir.mkdir(parents=True)
            key = self.instances[0].service.config.data_dir / KEY_FILE
            shutil.copy2(key, data_dir / KEY_FILE)
        cluster = ClusterConfig(instance_id=name, lease_s=lease_s, spread_cohorts=True)
        instance = Coordinator(data_dir, self, StoreConfig(url=Secret(url)), cluster)
        svc = instance.service
        svc.relay = DeviceRelay(svc.store, name, self.publish, PACE, clock=lambda: self.now)
        self.instances.append(instance)
        self.coordinator = self.coordinator or instance
        reads = self.reads.setdefault(name, set())

        def follow(filters: Sequence[str], on: bool) -> None:
            (reads.update if on else reads.difference_update)(filters)

        instance.driver.cohort_owner.follow = follow
        assert instance.driver.spread is not None
        instance.driver.spread.follow = follow
        return instance

    def kill(self, instance: Coordinator) -> None:
        """kill -9: it reads, ticks and writes nothing more (its leases lapse)."""
        self.dead.add(self.name(instance))
        self.instances.remove(instance)
        self.reads[self.name(instance)] = set()

    def _deliver(self, topic: str, payload: bytes) -> None:
        if "/up/c/" in topic and not any(
            topic_matches_sub(f, topic) for i in self.instances for f in self.reads[self.name(i)]
        ):
            self.held.append((topic, payload))
            self.ever_held += 1
            return
        super()._deliver(topic, payload)

    def _tick(self) -> None:
        super()._tick()
        held, self.held = self.held, []
        self.to_coordinator.extend(held)

    def _device(self, device_id: str, commands: list) -> None:  # type: ignore[type-arg]
        super(CohortSplit, self)._device(device_id, commands)  # no old SDKs here

    def _advance(self) -> None:
        later = [
            t
            for i in self.instances
            if i.driver.spread is not None
            and (t := i.driver.spread.next_deadline()) is not None
            and t > self.now
        ]
        before = self.now
        super()._advance()
        # No jump past an instance's next sync (a third of the lease) or a cohort's deadline.
        self.now = min([self.now, before + 5.0, *later])


def _leases(fleet: SpreadSplit, seen: set[tuple[str, str]]) -> None:
    store = fleet.instances[0].service.store
    seen.update((x.name, x.owner) for x in store.list_leases() if "cohort:" in x.name)


def test_two_instances_run_one_rounds_cohorts_and_the_owner_commits_their_sum(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = SpreadSplit(N)
    owner = fleet.start("inst-a", tmp_path / "a", postgres_url)
    other = fleet.start("inst-b", tmp_path / "b", postgres_url)
    for i in fleet.instances:  # both beat once: each knows the other is alive
        i.service.tick()
    fleet.create_task(secagg=True, cohort_size=5, max_rounds=1)
    assert owner.service.ownership.holds(TASK)
    leases: set[tuple[str, str]] = set()

    def watch() -> bool:
        _leases(fleet, leases)
        return fleet.done()

    fleet.run_until(watch)
    (rnd,) = owner.service.store.list_rounds(TASK)
    assert rnd.status is RoundStatus.COMMITTED
    assert rnd.detail["metrics"]["cohorts_committed"] == 3
    assert rnd.detail["metrics"]["included"] == N
    assert rnd.detail["cohort_runs"] == [{"index": 0, "instance": "inst-a"},
                                         {"index": 1, "instance": "inst-b"},
                                         {"index": 2, "instance": "inst-a"}]  # fmt: skip
    # Cohorts 0 and 2 ran on inst-a, cohort 1 on inst-b, which read its topic only.
    assert leases == {(f"cohort:{TASK}:1:0", "inst-a"), (f"cohort:{TASK}:1:1", "inst-b"),
                      (f"cohort:{TASK}:1:2", "inst-a")}  # fmt: skip
    assert ("inst-b", "accepted") in fleet.cohort_copies
    assert not fleet.unread_cohort
    assert not other.service.ownership.holds(TASK)
    # The round's end took its cohorts' set-ups, results and offer out of the task's state.
    store = owner.service.store
    for key in (setup_key(1, 1), result_key(1, 1), OFFERS_KEY):
        assert store.load_task_state(TASK, key) is None, key
    # The same round on one instance (SQLite, its cohorts all its own) commits the same model.
    alone = Fleet(N, pull_to_targets)
    alone.open(tmp_path / "alone")
    alone.create_task(secagg=True, cohort_size=5, max_rounds=1)
    alone.run_until(alone.done)
    expected = weights_of(alone.svc, alone.committed()[0])
    got = weights_of(owner.service, fleet.committed()[0])
    assert np.allclose(got, expected, rtol=0, atol=1e-6)
    assert not np.allclose(got, weights_of(owner.service, rnd.model_sha256), rtol=0, atol=1e-3)


def test_an_offered_cohort_is_taken_on_the_owners_nudge_before_any_reply(
    tmp_path: Path, postgres_url: str
) -> None:
    # A lease of 600 s: the instances sync every 200 s, far later than the round's replies.
    fleet = SpreadSplit(N)
    owner = fleet.start("inst-a", tmp_path / "a", postgres_url, lease_s=600.0)
    fleet.start("inst-b", tmp_path / "b", postgres_url, lease_s=600.0)
    for i in fleet.instances:
        i.service.tick()
    synced = fleet.now
    fleet.create_task(secagg=True, cohort_size=5, max_rounds=1)
    leases: set[tuple[str, str]] = set()

    def taken() -> bool:
        _leases(fleet, leases)
        return (f"cohort:{TASK}:1:1", "inst-b") in leases

    fleet.run_until(taken)
    assert fleet.now < synced + 200.0  # no sync of inst-b since the task was created
    assert fleet.relayed[("inst-b", "accepted")] == 1  # the owner's one nudge
    fleet.run_until(fleet.done)
    (rnd,) = owner.service.store.list_rounds(TASK)
    assert rnd.status is RoundStatus.COMMITTED
    assert rnd.detail["metrics"]["cohorts_committed"] == 3
    # inst-b read cohort 1's topic before any of its members replied: none waited for it.
    assert fleet.ever_held == 0
    assert ("inst-b", "accepted") in fleet.cohort_copies


def test_an_instance_that_dies_with_a_cohort_loses_only_that_cohort(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = SpreadSplit(N)
    owner = fleet.start("inst-a", tmp_path / "a", postgres_url)
    other = fleet.start("inst-b", tmp_path / "b", postgres_url)
    for i in fleet.instances:
        i.service.tick()
    fleet.create_task(secagg=True, cohort_size=5, max_rounds=1, min_reports=5)
    leases: set[tuple[str, str]] = set()

    def taken() -> bool:
        _leases(fleet, leases)
        return (f"cohort:{TASK}:1:1", "inst-b") in leases

    fleet.run_until(taken)
    fleet.kill(other)
    fleet.run_until(fleet.done)
    (rnd,) = owner.service.store.list_rounds(TASK)
    assert rnd.status is RoundStatus.COMMITTED
    assert rnd.detail["metrics"]["cohorts_committed"] == 2
    assert rnd.detail["metrics"]["included"] == N - 5
    lapsed = "its owner inst-b let the cohort lease lapse without a result"
    assert rnd.detail["cohort_runs"] == [{"index": 0, "instance": "inst-a"},
                                         {"index": 1, "instance": "inst-b", "left_out": lapsed},
                                         {"index": 2, "instance": "inst-a"}]  # fmt: skip
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert left_out == [
        f"task {TASK} round 1: cohort 1 left out: its owner inst-b let the cohort lease lapse"
        " without a result"
    ]


def test_an_instance_that_lost_its_cohort_lease_writes_no_result(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = SpreadSplit(N)
    fleet.start("inst-a", tmp_path / "a", postgres_url)
    other = fleet.start("inst-b", tmp_path / "b", postgres_url)
    for i in fleet.instances:
        i.service.tick()
    fleet.create_task(secagg=True, cohort_size=5, max_rounds=1)
    leases: set[tuple[str, str]] = set()
    name = f"cohort:{TASK}:1:1"

    def taken() -> bool:
        _leases(fleet, leases)
        return (name, "inst-b") in leases

    fleet.run_until(taken)
    store = other.service.store
    # inst-b stalls past its lease; another instance takes the cohort over.
    later = fleet.now + 20.0
    assert store.claim_lease(name, "inst-c", now=later, ttl=15.0) is not None
    spread = other.driver.spread
    assert spread is not None
    spread.shutdown(later)  # its cohort ends as failed: the result it would write
    assert store.load_task_state(TASK, result_key(1, 1)) is None
    (held,) = [x for x in store.list_leases() if x.name == name]
    assert held.owner == "inst-c"
