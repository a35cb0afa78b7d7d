"""One conformance suite that every Store implementation (SQLite, in-memory) passes."""

from __future__ import annotations

import dataclasses

import pytest

from fedrt.coordinator.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    IllegalTransition,
    NotFoundError,
    StoreError,
)
from fedrt.coordinator.records import (
    AuditEntry,
    EnrollmentTokenRecord,
    MetricRecord,
    ModelStatus,
    RoundStatus,
    StageRecord,
    TaskStatus,
)
from fedrt.coordinator.store import Store
from tests.coordinator.store_conformance import (
    device,
    model,
    round_,
    sha,
    task,
)


@pytest.fixture
def store(each_store: Store) -> Store:
    return each_store


@pytest.fixture
def seeded(store: Store) -> Store:
    store.add_model(model("m0"))
    store.create_task(task("t1", sha("m0")))
    return store


def test_task_roundtrip_and_listing_order(store: Store) -> None:
    store.add_model(model("m0"))
    store.create_task(task("b", sha("m0"), at=20.0))
    store.create_task(task("a", sha("m0"), at=10.0))
    assert [t.task_id for t in store.list_tasks()] == ["a", "b"]
    assert store.get_task("a") == task("a", sha("m0"), at=10.0)


def test_duplicate_and_missing_task(seeded: Store) -> None:
    with pytest.raises(ConflictError):
        seeded.create_task(task("t1", sha("m0")))
    with pytest.raises(NotFoundError):
        seeded.get_task("nope")
    with pytest.raises(NotFoundError):
        seeded.create_task(task("t2", sha("no-such-model")))
    assert [t.task_id for t in seeded.list_tasks()] == ["t1"]


def test_task_lifecycle_and_illegal_moves(seeded: Store) -> None:
    assert seeded.set_task_status("t1", TaskStatus.RUNNING, at=11.0).status is TaskStatus.RUNNING
    seeded.set_task_status("t1", TaskStatus.PAUSED, at=12.0)
    seeded.set_task_status("t1", TaskStatus.RUNNING, at=13.0)
    seeded.set_task_status("t1", TaskStatus.CANCELLED, at=14.0)
    with pytest.raises(IllegalTransition):
        seeded.set_task_status("t1", TaskStatus.RUNNING, at=15.0)
    got = seeded.get_task("t1")
    assert (got.status, got.updated_at) == (TaskStatus.CANCELLED, 14.0)


def test_task_model_pointer(seeded: Store) -> None:
    seeded.add_model(model("m1", parent=sha("m0"), task_id="t1"))
    assert seeded.set_task_model("t1", sha("m1"), at=20.0).model_sha256 == sha("m1")
    with pytest.raises(NotFoundError):
        seeded.set_task_model("t1", sha("missing"), at=21.0)
    assert seeded.get_task("t1").model_sha256 == sha("m1")


def test_rounds_and_stage_transitions(seeded: Store) -> None:
    seeded.create_round(round_("t1", 2, sha("m0")))
    seeded.create_round(round_("t1", 1, sha("m0")))
    with pytest.raises(ConflictError):
        seeded.create_round(round_("t1", 1, sha("m0")))
    with pytest.raises(NotFoundError):
        seeded.create_round(round_("ghost", 1, sha("m0")))
    assert [r.round_no for r in seeded.list_rounds("t1")] == [1, 2]
    seeded.append_stage(StageRecord(task_id="t1", round_no=1, stage="selection", at=1.0))
    seeded.append_stage(
        StageRecord(task_id="t1", round_no=1, stage="training", at=2.0, detail={"n": 3})
    )
    assert [s.stage for s in seeded.list_stages("t1", 1)] == ["selection", "training"]
    assert seeded.list_stages("t1", 1)[1].detail == {"n": 3}
    assert seeded.get_round("t1", 1).stage == "training"
    with pytest.raises(NotFoundError):
        seeded.append_stage(StageRecord(task_id="t1", round_no=9, stage="x", at=3.0))


def test_update_round_fields(seeded: Store) -> None:
    seeded.create_round(round_("t1", 1, sha("m0")))
    new = seeded.update_round("t1", 1, checked_in=13, dropped=2, status="committed", ended_at=9.0)
    assert (new.checked_in, new.dropped, new.status) == (13, 2, RoundStatus.COMMITTED)
    assert seeded.get_round("t1", 1) == new
    with pytest.raises(BadRequestError):
        seeded.update_round("t1", 1, model_sha256="other")
    with pytest.raises(BadRequestError, match="not-a-status"):
        seeded.update_round("t1", 1, status="not-a-status")
    with pytest.raises(NotFoundError):
        seeded.update_round("t1", 7, checked_in=1)
    assert seeded.get_round("t1", 1) == new


