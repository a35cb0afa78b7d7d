"""Model catalog: import of exported models, signed versions, promotion and rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrt.coordinator.errors import (
    BadArtifactError,
    ConflictError,
    CorruptArtifactError,
    NotFoundError,
)
from fedrt.coordinator.models import BlobStore, ModelCatalog
from fedrt.coordinator.records import ModelStatus, TaskRecord, TaskStatus
from fedrt.coordinator.security.signing import ModelSigner, verify_model_signature
from fedrt.coordinator.store import SqliteStore
from tests.coordinator.damage import damage
from tests.coordinator.exported import write_export

LIMIT = 1 << 20


@pytest.fixture
def catalog(tmp_path: Path) -> ModelCatalog:
    store = SqliteStore(tmp_path / "db.sqlite3")
    now = iter(range(1000, 10**6))
    return ModelCatalog(
        store,
        BlobStore(tmp_path / "blobs"),
        ModelSigner.load_or_create(tmp_path / "keys"),
        clock=lambda: float(next(now)),
    )


def _task(catalog: ModelCatalog, sha: str) -> None:
    catalog.store.create_task(
        TaskRecord(
            task_id="t1", name="t", status=TaskStatus.CREATED, spec={}, model_sha256=sha,
            created_at=1.0, updated_at=1.0,
        )
    )  # fmt: skip


def test_import_export_dir_signs_and_is_idempotent(catalog: ModelCatalog, tmp_path: Path) -> None:
    manifest = write_export(tmp_path / "export")
    record = catalog.add_export_dir(tmp_path / "export", actor="admin", max_bytes=LIMIT)
    assert record.sha256 == manifest.sha256
    assert record.status is ModelStatus.PROMOTED
    assert catalog.blobs.read(record.sha256) == (tmp_path / "export" / "model.tflite").read_bytes()
    verify_model_signature(
        catalog.signer.public_key_bytes(), record.sha256, record.manifest, record.signature
    )
    again = catalog.add_export_dir(tmp_path / "export", actor="admin", max_bytes=LIMIT)
    assert again == record
    assert [e.action for e in catalog.store.list_audit()] == ["model.add"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.tflite").write_bytes(b"\0" * 4096), "TFL3"),
        (lambda d: (d / "model.tflite").write_bytes(b"short"), "bytes"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "manifest"),
        (lambda d: (d / "manifest.json").unlink(), "cannot read"),
        (lambda d: (d / "model.tflite").unlink(), "cannot read model"),
    ],
)
def test_bad_exports_are_refused_without_change(
    catalog: ModelCatalog, tmp_path: Path, damage: object, message: str
) -> None:
    write_export(tmp_path / "export")
    damage(tmp_path / "export")  # type: ignore[operator]
    with pytest.raises(BadArtifactError, match=message):
        catalog.add_export_dir(tmp_path / "export", actor="admin", max_bytes=LIMIT)
    assert catalog.store.list_models() == []
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_hash_mismatch_is_refused(catalog: ModelCatalog, tmp_path: Path) -> None:
    write_export(tmp_path / "export")
    data = json.loads((tmp_path / "export" / "manifest.json").read_text())
    data["sha256"] = "0" * 64
    (tmp_path / "export" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BadArtifactError, match="does not match"):
        catalog.add_export_dir(tmp_path / "export", actor="admin", max_bytes=LIMIT)
    assert catalog.store.list_models() == []


def test_versions_promote_and_roll_back(catalog: ModelCatalog, tmp_path: Path) -> None:
    base = catalog.add_export_dir(write_dir(tmp_path), actor="admin", max_bytes=LIMIT)
    _task(catalog, base.sha256)
    v1 = catalog.add_version(
        b"weights-1", {"kind": "weights"}, task_id="t1", parent_sha256=base.sha256, round_no=1
    )
    assert v1.status is ModelStatus.CANDIDATE
    verify_model_signature(catalog.signer.public_key_bytes(), v1.sha256, v1.manifest, v1.signature)
    catalog.promote(v1.sha256, task_id="t1", actor="coordinator")
    v2 = catalog.add_version(
        b"weights-2", {"kind": "weights"}, task_id="t1", parent_sha256=v1.sha256, round_no=2
    )
    catalog.promote(v2.sha256, task_id="t1", actor="coordinator")
    task = catalog.rollback("t1", to=base.sha256, actor="admin")
    assert task.model_sha256 == base.sha256
    assert catalog.store.get_model(v2.sha256).status is ModelStatus.ROLLED_BACK
    assert catalog.store.list_audit()[-1].action == "model.rollback"


def test_rollback_refuses_non_ancestors_and_base(catalog: ModelCatalog, tmp_path: Path) -> None:
    base = catalog.add_export_dir(write_dir(tmp_path), actor="admin", max_bytes=LIMIT)
    _task(catalog, base.sha256)
    with pytest.raises(ConflictError, match="base model"):
        catalog.rollback("t1", to=None, actor="admin")
    v1 = catalog.add_version(
        b"w1", {"kind": "weights"}, task_id="t1", parent_sha256=base.sha256, round_no=1
    )
    catalog.promote(v1.sha256, task_id="t1", actor="c")
    audit_len = len(catalog.store.list_audit())
    with pytest.raises(ConflictError, match="ancestor"):
        catalog.rollback("t1", to="f" * 64, actor="admin")
    with pytest.raises(NotFoundError):
        catalog.rollback("ghost", to=None, actor="admin")
    assert catalog.store.get_task("t1").model_sha256 == v1.sha256
    assert len(catalog.store.list_audit()) == audit_len
    assert catalog.rollback("t1", to=None, actor="admin").model_sha256 == base.sha256


def test_a_version_names_its_optimizer_state_blob(catalog: ModelCatalog, tmp_path: Path) -> None:
    base = catalog.add_export_dir(write_dir(tmp_path), actor="admin", max_bytes=LIMIT)
    _task(catalog, base.sha256)
    with pytest.raises(NotFoundError):  # the blob must be stored first
        catalog.add_version(b"w1", {}, task_id="t1", parent_sha256=base.sha256, round_no=1,
                            optimizer_state_sha256="0" * 64)  # fmt: skip
    state = catalog.blobs.put_bytes(b"state")
    v1 = catalog.add_version(b"w1", {}, task_id="t1", parent_sha256=base.sha256, round_no=1,
                             optimizer_state_sha256=state)  # fmt: skip
    assert catalog.store.get_model(v1.sha256).optimizer_state_sha256 == state
    assert base.optimizer_state_sha256 is None


def test_fall_back_moves_to_the_newest_intact_promoted_ancestor(
    catalog: ModelCatalog, tmp_path: Path
) -> None:
    base = catalog.add_export_dir(write_dir(tmp_path), actor="admin", max_bytes=LIMIT)
    _task(catalog, base.sha256)
    shas = [base.sha256]
    for n, status in enumerate(["promoted", "candidate", "promoted", "promoted"], start=1):
        v = catalog.add_version(f"w{n}".encode(), {}, task_id="t1", parent_sha256=shas[-1],
                                round_no=n)  # fmt: skip
        if status == "promoted":
            catalog.promote(v.sha256, task_id="t1", actor="coordinator")
        shas.append(v.sha256)
    _, v1, _candidate, v3, v4 = shas
    damage(catalog.blobs.path(v4))
    damage(catalog.blobs.path(v3))  # the newest promoted ancestor is corrupt too; v2 is a candidate
    task = catalog.fall_back("t1", broken=v4, reason="corrupt", actor="coordinator")
    assert task.model_sha256 == v1
    entry = catalog.store.list_audit()[-1]
    assert (entry.action, entry.subject) == ("model.fallback", "t1")
    assert entry.detail == {"from": v4, "to": v1, "reason": "corrupt"}
    assert catalog.store.get_model(v4).status is ModelStatus.PROMOTED  # only its file is bad
    # Already moved (an operator was faster): nothing changes, nothing is audited.
    audit_len = len(catalog.store.list_audit())
    assert catalog.fall_back("t1", broken=v4, reason="x", actor="c").model_sha256 == v1
    assert len(catalog.store.list_audit()) == audit_len


def test_fall_back_without_an_intact_ancestor_changes_nothing(
    catalog: ModelCatalog, tmp_path: Path
) -> None:
    base = catalog.add_export_dir(write_dir(tmp_path), actor="admin", max_bytes=LIMIT)
    _task(catalog, base.sha256)
    v1 = catalog.add_version(b"w1", {}, task_id="t1", parent_sha256=base.sha256, round_no=1)
    catalog.promote(v1.sha256, task_id="t1", actor="coordinator")
    damage(catalog.blobs.path(base.sha256))
    damage(catalog.blobs.path(v1.sha256))
    audit_len = len(catalog.store.list_audit())
    with pytest.raises(CorruptArtifactError, match="no promoted ancestor"):
        catalog.fall_back("t1", broken=v1.sha256, reason="corrupt", actor="coordinator")
    assert catalog.store.get_task("t1").model_sha256 == v1.sha256
    assert len(catalog.store.list_audit()) == audit_len


def write_dir(tmp_path: Path) -> Path:
    write_export(tmp_path / "export")
    return tmp_path / "export"
