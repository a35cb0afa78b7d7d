"""What goes into a coordinator round (``RoundConfig``) and what comes out (commands).

The round machine (``machine``) returns a list of these commands from every call;
the driver acts on each in order and never decides anything itself:

==================  =====================================================================
``Send``            publish ``encode_message(message)`` to ``topics.device_inbox(device_id)``
                    (QoS 1, not retained)
``Announce``        publish the announcement to ``topics.task_announcement(task_id)``
                    (QoS 1, retained)
``StageChanged``    record the transition (store, audit log, dashboard)
``Commit``          persist the new model version and optimizer state, with the metrics
``EvaluationDone``  persist the federated evaluation metrics of ``model_version``
``AbandonRound``    record the failure; the model is untouched; start another round
==================  =====================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.privacy.device import DeviceDp
from fedrt.coordinator.rounds.eval_figures import DeviceEval
from fedrt.coordinator.rounds.personal_spans import shared_size
from fedrt.coordinator.selection.cohort_split import DEFAULT_COHORT_SIZE, MIN_COHORT_SIZE
from fedrt.coordinator.selection.eligibility import admits
from fedrt.coordinator.selection.sampling import DEFAULT_POOL_FACTOR, pool_target
from fedrt.coordinator.strategies.aggregators import Aggregator, WeightedMean
from fedrt.coordinator.strategies.optimizers import OptimizerState
from fedrt.protocol import round_dp
from fedrt.protocol.round_messages import (
    MAX_WINDOW,
    CoordinatorMessage,
    ModelRef,
    RoundKind,
    TaskAnnouncement,
    TrainingConfig,
    UpdateSpec,
)
from fedrt.protocol.topics import check_id


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundConfig:
    """Everything one round needs to know; the driver builds it from the task spec."""

    task_id: str
    round_id: int
    model: ModelRef
    kind: RoundKind = RoundKind.TRAIN
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # The devices' local SGD momentum (``Plan.momentum``; models exported with --momentum).
    momentum: float = 0.0
    # Devices whose update the round wants, and how many more to select for dropouts:
    # Bonawitz et al. 2019 report 6-10 % dropout and select 130 % of the goal.
    goal_count: int = 10
    over_selection: float = 1.3
    # Check-in stays open to its deadline, or until pool_target devices wait (pool_factor
    # cohorts, or every one of ``population`` eligible devices); then the cohort is
    # sampled uniformly from that pool (selection.sampling).
    pool_factor: float = DEFAULT_POOL_FACTOR
    population: int | None = None
    # Selection filters (selection.eligibility), applied before sampling: the devices the
    # task's labels admit (None: any) and the fewest examples a device must say it holds.
    eligible: frozenset[str] | None = None
    min_examples: int = 0
    # Fewest contributions the round accepts; below that it is abandoned.
    min_reports: int = 5
    # L2 clip of each device's delta, and quantization bits per coordinate.
    clip_norm: float = 1.0
    bits: int = 16
    # Example count at which a device's FedAvg weight stops growing (caps one device's pull).
    weight_cap: int = 1000
    secagg: bool = True
    # None: chosen from the cohort size by ``protocol.graph.choose_parameters``.
    secagg_neighbors: int | None = None
    secagg_threshold: int | None = None
    # Dropout rate the SecAgg+ graph is sized for (Bonawitz et al.: 6-10 %).
    expected_dropout: float = 0.1
    # Most devices in one SecAgg+ instance: larger rounds run in cohorts whose sums are
    # added (``cohorts``; the default and its reasons are in docs/secagg.md).
    cohort_size: int = DEFAULT_COHORT_SIZE
    # Seconds: for check-ins, for local training (the plan's report window), for each
    # SecAgg+ stage (pure computation and one message each way).
    checkin_timeout: float = 120.0
    training_timeout: float = 600.0
    stage_timeout: float = 60.0
    # Rotate updates before quantizing them (finer steps for the same bits; round_update).
    rotate: bool = True
    # Used only when secagg is off: a robust rule over the individual updates.
    aggregator: Aggregator = field(default_factory=WeightedMean)
    # Differential privacy on the devices (needs SecAgg+): noise, the clip bit.
    device_dp: DeviceDp | None = None
    # The share of its examples each device holds out for evaluation (``Plan.holdout``).
    holdout: float = 0.0
    # q-FedAvg's q (``Plan.qfedavg_q``; strategies.qfedavg); None: another strategy.
    qfedavg_q: float | None = None
    # Personalization (``rounds.personal``): the weight tensors the devices keep (manifest
    # names, for the plan) and their [start, stop) in the flat model, which the update
    # vector leaves out; local SGD steps a device takes before it evaluates.
    personal_layers: tuple[str, ...] = ()
    personal_spans: tuple[tuple[int, int], ...] = ()
    finetune_steps: int = 0
    # SCAFFOLD (``rounds.scaffold``): updates carry the variate update too (2x the model's
    # coordinates), and the plan names the server variate c (None: c = 0).
    scaffold: bool = False
    control_variate: ModelRef | None = None

    def __post_init__(self) -> None:
        check_id(self.task_id, "task id")
        ints = {"goal_count": 1, "min_reports": 1, "weight_cap": 1, "round_id": 0}
        ints["min_examples"] = 0
        ints["cohort_size"] = MIN_COHORT_SIZE
        ints["finetune_steps"] = 0
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"round.{name} must be an integer >= {low}, got {value!r}")
        if not 1 <= self.bits <= 24:
            # Past 24 bits the rounding error is far below float32 training noise anyway.
            raise ConfigError(f"round.bits must lie in [1, 24], got {self.bits}")
        if self.min_reports > self.goal_count:
            raise ConfigError("round.min_reports must not exceed round.goal_count")
        if self.secagg and self.min_reports < 2:
            raise ConfigError("a SecAgg+ round needs min_reports >= 2")
        if not (math.isfinite(self.over_selection) and 1.0 <= self.over_selection <= 10.0):
            raise ConfigError("round.over_selection must lie in [1, 10]")
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ConfigError("round.momentum must lie in [0, 1)")
        if not (math.isfinite(self.holdout) and 0.0 <= self.holdout < 1.0):
            raise ConfigError("round.holdout must lie in [0, 1)")
        if not (math.isfinite(self.pool_factor) and 1.0 <= self.pool_factor <= 100.0):
            raise ConfigError("round.pool_factor must lie in [1, 100]")
        if self.population is not None and not (
            isinstance(self.population, int) and self.population >= 0
        ):
            raise ConfigError("round.population must be None or an integer >= 0")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError("round.clip_norm must be a positive number")
        if not 0.0 <= self.expected_dropout < 1.0:
            raise ConfigError("round.expected_dropout must lie in [0, 1)")
        for name in ("checkin_timeout", "training_timeout", "stage_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_WINDOW):
                raise ConfigError(f"round.{name} must lie in (0, {MAX_WINDOW}] seconds")
        if (self.secagg_neighbors is None) != (self.secagg_threshold is None):
            raise ConfigError("round.secagg_neighbors and secagg_threshold go together")

    def admits(self, device_id: str, n_examples: int) -> bool:
        """Whether a device that checks in passes the task's selection filters."""
        return admits(self.eligible, self.min_examples, device_id, n_examples)

    @property
    def pool_target(self) -> int:
        """Check-ins that close check-in before its deadline (``sampling.pool_target``)."""
        return pool_target(self.select_count, self.pool_factor, self.population)

    @property
    def select_count(self) -> int:
        """How many check-ins close selection: the goal times the over-selection factor."""
        return select_count(self.goal_count, self.over_selection)

    @property
    def cohort_capacity(self) -> int:
        """The most devices one SecAgg+ cohort of this round can hold."""
        return min(self.cohort_size, self.select_count)

    @property
    def cohort_min_reports(self) -> int:
        """Fewest inputs a cohort's sum is kept with under device DP: ``min_reports`` scaled
        to a full cohort's share of the selection (``min_reports`` itself for one cohort).
        The devices' noise is calibrated so that a sum of this many carries it in full."""
        share = self.min_reports * self.cohort_capacity / self.select_count
        return max(2, min(self.cohort_capacity, math.ceil(share - 1e-9)))


