"""Model versions: import exported models, register signed versions, promote and roll back."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedrt.coordinator.errors import (
    BadArtifactError,
    ConflictError,
    CorruptArtifactError,
    NotFoundError,
)
from fedrt.coordinator.models.blobs import BlobStore, BlobWriter, check_sha256
from fedrt.coordinator.models.delivery import DeliveryIndex, TransferMeter
from fedrt.coordinator.records import AuditEntry, ModelRecord, ModelStatus, TaskRecord
from fedrt.coordinator.security.signing import ModelSigner
from fedrt.coordinator.store.base import Store
from fedrt.model_export.errors import ExportError
from fedrt.model_export.manifest import MANIFEST_NAME, Manifest

Clock = Callable[[], float]
# A flatbuffer's file identifier sits at bytes 4..8; every TFLite model says "TFL3".
_TFLITE_ID = b"TFL3"
_MAX_MANIFEST_BYTES = 1 << 20


def parse_manifest(data: bytes) -> Manifest:
    """Decode and validate an exported model's manifest.json, or ``BadArtifactError``."""
    if len(data) > _MAX_MANIFEST_BYTES:
        raise BadArtifactError("manifest.json larger than 1 MiB")
    try:
        return Manifest.from_json(data)
    except ExportError as exc:
        raise BadArtifactError(f"bad manifest: {exc}") from None