def test_round_privacy_fields(seeded: Store) -> None:
    seeded.create_round(round_("t1", 1, sha("m0")))
    assert (seeded.get_round("t1", 1).epsilon, seeded.get_round("t1", 1).noise_stddev) == (
        None,
        None,
    )
    new = seeded.update_round("t1", 1, epsilon=1.25, noise_stddev=0.5)
    assert seeded.list_rounds("t1") == [new]
    assert (new.epsilon, new.noise_stddev) == (1.25, 0.5)
    for bad in (float("nan"), -1.0, float("inf"), "1", True):
        with pytest.raises(BadRequestError, match="epsilon"):
            seeded.update_round("t1", 1, epsilon=bad)
    assert seeded.get_round("t1", 1) == new
    seeded.create_round(dataclasses.replace(round_("t1", 2, sha("m0")), epsilon=2.0))
    assert seeded.get_round("t1", 2).epsilon == 2.0


def test_devices_and_revocation(store: Store) -> None:
    store.add_device(device("d2", at=2.0))
    store.add_device(device("d1", at=1.0))
    with pytest.raises(ConflictError):
        store.add_device(device("d1"))
    assert [d.device_id for d in store.list_devices()] == ["d1", "d2"]
    assert store.get_device("d1").public_key == bytes(range(32))
    revoked = store.revoke_device("d1", at=3.0)
    assert revoked.revoked
    assert revoked.revoked_at == 3.0
    with pytest.raises(ConflictError):
        store.revoke_device("d1", at=4.0)
    store.touch_device("d2", at=9.0)
    assert store.get_device("d2").last_seen == 9.0
    with pytest.raises(NotFoundError):
        store.touch_device("ghost", at=1.0)


def test_enrollment_token_is_one_time_and_expires(store: Store) -> None:
    store.add_enrollment_token(EnrollmentTokenRecord(token_hash="h1", created_at=0, expires_at=10))
    store.add_enrollment_token(EnrollmentTokenRecord(token_hash="h2", created_at=0, expires_at=10))
    with pytest.raises(ConflictError):
        store.add_enrollment_token(
            EnrollmentTokenRecord(token_hash="h1", created_at=0, expires_at=10)
        )
    used = store.consume_enrollment_token("h1", device_id="d1", at=5.0)
    assert (used.used_by, used.used_at) == ("d1", 5.0)
    with pytest.raises(AuthError):
        store.consume_enrollment_token("h1", device_id="d2", at=6.0)
    with pytest.raises(AuthError):
        store.consume_enrollment_token("h2", device_id="d2", at=10.0)
    with pytest.raises(AuthError):
        store.consume_enrollment_token("unknown", device_id="d2", at=1.0)
    tokens = {t.token_hash: t for t in store.list_enrollment_tokens()}
    assert tokens["h1"].used_by == "d1"
    assert tokens["h2"].used_by is None


def test_models_lineage_and_status(seeded: Store) -> None:
    with pytest.raises(ConflictError):
        seeded.add_model(model("m0"))
    with pytest.raises(NotFoundError):
        seeded.add_model(model("orphan", parent=sha("missing")))
    with pytest.raises(NotFoundError):
        seeded.add_model(model("m9", parent=sha("m0"), task_id="ghost"))
    seeded.add_model(model("m1", parent=sha("m0"), task_id="t1"))
    assert [m.sha256 for m in seeded.list_models("t1")] == [sha("m1")]
    assert len(seeded.list_models()) == 2
    assert seeded.set_model_status(sha("m1"), ModelStatus.PROMOTED).status is ModelStatus.PROMOTED
    seeded.set_model_status(sha("m1"), ModelStatus.ROLLED_BACK)
    with pytest.raises(IllegalTransition):
        seeded.set_model_status(sha("m1"), ModelStatus.CANDIDATE)
    seeded.set_model_metrics(sha("m1"), {"accuracy": 0.9})
    got = seeded.get_model(sha("m1"))
    assert got.metrics == {"accuracy": 0.9}
    assert got.status is ModelStatus.ROLLED_BACK
    assert got.signature == b"\x01" * 64
    assert got.manifest["tag"] == "m1"


def test_a_version_keeps_the_optimizer_state_it_was_stored_with(seeded: Store) -> None:
    assert seeded.get_model(sha("m0")).optimizer_state_sha256 is None
    child = dataclasses.replace(model("m1", parent=sha("m0"), task_id="t1"),
                                optimizer_state_sha256=sha("state"))  # fmt: skip
    for bad in ["", "A" * 64, "0" * 63, "../" + "0" * 61]:
        with pytest.raises(BadRequestError):
            seeded.add_model(dataclasses.replace(child, optimizer_state_sha256=bad))
    assert [m.sha256 for m in seeded.list_models("t1")] == []
    seeded.add_model(child)
    assert seeded.get_model(sha("m1")) == child
    assert seeded.list_models("t1") == [child]
    seeded.set_model_status(sha("m1"), ModelStatus.PROMOTED)
    seeded.set_model_metrics(sha("m1"), {"accuracy": 0.5})
    assert seeded.get_model(sha("m1")).optimizer_state_sha256 == sha("state")