def select_count(goal_count: int, over_selection: float) -> int:
    """Check-ins that close selection: ``goal_count`` x ``over_selection``, at least the goal."""
    return max(goal_count, math.ceil(goal_count * over_selection - 1e-9))


def update_spec(
    config: RoundConfig, model_size: int, rng: np.random.Generator, *, secagg: bool
) -> UpdateSpec:
    """How the round's devices encode their update of a model of ``model_size`` weights:
    its length, clip, bits, weight cap, rotation and, in a SecAgg+ round with device DP,
    the noise each device adds."""
    # Personal tensors (FedPer) stay on the devices: the update vector leaves them out.
    params = shared_size(model_size, config.personal_spans)
    if config.scaffold:  # SCAFFOLD: the model delta, then the variate update
        params *= 2
    spec = UpdateSpec(
        params=params,
        clip_norm=config.clip_norm,
        bits=config.bits,
        weight_cap=config.weight_cap,
        # A fresh rotation per round (see round_update): no device can aim its update
        # at coordinates it knows will be clamped.
        rotation_seed=rng.bytes(16) if config.rotate else b"",
    )
    if config.device_dp is not None and secagg:
        # The coordinator sees each cohort's sum, so each must carry the full noise on its
        # own: calibrated for the fewest inputs a cohort's sum is kept with, in a ring that
        # holds the sum of the largest cohort.
        d = config.device_dp
        spec = round_dp.calibrate(
            spec,
            noise_multiplier=d.noise_multiplier,
            clients=config.cohort_capacity,
            threshold=config.cohort_min_reports,
            skellam=d.skellam,
            unclipped_bit=d.unclipped_bit,
            bit_sum_std=d.bit_sum_std,
        )
    return spec


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundMetrics:
    """Counts and figures of one round, for the store and the dashboard."""

    checked_in: int = 0
    selected: int = 0
    # Devices whose first answer (keys, plain update, evaluation) arrived in time.
    reported: int = 0
    # Devices whose update is in the aggregate.
    included: int = 0
    # Devices lost per round state name (missed a deadline or withdrew).
    dropped: tuple[tuple[str, int], ...] = ()
    # Sum of the FedAvg weights min(n, cap) / cap of the included devices.
    total_weight: float = 0.0
    update_norm: float = 0.0
    bytes_received: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0
    # Adaptive clipping: how many included updates were within the clip bound (a noisy
    # count under distributed DP), when the devices were asked to say.
    unclipped: float | None = None
    # SecAgg+: devices found revealing wrong shares in the unmask stage (decoded around).
    bad_holders: tuple[str, ...] = ()
    # Answers refused as invalid (a malformed update, a peer's message replayed, an answer
    # from outside the cohort): thrown away and, like the bad holders, worth a look.
    discarded: int = 0
    # Whether the updates went through SecAgg+ (training rounds of a SecAgg+ task).
    secagg: bool = False
    # SecAgg+ cohorts the selected devices were split into, and how many of them are in
    # the aggregate (0 and 0 without SecAgg+; cohorts_committed 0 when abandoned).
    cohorts: int = 0
    cohorts_committed: int = 0
    # Without SecAgg (the coordinator sees each update): the rule that aggregated, how many
    # updates it discarded (``Aggregator.robust``), and how many updates' norms stood out
    # of the round's before the clip (``norm_outliers``: the attack-detection figure).
    aggregator: str = ""
    robust_discarded: int = 0
    norm_outliers: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    device_id: str
    message: CoordinatorMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    message: TaskAnnouncement


