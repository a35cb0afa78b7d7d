"""A round's configuration from its task's spec: optimizer, aggregator, SecAgg+, round kind.

Pure: a ``TaskSpec`` (and the model version a round starts from) in, a ``RoundConfig`` out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from fedrt.coordinator.records import DeviceRecord, ModelRecord
from fedrt.coordinator.rounds.commands import RoundConfig
from fedrt.coordinator.selection.eligibility import labelled
from fedrt.coordinator.strategies import qfedavg
from fedrt.coordinator.strategies.aggregators import (
    AGGREGATORS,
    Aggregator,
    Bulyan,
    Krum,
    TrimmedMean,
)
from fedrt.coordinator.strategies.optimizers import OPTIMIZERS, FedAvgM, ServerOptimizer
from fedrt.coordinator.strategies.scaffold import Scaffold
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.scaffold import variate_scale


def optimizer_for(spec: TaskSpec) -> ServerOptimizer:
    if spec.strategy == "scaffold":
        training = rm.TrainingConfig(learning_rate=spec.learning_rate, epochs=spec.local_epochs)
        return Scaffold(server_lr=spec.server_lr, variate_scale=variate_scale(training))
    cls = OPTIMIZERS.get(spec.strategy, OPTIMIZERS["fedavg"])
    if cls is FedAvgM:
        return FedAvgM(server_lr=spec.server_lr, momentum=spec.server_momentum)
    return cls(server_lr=spec.server_lr)  # type: ignore[call-arg]


def aggregator_for(spec: TaskSpec) -> Aggregator:
    if spec.strategy == "trimmed_mean":
        return TrimmedMean(fraction=spec.trimmed_fraction)
    if spec.strategy == "krum":
        return Krum(byzantine=spec.byzantine_f, select=spec.krum_m)
    if spec.strategy == "bulyan":
        return Bulyan(byzantine=spec.byzantine_f)
    return AGGREGATORS.get(spec.strategy, AGGREGATORS["mean"])()


def secagg_parameters(spec: TaskSpec) -> tuple[int | None, int | None]:
    """(neighbours, threshold) for the round config; (None, None) lets the protocol choose."""
    if spec.secagg_neighbors == 0:
        return None, None
    k = spec.secagg_neighbors
    # Each device's neighbourhood is its k neighbours plus itself; a strict majority of it
    # must survive (2t > k + 1), and at least the configured fraction.
    t = max(math.floor((k + 1) / 2) + 1, math.ceil(spec.secagg_threshold * (k + 1)))
    return k, min(t, k + 1)


def round_kind(spec: TaskSpec, round_no: int) -> rm.RoundKind:
    """Every ``eval_every + 1``-th round evaluates (with ``eval_every`` set); the rest train."""
    return (
        rm.RoundKind.EVALUATE
        if spec.eval_every and round_no % (spec.eval_every + 1) == 0
        else rm.RoundKind.TRAIN
    )


def round_config(
    *,
    task_id: str,
    round_no: int,
    spec: TaskSpec,
    kind: rm.RoundKind,
    model: ModelRecord,
    model_url_prefix: str,
    batch_size: int,
) -> RoundConfig:
    """Round ``round_no`` of the task, starting from version ``model`` (its file served at
    ``model_url_prefix + sha256``); a DP task's round overlays its plan (``rounds.dp``)."""
    neighbors, threshold = secagg_parameters(spec)
    return RoundConfig(
        task_id=task_id,
        round_id=round_no,
        model=rm.ModelRef(
            version=model.round_no or 0,
            sha256=model.sha256,
            url=model_url_prefix + model.sha256,
            signature=model.signature,
        ),
        kind=kind,
        training=rm.TrainingConfig(
            epochs=spec.local_epochs,
            batch_size=batch_size,
            learning_rate=spec.learning_rate,
            fedprox_mu=spec.fedprox_mu,
        ),
        goal_count=spec.goal_count,
        over_selection=spec.over_selection,
        min_reports=spec.min_reports,
        clip_norm=spec.clip_norm,
        bits=spec.quantization_bits,
        weight_cap=qfedavg.weight_cap(spec.strategy, spec.weight_cap),
        qfedavg_q=qfedavg.qfedavg_q(spec.strategy, spec.qfedavg_q),
        holdout=float(spec.holdout),
        momentum=spec.client_momentum,
        secagg=spec.secagg,
        secagg_neighbors=neighbors,
        secagg_threshold=threshold,
        cohort_size=spec.cohort_size,
        checkin_timeout=spec.checkin_deadline_s,
        training_timeout=spec.training_deadline_s,
        stage_timeout=spec.secagg_stage_deadline_s,
        aggregator=aggregator_for(spec),
    )


def with_pool(config: RoundConfig, spec: TaskSpec, devices: Sequence[DeviceRecord]) -> RoundConfig:
    """``config`` with the devices its cohort may be sampled from: those of the enrolled,
    unrevoked ``devices`` the task's labels admit (check-in closes early once all of them
    are in), and the task's example-count filter."""
    required = spec.select_labels
    pool = labelled(((d.device_id, d.labels) for d in devices), required)
    return replace(
        config,
        population=len(pool),
        eligible=frozenset(pool) if required else None,
        min_examples=spec.min_examples,
    )


__all__ = [
    "aggregator_for", "optimizer_for", "round_config", "round_kind", "secagg_parameters",
    "with_pool",
]  # fmt: skip