def test_metrics_ordered_by_round(seeded: Store) -> None:
    for rnd, value in [(2, 0.5), (1, 0.25), (1, 0.3)]:
        seeded.add_metric(MetricRecord(task_id="t1", round_no=rnd, name="acc", value=value, at=1))
    seeded.add_metric(MetricRecord(task_id="t1", round_no=1, name="loss", value=2.0, at=1))
    assert [m.value for m in seeded.list_metrics("t1", "acc")] == [0.25, 0.3, 0.5]
    assert len(seeded.list_metrics("t1")) == 4
    with pytest.raises(NotFoundError):
        seeded.add_metric(MetricRecord(task_id="x", round_no=1, name="acc", value=1, at=1))


def test_audit_is_append_only_and_sequenced(store: Store) -> None:
    a = store.append_audit(AuditEntry(at=1, actor="admin", action="create", subject="t1"))
    b = store.append_audit(
        AuditEntry(at=2, actor="admin", action="start", subject="t1", detail={"k": [1, 2]})
    )
    assert 0 < a.seq < b.seq
    assert store.list_audit() == [a, b]
    assert store.list_audit(after_seq=a.seq) == [b]
    assert store.list_audit(limit=1) == [a]
    assert not hasattr(store, "delete_audit")


def test_transaction_rolls_back_every_write(seeded: Store) -> None:
    before = (seeded.list_tasks(), seeded.list_devices(), seeded.list_audit())

    def several_writes_then_a_duplicate() -> None:
        with seeded.transaction():
            seeded.add_device(device("d1"))
            seeded.append_audit(AuditEntry(at=1, actor="a", action="enroll", subject="d1"))
            seeded.set_task_status("t1", TaskStatus.RUNNING, at=2.0)
            seeded.add_device(device("d1"))  # duplicate: the whole block must vanish

    with pytest.raises(ConflictError):
        several_writes_then_a_duplicate()
    assert (seeded.list_tasks(), seeded.list_devices(), seeded.list_audit()) == before


def test_nested_transactions_join_the_outer_one(seeded: Store) -> None:
    def inner_commits_outer_fails() -> None:
        with seeded.transaction():
            with seeded.transaction():
                seeded.add_device(device("d1"))
            raise RuntimeError("outer fails after inner finished")

    with pytest.raises(RuntimeError):
        inner_commits_outer_fails()
    assert seeded.list_devices() == []


def test_non_json_values_are_refused_without_change(seeded: Store) -> None:
    bad = dataclasses.replace(task("t2", sha("m0")), spec={"x": float("nan")})
    with pytest.raises(StoreError):
        seeded.create_task(bad)
    with pytest.raises(StoreError):
        seeded.set_model_metrics(sha("m0"), {"bad": object()})
    assert [t.task_id for t in seeded.list_tasks()] == ["t1"]
    assert seeded.get_model(sha("m0")).metrics == {}


def test_stored_records_do_not_alias_caller_dicts(seeded: Store) -> None:
    spec = {"goal": 1}
    seeded.create_task(dataclasses.replace(task("t2", sha("m0")), spec=spec))
    spec["goal"] = 99
    assert seeded.get_task("t2").spec == {"goal": 1}


def test_task_state_is_replaced_per_key(seeded: Store) -> None:
    assert seeded.load_task_state("t1", "optimizer") is None
    seeded.save_task_state("t1", "optimizer", {"rounds": 1, "blob": sha("m0")})
    seeded.save_task_state("t1", "optimizer", {"rounds": 2})
    seeded.save_task_state("t1", "inflight", {"round_no": 3})
    assert seeded.load_task_state("t1", "optimizer") == {"rounds": 2}
    assert seeded.load_task_state("t1", "inflight") == {"round_no": 3}
    with pytest.raises(NotFoundError):
        seeded.save_task_state("ghost", "optimizer", {})
    with pytest.raises(StoreError):
        seeded.save_task_state("t1", "optimizer", {"x": float("inf")})
    assert seeded.load_task_state("t1", "optimizer") == {"rounds": 2}


def test_task_state_keys_are_deleted_and_missing_ones_are_no_error(seeded: Store) -> None:
    seeded.save_task_state("t1", "cohort_setup:1:0", {"a": 1})
    seeded.save_task_state("t1", "cohort_offers", {"round_id": 1})
    seeded.save_task_state("t1", "optimizer", {"rounds": 2})
    with seeded.transaction():
        seeded.delete_task_state("t1", ["cohort_setup:1:0", "cohort_offers", "never:saved"])
    assert seeded.load_task_state("t1", "cohort_setup:1:0") is None
    assert seeded.load_task_state("t1", "cohort_offers") is None
    assert seeded.load_task_state("t1", "optimizer") == {"rounds": 2}
    seeded.delete_task_state("ghost", ["optimizer"])  # nothing there: nothing to delete
