"""Task specifications: the round configuration an operator submits, validated (pydantic)."""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, JsonValue, model_validator
from pydantic.config import JsonDict

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.privacy.config import AdaptiveClip, DpConfig, DpMode
from fedrt.coordinator.selection.cohort_split import DEFAULT_COHORT_SIZE, MIN_COHORT_SIZE
from fedrt.coordinator.validation import JsonBool, JsonFloat, JsonInt, JsonStr, WireModel

# scaffold: SCAFFOLD control variates (strategies.scaffold); needs fedrt export --scaffold.
# qfedavg: q-FedAvg (strategies.qfedavg), fairness-seeking; qfedavg_q sets q.
SecAggStrategy = Literal[
    "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold", "qfedavg"
]
# Robust aggregators need every individual update, which SecAgg+ exists to hide.
PlainOnlyStrategy = Literal["median", "trimmed_mean", "krum", "bulyan"]
SECAGG_STRATEGIES: tuple[str, ...] = get_args(SecAggStrategy)
PLAIN_ONLY_STRATEGIES: tuple[str, ...] = get_args(PlainOnlyStrategy)
Strategy = Literal[SecAggStrategy, PlainOnlyStrategy]
STRATEGIES = SECAGG_STRATEGIES + PLAIN_ONLY_STRATEGIES

Deadline = Annotated[JsonFloat, Field(ge=1, le=86_400)]
# As enrollment takes them (devices.enrollment).
LabelKey = Annotated[JsonStr, Field(min_length=1, max_length=64)]
LabelValue = Annotated[JsonStr, Field(max_length=256)]
Rate = Annotated[JsonFloat, Field(gt=0, le=10)]
# A weight tensor of the model, as its manifest names it.
TensorName = Annotated[JsonStr, Field(min_length=1, max_length=256)]


def _when(condition: JsonDict, then: JsonDict) -> JsonDict:
    return {"if": condition, "then": then}


def _dp(schema: JsonDict) -> JsonDict:
    return {"properties": {"dp": schema}}


def _mode(modes: list[str]) -> JsonDict:
    return {"properties": {"mode": {"enum": [*modes]}}}


_DP_ON: JsonDict = {
    "required": ["dp"],
    **_dp({"required": ["mode"], **_mode([m.value for m in DpMode if m is not DpMode.NONE])}),
}
_ADAPTIVE: JsonDict = {"required": ["clip"], "properties": {"clip": {"required": ["adaptive"]}}}
# The rules of TaskSpec._check that a schema can state.
_SCHEMA_RULES: list[JsonValue] = [
    # Federated gating decides on evaluation rounds (eval_every defaults to 5).
    _when(
        {"required": ["rollout_gate"], "properties": {"rollout_gate": {"const": "federated"}}},
        {"properties": {"eval_every": {"minimum": 1}}},
    ),
    # Robust aggregators need each update, which SecAgg+ hides (secagg defaults on).
    _when(
        {"required": ["strategy"], "properties": {"strategy": {"enum": [*PLAIN_ONLY_STRATEGIES]}}},
        {"required": ["secagg"], "properties": {"secagg": {"const": False}}},
    ),
    # DP is calibrated for a mean; distributed noise and the adaptive clip's count travel
    # inside SecAgg+.
    _when(_DP_ON, {"properties": {"strategy": {"enum": list(SECAGG_STRATEGIES)}}}),
    _when(
        {"allOf": [_DP_ON, {"anyOf": [_dp(_mode([DpMode.DISTRIBUTED.value])), _dp(_ADAPTIVE)]}]},
        {"properties": {"secagg": {"const": True}}},
    ),
    # Async mode weighs each update by its staleness inside a mean.
    _when(
        {"required": ["mode"], "properties": {"mode": {"const": "async"}}},
        {"properties": {"strategy": {"enum": list(SECAGG_STRATEGIES)}}},
    ),
]