class ModelCatalog:
    """The only writer of model records: each carries a signature over (sha256, manifest)."""

    def __init__(
        self, store: Store, blobs: BlobStore, signer: ModelSigner, *, clock: Clock
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.signer = signer
        self._clock = clock
        # Graph, weights and delta of each version built from a graph (``delivery``), and
        # the bytes of every form served to devices, for the rounds' reports.
        self.delivery = DeliveryIndex(blobs, store)
        self.transfers = TransferMeter()

    # -- importing exported models (the start of a task's lineage)
    def add_export_dir(self, directory: Path, *, actor: str, max_bytes: int) -> ModelRecord:
        """Import ``fedrt export``'s output directory (manifest.json + the model file)."""
        directory = Path(directory)
        try:
            manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
        except OSError as exc:
            raise BadArtifactError(
                f"cannot read {directory / MANIFEST_NAME}: {exc.strerror}"
            ) from None
        manifest = parse_manifest(manifest_bytes)
        with self.blobs.writer(max_bytes) as writer:
            try:
                with (directory / manifest.model_file).open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        writer.write(chunk)
            except OSError as exc:
                raise BadArtifactError(f"cannot read model file: {exc.strerror}") from None
            return self.add_uploaded(manifest, writer, actor=actor)

    def add_uploaded(self, manifest: Manifest, writer: BlobWriter, *, actor: str) -> ModelRecord:
        """Finish an upload streamed into ``writer``; idempotent for identical content."""
        if writer.size != manifest.model_bytes:
            writer.abort()
            raise BadArtifactError(
                f"model file has {writer.size} bytes, manifest says {manifest.model_bytes}"
            )
        if writer.head[4:8] != _TFLITE_ID:
            writer.abort()
            raise BadArtifactError("model file is not a TFLite flatbuffer (no TFL3 identifier)")
        sha = writer.commit(expected_sha256=manifest.sha256)
        try:
            existing = self.store.get_model(sha)
        except NotFoundError:
            pass
        else:
            if existing.manifest != _json(manifest.to_dict()):
                raise ConflictError(f"model {sha} already stored with a different manifest")
            return existing
        return self._register(
            sha=sha,
            manifest=manifest.to_dict(),
            task_id=None,
            parent=None,
            round_no=None,
            status=ModelStatus.PROMOTED,  # an operator-provided base model is trusted as is
            metrics={},
            actor=actor,
        )

    # -- versions produced by rounds
    def add_version(
        self,
        data: bytes,
        manifest: Mapping[str, Any],
        *,
        task_id: str,
        parent_sha256: str,
        round_no: int,
        metrics: Mapping[str, Any] | None = None,
        actor: str = "coordinator",
        optimizer_state_sha256: str | None = None,
    ) -> ModelRecord:
        """Store a round's result (e.g. new global weights) as a signed CANDIDATE version,
        with the blob of the server optimizer state that round ended with, if any."""
        self.store.get_task(task_id)
        self.store.get_model(parent_sha256)
        if optimizer_state_sha256 is not None:
            self.blobs.size(optimizer_state_sha256)  # NotFoundError unless stored
        sha = self.blobs.put_bytes(data)
        return self._register(
            sha=sha,
            manifest=dict(manifest),
            task_id=task_id,
            parent=parent_sha256,
            round_no=round_no,
            status=ModelStatus.CANDIDATE,
            metrics=dict(metrics or {}),
            actor=actor,
            optimizer_state=optimizer_state_sha256,
        )

    def _register(
        self,
        *,
        sha: str,
        manifest: dict[str, Any],
        task_id: str | None,
        parent: str | None,
        round_no: int | None,
        status: ModelStatus,
        metrics: dict[str, Any],
        actor: str,
        optimizer_state: str | None = None,
    ) -> ModelRecord:
        manifest = _json(manifest)
        record = ModelRecord(
            sha256=sha,
            task_id=task_id,
            parent_sha256=parent,
            round_no=round_no,
            status=status,
            size=self.blobs.size(sha),
            manifest=manifest,
            signature=self.signer.sign(sha, manifest),
            created_at=self._clock(),
            metrics=metrics,
            optimizer_state_sha256=optimizer_state,
        )
        with self.store.transaction():
            self.store.add_model(record)
            self._audit(actor, "model.add", sha, {"task_id": task_id, "round_no": round_no})
        return record

    # -- lifecycle
    def promote(self, sha256: str, *, task_id: str, actor: str) -> TaskRecord:
        """Make a version the task's current model (the next round starts from it)."""
        check_sha256(sha256)
        with self.store.transaction():
            model = self.store.get_model(sha256)
            if model.task_id not in (None, task_id):
                raise ConflictError(f"model {sha256} belongs to task {model.task_id}")
            if model.status is not ModelStatus.PROMOTED:
                self.store.set_model_status(sha256, ModelStatus.PROMOTED)
            task = self.store.set_task_model(task_id, sha256, at=self._clock())
            self._audit(actor, "model.promote", sha256, {"task_id": task_id})
            return task

    def rollback(
        self,
        task_id: str,
        *,
        to: str | None,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> TaskRecord:
        """Mark the task's current version rolled back and return to ``to`` (default: parent).

        ``to`` must be an ancestor of the current version, so a rollback never jumps to
        another task's lineage. ``detail`` (why, e.g. the gate's figures) joins the audit entry.
        """
        with self.store.transaction():
            task = self.store.get_task(task_id)
            current = self.store.get_model(task.model_sha256)
            lineage = self._ancestors(current)
            if not lineage:
                raise ConflictError(f"task {task_id} is at its base model; nothing to roll back")
            target = lineage[0] if to is None else check_sha256(to)
            if target not in lineage:
                raise ConflictError(f"{target} is not an ancestor of the current model")
            self.store.set_model_status(current.sha256, ModelStatus.ROLLED_BACK)
            if self.store.get_model(target).status is ModelStatus.ROLLED_BACK:
                self.store.set_model_status(target, ModelStatus.PROMOTED)
            task = self.store.set_task_model(task_id, target, at=self._clock())
            moved = {"from": current.sha256, "to": target}
            self._audit(actor, "model.rollback", task_id, {**(detail or {}), **moved})
            return task

    def fall_back(self, task_id: str, *, broken: str, reason: str, actor: str) -> TaskRecord:
        """Move the task off ``broken``, its current version whose artifact cannot be read,
        to the newest promoted ancestor whose artifact verifies (audited ``model.fallback``).

        ``CorruptArtifactError`` if there is none. The broken version keeps its status: once
        its bytes are restored it is served again, and an operator may promote it again.
        """
        # Hash outside the transaction: a large model must not hold the store's write lock.
        good = next((a for a in self._ancestors(self.store.get_model(broken))
                     if self._usable(a)), None)  # fmt: skip
        if good is None:
            raise CorruptArtifactError(
                f"task {task_id}: no promoted ancestor of {broken} has an intact artifact"
            )
        with self.store.transaction():
            task = self.store.get_task(task_id)
            if task.model_sha256 != broken:
                return task  # moved meanwhile (an operator's promotion or rollback wins)
            task = self.store.set_task_model(task_id, good, at=self._clock())
            detail = {"from": broken, "to": good, "reason": reason}
            self._audit(actor, "model.fallback", task_id, detail)
            return task

    def _usable(self, sha256: str) -> bool:
        if self.store.get_model(sha256).status is not ModelStatus.PROMOTED:
            return False
        try:
            self.blobs.check(sha256)
        except (CorruptArtifactError, NotFoundError):
            return False
        return True

    def _ancestors(self, model: ModelRecord) -> list[str]:
        out: list[str] = []
        seen = {model.sha256}
        parent = model.parent_sha256
        while parent is not None and parent not in seen:
            out.append(parent)
            seen.add(parent)
            parent = self.store.get_model(parent).parent_sha256
        return out

    def _audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        self.store.append_audit(
            AuditEntry(at=self._clock(), actor=actor, action=action, subject=subject, detail=detail)
        )


def _json(obj: Mapping[str, Any]) -> dict[str, Any]:
    # Stores return JSON round-tripped dicts; compare and sign the same normal form.
    out = json.loads(json.dumps(obj, allow_nan=False))
    assert isinstance(out, dict)
    return out


__all__ = ["ModelCatalog", "parse_manifest"]
