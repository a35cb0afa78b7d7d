"""A model file corrupted on the coordinator's own disk: never served (HTTP 500, counted once),
rounds fall back to the last intact promoted version, and restoring the bytes serves it again."""

from __future__ import annotations

import functools
from pathlib import Path

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.models.optimizer_state import decode_state
from fedrt.coordinator.records import RoundStatus
from tests.coordinator.damage import damage, restore
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets
from tests.coordinator.harness import ServiceThread, make_config
from tests.coordinator.live_round import MODEL_DIR

COUNTED_ONCE = 'fedrt_artifact_corrupt_total{kind="model"} 1.0\n'


def test_rounds_fall_back_to_the_last_intact_version_and_commit(tmp_path: Path) -> None:
    fleet = Fleet(3, pull_to_targets)
    fleet.open(tmp_path)
    fleet.create_task(strategy="fedadam", server_lr=0.05, max_rounds=3)
    fleet.run_until(lambda: len(fleet.committed()) == 2)
    svc = fleet.svc
    v1, v2 = fleet.committed()
    assert svc.store.get_task(TASK).model_sha256 == v2
    good = damage(svc.blobs.path(v2))  # the current version, held in the driver's memory
    fleet.run_until(fleet.done)
    third = svc.store.list_rounds(TASK)[2]
    assert (third.model_sha256, third.status) == (v1, RoundStatus.COMMITTED)
    v3 = fleet.committed()[2]
    assert svc.store.get_model(v3).parent_sha256 == v1
    assert svc.store.get_task(TASK).model_sha256 == v3
    fallbacks = [e.detail for e in svc.store.list_audit(limit=1000) if e.action == "model.fallback"]
    assert [(d["from"], d["to"]) for d in fallbacks] == [(v2, v1)]
    assert COUNTED_ONCE in svc.metrics.render()
    # Round 3 went on from version 1's optimizer state (one round in), not version 2's.
    blob = svc.store.get_model(v3).optimizer_state_sha256
    assert blob is not None
    assert decode_state(svc.blobs.read(blob))[1].rounds == 2
    restore(svc.blobs.path(v2), good)
    assert svc.blobs.check(v2) == svc.blobs.path(v2)
    assert COUNTED_ONCE in svc.metrics.render()
    assert fleet.coordinator is not None
    fleet.coordinator.close()


def test_a_corrupt_artifact_is_a_500_counted_once_and_served_again_when_restored(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    with ServiceThread(make_config(tmp_path / "data", mosquitto.url)) as svc:
        catalog = svc.service.catalog
        add = functools.partial(catalog.add_export_dir, actor="test", max_bytes=1 << 20)
        sha = svc.run(add, MODEL_DIR).sha256
        url = f"/v1/models/{sha}"
        assert svc.request("GET", url).status == 200
        good = damage(catalog.blobs.path(sha))
        for headers in ({}, {"Range": "bytes=0-99"}, {}):
            reply = svc.request("GET", url, headers=headers)  # checked against OpenAPI
            assert reply.status == 500
            assert reply.json()["error"]["type"] == "CorruptArtifactError"
        metrics = svc.request("GET", "/metrics").body.decode()
        assert COUNTED_ONCE in metrics
        restore(catalog.blobs.path(sha), good)
        served = svc.request("GET", url)
        assert (served.status, served.body) == (200, good)
        assert COUNTED_ONCE in svc.request("GET", "/metrics").body.decode()