class TaskSpec(WireModel):
    """One task's round configuration; every field validated, defaults from the literature.

    Rules no schema keyword states, each answered 400: min_reports <= goal_count; with DP
    on, dp.delta < 1 / max(goal_count, ceil(goal_count * over_selection));
    dp.target_epsilon <= dp.budget_epsilon; in mode async, max_concurrent >= buffer_size.
    """

    model_config = ConfigDict(json_schema_extra={"allOf": _SCHEMA_RULES})
    where = "spec"

    strategy: Strategy = "fedavg"
    # Server learning rate: 1.0 makes FedAvg the plain mean; adaptive ones want ~1e-2.
    server_lr: Rate = 1.0
    server_momentum: JsonFloat = Field(0.9, ge=0, lt=1)
    # Bonawitz et al. 2019: a few hundred per round suffice; small default for pilots.
    goal_count: JsonInt = Field(10, ge=1, le=100_000)
    # 6-10% of selected devices drop (Bonawitz et al. 2019), so select 130% of the goal.
    over_selection: JsonFloat = Field(1.3, ge=1.0, le=5.0)
    # At most goal_count (_check).
    min_reports: JsonInt = Field(8, ge=1, le=100_000)
    # Selection filters (selection.eligibility), applied before the cohort is sampled: only
    # devices enrolled with all these labels, holding at least min_examples examples (as
    # they say at check-in; a device that does not say is left out when it is set).
    select_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=16)
    min_examples: JsonInt = Field(0, ge=0, le=1_000_000_000)
    checkin_deadline_s: Deadline = 60.0
    # Google's client must finish training within 9 min 45 s; 10 minutes covers reporting.
    training_deadline_s: Deadline = 600.0
    secagg_stage_deadline_s: Deadline = 60.0
    local_epochs: JsonInt = Field(1, ge=1, le=1000)
    batch_size: JsonInt = Field(32, ge=1, le=65_536)
    learning_rate: Rate = 0.01
    fedprox_mu: JsonFloat = Field(0.0, ge=0, le=100)
    # Heavy-ball momentum of the devices' local SGD (0: plain SGD). Like fedprox_mu it needs
    # a model whose train signature takes it (tasks.model_fit): fedrt export --momentum.
    client_momentum: JsonFloat = Field(0.0, ge=0, lt=1)
    # FedAvg weight of a device: min(examples, weight_cap) / weight_cap. 1000 keeps a phone
    # with a huge cache from outweighing a fleet of ordinary ones; cross-silo tasks (a few
    # institutions with large data) raise it so that each silo counts by its size. The
    # example count travels in base-2^bits digits, one more per quantization_bits of cap.
    weight_cap: JsonInt = Field(1000, ge=1, le=1_000_000_000)
    # Flower's SecAgg+ clips at +-8; an L2 bound of 10 keeps typical deltas untouched.
    clip_norm: JsonFloat = Field(10.0, gt=0, le=1e6)
    quantization_bits: JsonInt = Field(16, ge=1, le=16)
    secagg: JsonBool = True
    # Downlink: each version is its parent plus a rotated delta quantized to this many bits
    # (what devices holding the parent fetch; the version commits the dequantized result).
    # 0: versions hold the aggregate's exact float32 weights and devices fetch weights whole;
    # 1 counts as 2 (a level around zero needs a sign). 8 bits: a quarter of the weights.
    download_bits: JsonInt = Field(8, ge=0, le=16)
    # 0: choose k = O(log n) for the target failure probability (Bell et al. 2020).
    secagg_neighbors: JsonInt = Field(0, ge=0)
    # Fraction of the selected devices that must survive to unmask (t = ceil(f * n)).
    secagg_threshold: JsonFloat = Field(0.6, ge=0.5, lt=1)
    # Most devices in one SecAgg+ instance: a round selecting more runs in random cohorts
    # whose sums are added, and each cohort is the privacy unit (docs/secagg.md).
    cohort_size: JsonInt = Field(DEFAULT_COHORT_SIZE, ge=MIN_COHORT_SIZE, le=100_000)
    # Evaluate every N training rounds (0: never); federated evaluation rounds.
    eval_every: JsonInt = Field(5, ge=0, le=10_000)
    # Honest evaluation (sdk.holdout): the share of its examples each device holds out (a
    # seeded hash of the example id, stable across rounds), never trains on, and evaluates
    # on. 0 keeps the old behaviour (evaluation on the training examples); 0.2 is usual.
    holdout: JsonFloat = Field(0.0, ge=0, lt=0.9)
    # q-FedAvg's q (strategy qfedavg; Li et al. 2020): 0 weighs devices uniformly, larger q
    # pulls the model towards the devices with the highest loss. 1.0: the paper's middle
    # ground (it tunes q in {0.001 ... 15} per data set; Flower defaults to 0.2).
    qfedavg_q: JsonFloat = Field(1.0, ge=0, le=100)
    # A candidate whose accuracy drops by more than this is not promoted.
    promote_margin: JsonFloat = Field(0.01, ge=0, le=1)
    # What decides that a new version reaches devices (``rounds.rollout``): "auto" gates on
    # the coordinator's held-out set when it has one that fits the model (serve --eval-data),
    # "held_out" requires one (refused at creation otherwise), "federated" promotes every
    # version and rolls back to the last good one when an evaluation round's
    # federated_accuracy falls by more than promote_margin, "off" promotes every version.
    rollout_gate: Literal["auto", "held_out", "federated", "off"] = "auto"
    trimmed_fraction: JsonFloat = Field(0.1, ge=0, lt=0.5)
    # Krum and Bulyan: how many updates of a round may be hostile (f; Krum needs at least
    # 2f + 3 reports, Bulyan 4f + 3), and how many updates multi-Krum averages (m <= n - f).
    byzantine_f: JsonInt = Field(1, ge=0, le=10_000)
    krum_m: JsonInt = Field(1, ge=1, le=100_000)
    max_rounds: JsonInt = Field(100, ge=1, le=1_000_000)
    # Differential privacy (``privacy.config``): with a mode other than "none", ``dp.clip``
    # replaces ``clip_norm`` as the bound of every update and each device weighs 1.
    dp: DpConfig = DpConfig()
    # Asynchronous rounds (FedBuff, Nguyen et al. 2022; docs/async-internals.md): "async"
    # keeps the task open, lets up to max_concurrent devices train from the latest version
    # (or hold an update not yet committed) and commits once buffer_size of them are ready
    # (their SecAgg+ cohort when secagg is on). An update more than max_staleness versions
    # behind is refused.
    mode: Literal["sync", "async"] = "sync"
    # FedBuff's K: 10 in the paper; a SecAgg+ cohort needs at least 2 (one would be revealed).
    buffer_size: JsonInt = Field(10, ge=2, le=100_000)
    max_staleness: JsonInt = Field(10, ge=0, le=10_000)
    # Papaya trains with a concurrency of a few times K.
    max_concurrent: JsonInt = Field(30, ge=1, le=100_000)

    # Personalization (rounds.personal): weight tensors of the model (manifest names) that
    # never leave the devices (FedPer: each device keeps and trains its own copy, the rest
    # is aggregated), or instead the last N layers; and local SGD steps a device takes on
    # its own examples before it evaluates (evaluation rounds then report that model).
    personal_layers: list[TensorName] = Field(default_factory=list, max_length=1024)
    personal_last_layers: JsonInt = Field(0, ge=0, le=1024)
    finetune_steps: JsonInt = Field(0, ge=0, le=100_000)

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise BadRequestError(message)

        need(
            not (self.secagg and self.strategy in PLAIN_ONLY_STRATEGIES),
            f"strategy {self.strategy} needs individual updates: set secagg = false",
        )
        need(self.min_reports <= self.goal_count, "min_reports must be at most goal_count")
        need(
            self.rollout_gate != "federated" or self.eval_every > 0,
            "rollout_gate federated needs evaluation rounds: set eval_every >= 1",
        )
        need(
            not (self.personal_layers and self.personal_last_layers),
            "give personal_layers or personal_last_layers, not both",
        )
        need(
            self.mode == "sync"
            or not (self.personal_layers or self.personal_last_layers or self.finetune_steps),
            "personal layers and fine-tuning need mode sync",
        )
        # A robust rule must be able to run on the fewest reports a round commits with.
        least = {"krum": 2 * self.byzantine_f + 3, "bulyan": 4 * self.byzantine_f + 3}
        need(
            self.min_reports >= least.get(self.strategy, 0),
            f"{self.strategy} with byzantine_f = {self.byzantine_f} needs min_reports >= "
            f"{least.get(self.strategy)}",
        )
        need(
            self.strategy != "krum" or self.krum_m <= self.min_reports - self.byzantine_f,
            "krum_m must be at most min_reports - byzantine_f",
        )
        need(
            self.secagg or not (self.dp.enabled and isinstance(self.dp.clip, AdaptiveClip)),
            "dp: adaptive clipping needs secagg = true (the clip bit is a secure coordinate)",
        )
        need(
            self.mode == "sync" or self.max_concurrent >= self.buffer_size,
            "max_concurrent must be at least buffer_size (a buffer could never fill)",
        )
        # q-FedAvg sends each device's h as its weight: DP's fixed weight 1 would drop it.
        need(
            self.strategy != "qfedavg" or not self.dp.enabled,
            "strategy qfedavg weighs devices by their loss: it does not go with dp",
        )
        need(
            self.strategy != "qfedavg" or self.mode == "sync",
            "strategy qfedavg needs mode sync (its step assumes one start version per round)",
        )
        # SCAFFOLD's variate update assumes every update started from the round's c.
        need(
            self.mode == "sync" or self.strategy != "scaffold",
            "strategy scaffold needs mode sync (its variates assume one version per round)",
        )
        need(
            self.strategy != "scaffold" or not (self.personal_layers or self.personal_last_layers),
            "strategy scaffold covers the whole model: it does not go with personal layers",
        )
        need(
            self.mode == "sync" or self.strategy in SECAGG_STRATEGIES,
            f"mode async weighs updates by staleness: strategy {self.strategy} is not a mean",
        )
        # The population is only known per round (the driver warns when delta is not below
        # 1 / enrolled devices); at creation a cohort's worth is the least there can be. An
        # async commit is accounted over its buffer alone (N = K = buffer_size).
        cohort = max(self.goal_count, math.ceil(self.goal_count * self.over_selection))
        self.dp.check_task(
            secagg=self.secagg,
            mean_aggregation=self.strategy in SECAGG_STRATEGIES,
            population=self.buffer_size if self.mode == "async" else cohort,
        )
        return self


__all__ = ["PLAIN_ONLY_STRATEGIES", "SECAGG_STRATEGIES", "STRATEGIES", "TaskSpec"]
