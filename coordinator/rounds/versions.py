"""Model versions in and out of rounds: the version a round starts from (verified, flattened,
with its optimizer state), the signed version a commit makes, and whether it is promoted.

The only round module that reads or writes model files (``fedrt.model_export``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.driver.base import DriverContext
from fedrt.coordinator.errors import CorruptArtifactError, NotFoundError
from fedrt.coordinator.models.catalog import ModelCatalog
from fedrt.coordinator.models.optimizer_state import load_state, save_state
from fedrt.coordinator.models.version_forms import build_version
from fedrt.coordinator.records import ModelRecord
from fedrt.coordinator.rounds.commands import Commit, RoundMetrics
from fedrt.coordinator.rounds.journal import metrics_json
from fedrt.coordinator.rounds.runs import LoadedModel, Run
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights, unflatten

log = logging.getLogger(__name__)

# Server-side evaluation of a candidate model: (model bytes, manifest) -> metrics such as
# {"accuracy": 0.93, "loss": 0.21}. Runs on the coordinator's own held-out data.
Evaluator = Callable[[bytes, Manifest], Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class NewVersion:
    """The version a committed round made, and the server-side evaluation of it."""

    record: ModelRecord
    manifest: Manifest
    data: bytes
    evaluation: dict[str, float]
    # The weights devices rebuild, which the version holds (the commit's weights after the
    # downlink's quantized delta, ``protocol.weights_delta``).
    weights: npt.NDArray[np.float32]


def flatten(weights: list[npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
    return np.concatenate([np.asarray(w, np.float32).reshape(-1) for w in weights])


def load_model(ctx: DriverContext, run: Run, sha256: str, *, retry_delay_s: float) -> LoadedModel:
    """The version a round starts from, and the optimizer state saved with it.

    Its file must verify, since devices download that file (hashed again only when it
    changed, ``BlobStore.check``): a corrupt or missing one moves the task to its newest
    intact promoted ancestor (``ModelCatalog.fall_back``, audited).
    """
    catalog = ctx.catalog
    try:
        catalog.blobs.check(sha256)
    except (CorruptArtifactError, NotFoundError) as exc:
        log.error("task %s: version %s cannot be served: %s", run.task_id, sha256, exc)
        try:
            sha256 = catalog.fall_back(
                run.task_id, broken=sha256, reason=str(exc), actor="coordinator"
            ).model_sha256
        except CorruptArtifactError:
            run.next_start = ctx.clock() + retry_delay_s  # not on every tick
            raise
    if run.model is not None and run.model.record.sha256 == sha256:
        return run.model
    record = ctx.store.get_model(sha256)
    manifest = Manifest.from_dict(record.manifest)
    data = catalog.blobs.read(sha256)
    flat = flatten(read_weights(data, manifest))
    run.model = LoadedModel(record, manifest, data, flat)
    run.opt_state = load_state(catalog.blobs, record, run.optimizer, size=flat.size,
                               rounds=run.opt_state.rounds, task_id=run.task_id)  # fmt: skip
    return run.model


def add_version(
    catalog: ModelCatalog, run: Run, commit: Commit, evaluator: Evaluator | None
) -> NewVersion:
    """The committed weights written into the round's model: a new signed version, with
    its evaluation and the optimizer state that produced it.

    The version's file is its architecture's graph with the weights that devices rebuild:
    with ``download_bits`` set, the parent's weights plus the dequantized delta (stored as
    a blob for the parent's holders); else the commit's float32 weights as they are."""
    model = run.model
    assert model is not None
    built = build_version(
        catalog.blobs,
        catalog.delivery,
        parent_sha256=model.record.sha256,
        parent_data=model.data,
        parent_weights=model.flat,
        manifest=model.manifest,
        target=commit.weights,
        bits=run.spec.download_bits,
        round_no=commit.round_id,
    )
    evaluation = dict(evaluator(built.data, built.manifest)) if evaluator else {}
    metrics = {**metrics_json(commit.metrics), **evaluation}
    # The state goes with the version it produced: a round that starts from this
    # version (after a restart, a pause, a rollback) continues with exactly this state.
    state = save_state(catalog.blobs, run.optimizer, commit.optimizer_state)
    record = catalog.add_version(
        built.data,
        built.manifest.to_dict(),
        task_id=run.task_id,
        parent_sha256=model.record.sha256,
        round_no=commit.round_id,
        metrics=metrics,
        optimizer_state_sha256=state,
    )
    built.record(
        catalog.delivery, version=record.sha256, parent=model.record.sha256, task_id=run.task_id
    )
    return NewVersion(record, built.manifest, built.data, evaluation, built.weights)


def round_traffic(
    catalog: ModelCatalog, started_from: str, run: Run, metrics: RoundMetrics
) -> dict[str, Any]:
    """The round's bytes by direction and kind, in total and per device (down: per selected
    device, up: per reporting one): the model forms served for ``started_from``, the
    version the round started from (``meta``, ``file``, ``graph``, ``weights``,
    ``delta``), and the protocol messages."""
    down = catalog.transfers.take(started_from)
    down["protocol"] = run.bytes_out
    up = {"protocol": metrics.bytes_received}

    def per(sums: dict[str, int], n: int) -> dict[str, int]:
        return {kind: round(v / n) for kind, v in sums.items()} if n > 0 else {}

    return {
        "down": down,
        "up": up,
        "down_per_device": per(down, metrics.selected),
        "up_per_device": per(up, metrics.reported),
    }


def promote(catalog: ModelCatalog, run: Run, version: NewVersion, commit: Commit) -> None:
    """The task's rounds continue from ``version`` and the state that produced it."""
    catalog.promote(version.record.sha256, task_id=run.task_id, actor="coordinator")
    run.model = LoadedModel(version.record, version.manifest, version.data, version.weights)
    run.opt_state = commit.optimizer_state
    run.evaluation = version.evaluation


__all__ = [
    "Evaluator", "NewVersion", "add_version", "flatten", "load_model", "promote",
    "round_traffic", "unflatten",
]  # fmt: skip
