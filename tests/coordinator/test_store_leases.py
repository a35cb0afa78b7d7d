"""Leases (store.leases), one conformance suite over every Store, plus PostgreSQL races."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from fedrt.coordinator.errors import LeaseLost, StoreError
from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.store import Store
from fedrt.coordinator.store.postgres import PostgresStore
from tests.coordinator.store_conformance import model, round_, sha, task


@pytest.fixture
def store(each_store: Store) -> Store:
    return each_store


def test_a_free_lease_is_granted_and_held_against_others(store: Store) -> None:
    a = store.claim_lease("task:t1", "a", now=100.0, ttl=10.0)
    assert a is not None
    assert (a.owner, a.epoch, a.expires_at) == ("a", 1, 110.0)
    assert store.claim_lease("task:t1", "b", now=105.0, ttl=10.0) is None
    assert store.list_leases() == [a]


def test_the_owner_extends_its_lease_without_a_new_epoch(store: Store) -> None:
    store.claim_lease("task:t1", "a", now=100.0, ttl=10.0)
    again = store.claim_lease("task:t1", "a", now=108.0, ttl=10.0)
    assert again is not None
    assert (again.epoch, again.expires_at) == (1, 118.0)
    renewed = store.renew_lease(again, now=115.0, ttl=10.0)
    assert (renewed.epoch, renewed.expires_at) == (1, 125.0)


def test_an_expired_lease_changes_hands_and_fences_the_old_owner(store: Store) -> None:
    old = store.claim_lease("task:t1", "a", now=100.0, ttl=10.0)
    assert old is not None
    new = store.claim_lease("task:t1", "b", now=110.0, ttl=10.0)
    assert new is not None
    assert (new.owner, new.epoch) == ("b", 2)
    with pytest.raises(LeaseLost):
        store.renew_lease(old, now=111.0, ttl=10.0)
    store.release_lease(old)  # the old owner letting go changes nothing now
    assert store.list_leases() == [new]
    # ...and the old owner claiming back sees b's lease until it expires.
    assert store.claim_lease("task:t1", "a", now=115.0, ttl=10.0) is None


def test_a_fresh_claim_by_the_owner_starts_a_new_tenure(store: Store) -> None:
    store.claim_lease("task:t1", "a", now=100.0, ttl=10.0)
    fresh = store.claim_lease("task:t1", "a", now=101.0, ttl=10.0, fresh=True)
    assert fresh is not None
    assert fresh.epoch == 2
    assert store.claim_lease("task:t1", "b", now=105.0, ttl=10.0, fresh=True) is None


def test_a_released_lease_is_free_at_once_with_a_new_epoch_for_the_next(store: Store) -> None:
    a = store.claim_lease("task:t1", "a", now=100.0, ttl=60.0)
    assert a is not None
    store.release_lease(a)
    b = store.claim_lease("task:t1", "b", now=101.0, ttl=60.0)
    assert b is not None
    assert b.epoch == 2


def test_a_dropped_lease_is_gone_and_only_its_holder_drops_it(store: Store) -> None:
    a = store.claim_lease("cohort:t1:3:0", "a", now=100.0, ttl=60.0)
    b = store.claim_lease("cohort:t1:3:1", "b", now=100.0, ttl=60.0)
    assert a is not None
    assert b is not None
    store.drop_lease(dataclasses.replace(b, owner="a"))  # not a's to drop
    store.drop_lease(dataclasses.replace(a, epoch=a.epoch + 1))  # a stale tenure's
    assert [x.name for x in store.list_leases()] == ["cohort:t1:3:0", "cohort:t1:3:1"]
    store.drop_lease(a)
    assert store.list_leases() == [b]


def test_leases_are_independent_and_listed_by_name(store: Store) -> None:
    store.claim_lease("task:t2", "a", now=1.0, ttl=5.0)
    store.claim_lease("task:t1", "b", now=1.0, ttl=5.0)
    assert [(x.name, x.owner) for x in store.list_leases()] == [("task:t1", "b"), ("task:t2", "a")]


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), 1e9])
def test_a_nonsense_ttl_is_refused(store: Store, ttl: float) -> None:
    with pytest.raises(StoreError):
        store.claim_lease("task:t1", "a", now=1.0, ttl=ttl)
    assert store.list_leases() == []


def test_a_write_fenced_by_a_lost_lease_is_not_written(store: Store) -> None:
    store.add_model(model("m0"))
    store.create_task(task("t1", sha("m0")))
    store.create_round(round_("t1", 1, sha("m0")))
    old = store.claim_lease("task:t1", "a", now=100.0, ttl=10.0)
    assert old is not None
    store.claim_lease("task:t1", "b", now=120.0, ttl=10.0)

    def commit_fenced() -> None:
        with store.transaction():
            store.update_round("t1", 1, status=RoundStatus.COMMITTED)
            store.renew_lease(old, now=121.0, ttl=10.0)

    with pytest.raises(LeaseLost):
        commit_fenced()
    assert store.get_round("t1", 1).status is RoundStatus.RUNNING


def test_two_instances_racing_for_an_expired_lease_get_one_owner(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    try:
        stores[0].claim_lease("task:t1", "first", now=0.0, ttl=1.0)
        barrier = threading.Barrier(len(stores))
        won: list[str] = []

        def claim(i: int) -> None:
            barrier.wait(10)
            for _ in range(20):  # a bounded retry for claims that lost a serialization race
                got = stores[i].claim_lease("task:t1", f"i{i}", now=10.0, ttl=30.0)
                if got is not None:
                    won.append(got.owner)
                    return
                if any(x.owner != "first" for x in stores[i].list_leases()):
                    return

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(won) == 1
        (lease,) = stores[0].list_leases()
        assert (lease.owner, lease.epoch) == (won[0], 2)
    finally:
        for s in stores:
            s.close()