@dataclass(frozen=True, slots=True, kw_only=True)
class StageChanged:
    round_id: int
    previous: str
    state: str
    at: float
    # Devices still taking part, and the deadline of the new state (None when final).
    active: int
    deadline: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Commit:
    round_id: int
    weights: npt.NDArray[np.float32] = field(repr=False)
    optimizer_state: OptimizerState
    # The aggregated (weighted mean or robust) delta the optimizer was applied to.
    delta: npt.NDArray[np.float64] = field(repr=False)
    metrics: RoundMetrics


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationDone:
    round_id: int
    model_version: int
    n_examples: int
    # Each reported metric sum divided by the total example count (e.g. mean loss, accuracy).
    metrics: tuple[tuple[str, float], ...]
    round_metrics: RoundMetrics
    # Each reporting device's count and sums, for the spread and per-label figures
    # (``eval_figures``): evaluation reports are plain, so the coordinator sees them.
    devices: tuple[DeviceEval, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AbandonRound:
    round_id: int
    reason: str
    metrics: RoundMetrics


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortsFormed:
    """A SecAgg+ round split its devices into cohorts, before their plans go out: the
    driver owns and subscribes to each cohort's topic (``topics.cohort_up_filter``) from
    here until the round ends. ``keys``: each cohort's topic key, by cohort index."""

    round_id: int
    keys: tuple[str, ...]


Command: TypeAlias = (
    Send | Announce | StageChanged | Commit | EvaluationDone | AbandonRound | CohortsFormed
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundStatus:
    """A snapshot for the dashboard and the REST API."""

    round_id: int
    state: str
    deadline: float | None
    checked_in: int
    active: int
    answered: int
    dropped: int


__all__ = [
    "AbandonRound",
    "Announce",
    "CohortsFormed",
    "Command",
    "Commit",
    "EvaluationDone",
    "RoundConfig",
    "RoundMetrics",
    "RoundStatus",
    "Send",
    "StageChanged",
    "update_spec",
]
