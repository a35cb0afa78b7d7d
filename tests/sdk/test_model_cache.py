"""The device's model cache against a real coordinator: each version arrives in its cheapest
form (deltas, weights, file), is rebuilt bit for bit, and anything forged falls back."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.models.delivery import MAX_CHAIN
from fedrt.coordinator.models.version_forms import build_version
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights
from fedrt.sdk.errors import BadSignature
from fedrt.sdk.model_cache import FetchedModel, fetch_version
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config

FIXTURE = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Lineage:
    svc: ServiceThread
    versions: list[str]  # base export first
    files: dict[str, bytes]

    def meta(self, sha: str) -> dict[str, Any]:
        reply = self.svc.request("GET", f"/v1/models/{sha}/meta")
        assert reply.status == 200
        meta: dict[str, Any] = reply.json()
        return meta

    def fetch(self, sha: str, model_dir: Path, meta: dict[str, Any] | None = None) -> FetchedModel:
        record = self.svc.service.store.get_model(sha)
        return fetch_version(
            url=f"http://127.0.0.1:{self.svc.port}/v1/models/{sha}",
            sha256=sha,
            signature=record.signature,
            public_key=self.svc.service.signer.public_key_bytes(),
            raw_manifest=record.manifest,
            meta=self.meta(sha) if meta is None else meta,
            model_dir=model_dir,
            headers=AUTH,
        )

    def hold(self, model_dir: Path, sha: str) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / f"{sha}.tflite").write_bytes(self.files[sha])


@pytest.fixture
def lineage(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Lineage]:
    """A task on the mlp fixture and MAX_CHAIN + 2 committed versions after its base."""
    with ServiceThread(make_config(tmp_path / "data", mosquitto.url)) as svc:
        catalog = svc.service.catalog
        base = catalog.add_export_dir(FIXTURE, actor="test", max_bytes=1 << 20)
        task = svc.request("POST", "/v1/tasks", body={"name": "t", "model_sha256": base.sha256})
        task_id = task.json()["task_id"]
        data = (FIXTURE / "model.tflite").read_bytes()
        manifest = Manifest.load(FIXTURE)
        weights = np.concatenate([w.reshape(-1) for w in read_weights(data, manifest)])
        rng = np.random.default_rng(5)
        versions, files, parent = [base.sha256], {base.sha256: data}, base.sha256
        for round_no in range(1, MAX_CHAIN + 3):
            target = weights + rng.normal(scale=0.02, size=weights.size).astype(np.float32)
            built = build_version(catalog.blobs, catalog.delivery, parent_sha256=parent,
                                  parent_data=files[parent], parent_weights=weights,
                                  manifest=manifest, target=target, bits=4,
                                  round_no=round_no)  # fmt: skip
            record = catalog.add_version(built.data, built.manifest.to_dict(), task_id=task_id,
                                         parent_sha256=parent, round_no=round_no)  # fmt: skip
            built.record(catalog.delivery, version=record.sha256, parent=parent, task_id=task_id)
            parent, weights = record.sha256, built.weights
            versions.append(parent)
            files[parent] = built.data
        yield Lineage(svc, versions, files)


def _check(got: FetchedModel, lineage: Lineage, sha: str) -> None:
    assert got.path.read_bytes() == lineage.files[sha]


def test_a_device_holding_the_parent_downloads_only_the_delta(
    lineage: Lineage, tmp_path: Path
) -> None:
    v = lineage.versions
    lineage.hold(tmp_path / "m", v[1])
    got = lineage.fetch(v[2], tmp_path / "m")
    _check(got, lineage, v[2])
    assert got.form == "delta"
    # The graph comes from the held file: only the delta crossed the network.
    assert set(got.bytes_by_kind) == {"delta"}
    assert got.bytes_by_kind["delta"] < len(lineage.files[v[2]]) / 4
    # Two versions behind: two deltas, applied in order.
    lineage.hold(tmp_path / "m2", v[1])
    got = lineage.fetch(v[3], tmp_path / "m2")
    _check(got, lineage, v[3])
    delta = lineage.meta(v[3])["delivery"]["deltas"]
    assert got.bytes_by_kind == {"delta": delta[0]["bytes"] + delta[1]["bytes"]}
    # Asked again: already there, nothing fetched.
    again = lineage.fetch(v[3], tmp_path / "m2")
    assert again.form == "cached"
    assert again.fetched_bytes == 0


def test_a_new_device_fetches_graph_and_weights_once_then_deltas(
    lineage: Lineage, tmp_path: Path
) -> None:
    v = lineage.versions
    got = lineage.fetch(v[1], tmp_path / "m")
    _check(got, lineage, v[1])
    assert got.form == "weights"
    assert set(got.bytes_by_kind) == {"graph", "weights"}
    assert got.bytes_by_kind["weights"] == 4 * Manifest.load(FIXTURE).num_params
    assert list((tmp_path / "m" / "graphs").iterdir())  # cached by its sha256
    nxt = lineage.fetch(v[2], tmp_path / "m")
    _check(nxt, lineage, v[2])
    assert set(nxt.bytes_by_kind) == {"delta"}


def test_too_far_behind_gets_the_weights(lineage: Lineage, tmp_path: Path) -> None:
    v = lineage.versions
    lineage.hold(tmp_path / "m", v[0])  # MAX_CHAIN + 2 versions behind the newest
    assert len(lineage.meta(v[-1])["delivery"]["deltas"]) == MAX_CHAIN
    got = lineage.fetch(v[-1], tmp_path / "m")
    _check(got, lineage, v[-1])
    assert got.form == "weights"
    assert "graph" not in got.bytes_by_kind  # stripped from the held base export


def test_a_base_export_comes_as_its_file(lineage: Lineage, tmp_path: Path) -> None:
    base = lineage.versions[0]
    assert "delivery" not in lineage.meta(base)
    got = lineage.fetch(base, tmp_path / "m")
    _check(got, lineage, base)
    assert got.form == "file"
    assert set(got.bytes_by_kind) == {"file"}
    for form in ("graph", "weights", "delta"):
        assert lineage.svc.request("GET", f"/v1/models/{base}/{form}").status == 404


def test_forged_parts_are_refused_and_the_file_is_fetched(
    lineage: Lineage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v = lineage.versions
    # A delta of another step, consistent with its own hash: made for other base weights.
    meta = lineage.meta(v[3])
    other = lineage.meta(v[4])["delivery"]["deltas"][0]
    meta["delivery"]["deltas"][0] |= {k: other[k] for k in ("sha256", "bytes", "path")}
    lineage.hold(tmp_path / "a", v[2])
    with caplog.at_level(logging.WARNING, logger="fedrt.sdk.model_cache"):
        got = lineage.fetch(v[3], tmp_path / "a", meta)
    _check(got, lineage, v[3])
    assert got.form == "file"
    assert got.bytes_by_kind["file"] == len(lineage.files[v[3]])
    assert "WrongBase" in caplog.text  # the typed refusal, logged with the fallback
    # Weights of another version: they rebuild a file that is not the signed one.
    meta = lineage.meta(v[3])
    meta["delivery"]["weights"] = lineage.meta(v[4])["delivery"]["weights"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedrt.sdk.model_cache"):
        got = lineage.fetch(v[3], tmp_path / "b", meta)
    _check(got, lineage, v[3])
    assert got.form == "file"
    assert "RebuildMismatch" in caplog.text
    # A blob whose bytes do not match the hash the reply gives.
    meta = lineage.meta(v[3])
    meta["delivery"]["deltas"][0]["sha256"] = "0" * 64
    lineage.hold(tmp_path / "c", v[2])
    assert lineage.fetch(v[3], tmp_path / "c", meta).form == "file"
    # A path to another server: never followed (the credentials would go with it).
    meta = lineage.meta(v[3])
    meta["delivery"]["weights"]["path"] = "http://198.51.100.7/steal"
    assert lineage.fetch(v[3], tmp_path / "d", meta).form == "file"


def test_a_stored_delta_that_rots_is_refused_by_the_server_and_the_device_falls_back(
    lineage: Lineage, tmp_path: Path
) -> None:
    v = lineage.versions
    blobs = lineage.svc.service.blobs
    path = blobs.path(lineage.meta(v[2])["delivery"]["deltas"][0]["sha256"])
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    lineage.hold(tmp_path / "m", v[1])
    got = lineage.fetch(v[2], tmp_path / "m")
    _check(got, lineage, v[2])
    assert got.form == "file"


def test_a_bad_signature_stops_everything_before_a_byte_is_fetched(
    lineage: Lineage, tmp_path: Path
) -> None:
    v = lineage.versions
    record = lineage.svc.service.store.get_model(v[2])
    with pytest.raises(BadSignature):
        fetch_version(url=f"http://127.0.0.1:{lineage.svc.port}/v1/models/{v[2]}", sha256=v[2],
                      signature=bytes(64), public_key=lineage.svc.service.signer.public_key_bytes(),
                      raw_manifest=record.manifest, meta=lineage.meta(v[2]),
                      model_dir=tmp_path / "m", headers=AUTH)  # fmt: skip
    assert not (tmp_path / "m").exists()


def test_every_form_supports_ranges_and_resumes(lineage: Lineage, tmp_path: Path) -> None:
    v = lineage.versions
    delivery = lineage.meta(v[2])["delivery"]
    for form, size in (("graph", delivery["graph"]["bytes"]),
                       ("weights", delivery["weights"]["bytes"]),
                       ("delta", delivery["deltas"][0]["bytes"])):  # fmt: skip
        path = f"/v1/models/{v[2]}/{form}"
        full = lineage.svc.request("GET", path)
        assert full.status == 200
        assert len(full.body) == size
        blob = delivery["deltas"][0] if form == "delta" else delivery[form]
        assert full.headers["ETag"] == f'"{blob["sha256"]}"'
        part = lineage.svc.request("GET", path, headers={"Range": "bytes=10-"})
        assert part.status == 206
        assert part.body == full.body[10:]
        assert part.headers["Content-Range"] == f"bytes 10-{size - 1}/{size}"
    # An old device's whole-file download still works, with Range.
    whole = lineage.svc.request("GET", f"/v1/models/{v[2]}")
    assert whole.body == lineage.files[v[2]]
    # A weights download cut short resumes with a Range request from where it stopped.
    model_dir = tmp_path / "m"
    parts = model_dir / "parts"
    parts.mkdir(parents=True)
    weights = lineage.svc.request("GET", f"/v1/models/{v[2]}/weights").body
    sha = delivery["weights"]["sha256"]
    (parts / f".{sha}.weights.{sha[:16]}.part").write_bytes(weights[:100])
    got = lineage.fetch(v[2], model_dir)
    _check(got, lineage, v[2])
    assert got.bytes_by_kind["weights"] == len(weights) - 100


def test_transfers_are_counted_by_version_and_kind(lineage: Lineage, tmp_path: Path) -> None:
    v = lineage.versions
    transfers = lineage.svc.service.catalog.transfers
    transfers.take(v[2])
    lineage.hold(tmp_path / "m", v[1])
    got = lineage.fetch(v[2], tmp_path / "m")
    sent = transfers.take(v[2])
    assert sent["delta"] == got.bytes_by_kind["delta"]
    assert sent["file"] == 0
    assert json.dumps(sent)  # plain ints, ready for a round's detail
