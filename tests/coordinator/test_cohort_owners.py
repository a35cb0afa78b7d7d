"""SecAgg+ cohort traffic with two instances on one PostgreSQL (issue 17): each cohort topic
is read by the instance owning the cohort and by no other, while an old SDK's replies on the
plain topics reach the owner through whichever instance receives them (``rounds.relay``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from fedrt.coordinator.records import RoundStatus
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.sdk import participant_commands as pc
from tests.coordinator.driver_harness import TASK, Coordinator
from tests.coordinator.test_device_relay import Split
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

OLD = ("dev-03", "dev-08")  # SDKs that predate cohort topics


class CohortSplit(Split):
    """``Split`` where each instance reads only the cohort topics it subscribed to, as the
    broker delivers them (every subscriber a copy), and two devices run an old SDK."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.reads: dict[str, set[str]] = {}
        self.cohort_copies: Counter[tuple[str, str]] = Counter()  # (instance, outcome)
        self.unread_cohort: list[str] = []
        self.old_replies: list[str] = []

    def start(self, name: str, data_dir: Path, url: str) -> Coordinator:
        instance = super().start(name, data_dir, url)
        reads = self.reads.setdefault(name, set())

        def follow(filters: Sequence[str], on: bool) -> None:
            (reads.update if on else reads.difference_update)(filters)

        instance.driver.cohort_owner.follow = follow
        return instance

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        if device_id in OLD:
            old: list[pc.Command] = []
            for c in commands:
                if isinstance(c, pc.Publish) and isinstance(c.message, rm.CheckIn):
                    c = replace(c, message=replace(c.message, features=ra.FEATURE_ASYNC))
                elif isinstance(c, pc.Publish) and isinstance(c.message, rm.StageResponse):
                    assert c.cohort == ""  # its plan named no key
                    self.old_replies.append(device_id)
                old.append(c)
            commands = old
        super()._device(device_id, commands)

    def _deliver(self, topic: str, payload: bytes) -> None:
        if "/up/c/" not in topic:  # a plain up-topic, or a forward between instances
            super()._deliver(topic, payload)
            return
        readers = [
            i
            for i in self.instances
            if any(topic_matches_sub(f, topic) for f in self.reads[self.name(i)])
        ]
        if not readers:
            self.unread_cohort.append(topic)
        for instance in readers:
            outcome = instance.service.on_device_message(topic, payload)
            self.cohort_copies[(self.name(instance), outcome)] += 1


# Two instances, two SecAgg+ rounds in two cohorts each, on PostgreSQL: ~50 s when loaded.
@pytest.mark.slow
def test_cohort_topics_reach_the_owner_only_and_old_sdk_replies_are_forwarded(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = CohortSplit(10)
    owner = fleet.start("inst-a", tmp_path / "a", postgres_url)
    other = fleet.start("inst-b", tmp_path / "b", postgres_url)
    fleet.create_task(secagg=True, cohort_size=5, max_rounds=2)  # inst-a takes the lease
    assert owner.service.ownership.holds(TASK)
    leases: set[tuple[str, str]] = set()

    def watch() -> bool:
        store = owner.service.store
        leases.update((x.name, x.owner) for x in store.list_leases() if "cohort:" in x.name)
        return fleet.done()

    fleet.run_until(watch)
    rounds = owner.service.store.list_rounds(TASK)
    assert [r.status for r in rounds] == [RoundStatus.COMMITTED] * 2
    for r in rounds:
        assert r.detail["metrics"]["cohorts_committed"] == 2
        assert r.detail["metrics"]["included"] == 10  # the old SDKs' inputs too
    # Every cohort lease was the round owner's; inst-b never read a cohort topic.
    assert leases == {(f"cohort:{TASK}:{n}:{i}", "inst-a") for n in (1, 2) for i in (0, 1)}
    assert fleet.cohort_copies[("inst-a", "accepted")] > 0
    assert {name for name, _ in fleet.cohort_copies} == {"inst-a"}
    assert not fleet.unread_cohort
    assert fleet.reads["inst-b"] == set()
    # The old SDKs replied on the plain topics; what inst-b received of that it forwarded.
    assert set(fleet.old_replies) == set(OLD)
    assert fleet.direct[("inst-b", "accepted")] == 0
    assert fleet.relayed[("inst-a", "accepted")] == fleet.direct[("inst-b", "forwarded")]
    assert not other.service.ownership.holds(TASK)
