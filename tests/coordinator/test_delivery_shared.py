"""Version forms shared through the store: what one instance built, another serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrt.coordinator.models import BlobStore, ModelCatalog
from fedrt.coordinator.models.delivery import DELTA, GRAPH, WEIGHTS, delivery_view
from fedrt.coordinator.models.version_forms import build_version
from fedrt.coordinator.records import TaskRecord, TaskStatus
from fedrt.coordinator.security.signing import ModelSigner
from fedrt.coordinator.store import MemoryStore
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights

FIXTURE = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"


def _catalog(store: MemoryStore, root: Path) -> ModelCatalog:
    blobs = BlobStore(root / "blobs", mirror=store)
    return ModelCatalog(store, blobs, ModelSigner.load_or_create(root / "keys"), clock=lambda: 1.0)


def test_a_version_built_on_one_instance_has_its_forms_on_another(tmp_path: Path) -> None:
    store = MemoryStore()
    one, two = _catalog(store, tmp_path / "one"), _catalog(store, tmp_path / "two")
    base = one.add_export_dir(FIXTURE, actor="test", max_bytes=1 << 20)
    store.create_task(
        TaskRecord(task_id="t1", name="t", status=TaskStatus.RUNNING, spec={},
                   model_sha256=base.sha256, created_at=1.0, updated_at=1.0)
    )  # fmt: skip
    data = (FIXTURE / "model.tflite").read_bytes()
    manifest = Manifest.load(FIXTURE)
    weights = np.concatenate([w.reshape(-1) for w in read_weights(data, manifest)])
    built = build_version(one.blobs, one.delivery, parent_sha256=base.sha256, parent_data=data,
                          parent_weights=weights, manifest=manifest, target=weights + 0.01,
                          bits=4, round_no=1)  # fmt: skip
    record = one.add_version(built.data, built.manifest.to_dict(), task_id="t1",
                             parent_sha256=base.sha256, round_no=1)  # fmt: skip
    made = built.record(one.delivery, version=record.sha256, parent=base.sha256, task_id="t1")

    seen = two.delivery.get(record.sha256)
    assert seen == made
    assert (two.delivery.root / f"{record.sha256}.json").exists()  # cached from now on
    for kind in (GRAPH, WEIGHTS, DELTA):
        assert two.blobs.read(seen.blob(kind)) == one.blobs.read(made.blob(kind))
    view = delivery_view(two.delivery, record.sha256)
    assert view is not None
    assert view["deltas"][0]["from"] == base.sha256
    assert delivery_view(two.delivery, record.sha256) is view  # built once, never copied
    # A base export has no forms anywhere; an unknown version is simply not there.
    assert two.delivery.get(base.sha256) is None
    assert two.delivery.get("0" * 64) is None
