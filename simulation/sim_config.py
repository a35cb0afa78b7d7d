"""Every option of a ``fedrt simulate`` run, validated, and the task and DP config it implies."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.privacy.config import (
    AdaptiveClip,
    AdaptiveClipSettings,
    DpConfig,
    DpMode,
    FixedClip,
)
from fedrt.coordinator.selection.cohort_split import DEFAULT_COHORT_SIZE, MIN_COHORT_SIZE
from fedrt.coordinator.tasks import STRATEGIES, TaskSpec
from fedrt.errors import UsageError
from fedrt.simulation import datasets, traces
from fedrt.simulation.chaos import parse_chaos
from fedrt.simulation.timings import PARTICIPANT_TIMINGS

__all__ = [
    "CHECKIN_S_PER_DEVICE", "SCALE_DEVICES_PER_THREAD", "SCALE_MODE_FROM", "STAGE_S_PER_DEVICE",
    "SimConfig",
]  # fmt: skip

# Every simulated device shares this machine's cores, so a SecAgg+ stage takes longer the
# more devices a round has (on a real fleet each device brings its own CPU and the work per
# device depends only on its cohort). Measured on 2 cores: ~4 ms CPU per device and stage in
# SecAgg+ alone at 1,000 a round in cohorts of 250, a few times that with MQTT and the
# device runtime around it. So unless --stage-deadline is given, a stage gets 5 s plus
# 25 ms per device of the round: 5.25 s at 10, 30 s at 1,000. Training (model download,
# LiteRT, SecAgg+ keys) likewise gets 30 s plus 30 ms per device: 60 s at 1,000, where a
# fixed 30 s lost round 2 of a 1,000-device run ("0 answered ADVERTISE_KEYS by the
# training deadline (30 s)": 1,150 devices first fetching the new version, on 2 cores).
# Check-in likewise: 10 s plus 30 ms per device of the round (40 s at 1,000). At 1,000 a
# round from 1,300 devices on 2 instances and the NATS cluster, a fixed 10 s saw 236-698 of
# them check in (issue 17, benchmark 2), and 25 s 547 at a load average of 40-115 (every
# QoS 1 check-in is a replicated JetStream write, on the same 2 cores as the devices): too
# few for min_reports once 10 % drop out. A full pool still closes check-in at once. Capped
# below the simulated devices' own check-in timeout, after which a device that heard
# nothing gives up and checks in again.
CHECKIN_S_BASE = 10.0
CHECKIN_S_PER_DEVICE = 0.03
CHECKIN_S_MAX = PARTICIPANT_TIMINGS["checkin_timeout"] - 5.0
STAGE_S_BASE = 5.0
STAGE_S_PER_DEVICE = 0.025
TRAINING_S_BASE = 30.0
TRAINING_S_PER_DEVICE = 0.03

# From this many devices on, devices share event loops by default (scale mode): a thread
# per device stops working on 2 cores somewhere past 200 devices.
SCALE_MODE_FROM = 50
# From this many devices simulate runs them in processes of their own (at most this many).
AUTO_PROCESSES_FROM = 500
AUTO_PROCESSES_MAX = 4
SCALE_DEVICES_PER_THREAD = 250


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Every option of a simulation (all of it lands in the report's ``config``)."""

    devices: int = 20
    per_round: int = 10
    rounds: int = 30
    model: str = "zoo:cnn"
    dataset: str = "digits"
    partition: str = "dirichlet:0.5"
    strategy: str = "fedavg"
    server_lr: float = 1.0
    bits: int = 8
    # Width of the downlink's version deltas (TaskSpec.download_bits; 0: exact versions).
    download_bits: int = 8
    secagg: bool = True
    dropout: float = 0.0
    availability: str = "always"
    # Simulated seconds per real second for the availability trace.
    speed: float = 3600.0
    seed: int = 0
    local_epochs: int = 5
    learning_rate: float = 0.1
    batch_size: int = 16
    clip_norm: float = 4.0
    broker: str = "auto"
    baseline: bool = False
    baseline_epochs: int = 20
    data_dir: Path = Path("fedrt-sim")
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # Per-stage deadlines, in seconds: short, since every device here is local. None: the
    # check-in, training and SecAgg+ stage deadlines are sized from the round
    # (``checkin_deadline_s``, ``stage_deadline_s``).
    checkin_s: float | None = None
    training_s: float | None = None
    stage_s: float | None = None
    # Give up on the whole run after this long (a run must end even if rounds keep failing).
    time_limit_s: float = 1800.0
    # Differential privacy (issue 9): none, central or distributed; --clip is then the DP
    # clip bound, or the starting one when adaptive_clip (a target quantile) is given.
    dp: str = "none"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    adaptive_clip: float | None = None
    dp_budget: float | None = None
    # 0: a thread per device; N: one DeviceHub + NetworkLoop per N devices; None: automatic.
    devices_per_thread: int | None = None
    # Faults to inject, "EVENT@ROUND" each (simulation/chaos.py: kill-broker-node, ...).
    chaos: tuple[str, ...] = ()
    # Most devices in one SecAgg+ instance (the task's cohort_size); None: the task default.
    cohort_size: int | None = None
    # Coordinator instances running the rounds (simulation/instances.py): 1 runs in this
    # process; N > 1 are processes of their own on the PostgreSQL store at ``store``.
    coordinators: int = 1
    store: str | None = None
    # Device speeds (simulation/speed.py): each device's training takes a fixed multiple of
    # the measured time, multiples log-uniform over [1, speed_spread] (1: all equally fast).
    speed_spread: float = 1.0
    # A device's local training takes at least train_seconds x its multiple (a phone-like
    # base time; 0: only what the real steps take, well under a second for the zoo models).
    train_seconds: float = 0.0
    # Report when held-out accuracy first reaches this (seconds_to_target, rounds_to_target);
    # with stop_at_target the run ends there instead of after --rounds.
    target_accuracy: float | None = None
    stop_at_target: bool = False
    # Rounds (issue 19): "sync" rounds of per_round devices, or "async" (FedBuff): up to
    # max_concurrent devices train from the latest version and every buffer_size updates
    # (a SecAgg+ cohort) commit one; an update over max_staleness versions old is refused.
    # In async mode ``rounds`` counts commits. max_concurrent None: 3 x buffer_size (Papaya
    # trains with a concurrency of a few times K), at most the fleet.
    mode: str = "sync"
    buffer_size: int = 10
    max_staleness: int = 10
    max_concurrent: int | None = None
    # Federated evaluation (issue 18): an evaluation round after every eval_every training
    # rounds (0: none; --rounds still counts the training rounds), each device evaluating
    # on the share ``holdout`` of its examples it never trains on (sdk.holdout).
    eval_every: int = 0
    holdout: float = 0.0
    # q-FedAvg's q (--strategy qfedavg; TaskSpec.qfedavg_q).
    qfedavg_q: float = 1.0
    # FedProx's proximal term mu (TaskSpec.fedprox_mu; 0: plain local SGD). A zoo model is
    # then exported with --fedprox, the input that takes it.
    fedprox_mu: float = 0.0
    # Personalization (issue 18): the last N layers stay on the devices (FedPer), and K local
    # SGD steps before a device evaluates. Either one evaluates every device's personalized
    # model on its own held-out share after the last round (simulation/personal_eval.py).
    personal_layers: int = 0
    finetune_steps: int = 0
    # Devices in this many processes of their own (simulation/fleet_procs.py; 1: in this
    # process). One process stops scaling past a few thousand MQTT clients. None: automatic
    # (``device_process_count``).
    device_processes: int | None = None
    # The QoS the devices read their inbox at (``[broker] device_inbox_qos``): 1 keeps what
    # arrives while a device is away; 0 needs no JetStream consumer per device on a NATS
    # cluster (docs/coordinator.md, "NATS cluster").
    inbox_qos: int = 1
    # Pace steering (coordinator.selection.pace): devices turned away come back at most
    # pace_rate a second. High by default (small fleets); lower it for large ones.
    pace_rate: float = 1000.0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UsageError(message)

        need(self.devices >= 2, "--devices must be at least 2")
        # Async mode has no rounds of per_round devices: its cohorts are buffers.
        need(
            self.mode == "async" or 1 <= self.per_round <= self.devices,
            "--per-round must be in 1..devices",
        )
        need(self.rounds >= 1, "--rounds must be >= 1")
        need(self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}")
        need(1 <= self.bits <= 16, "--bits must be in 1..16")
        need(0 <= self.download_bits <= 16, "--download-bits must be in 0..16")
        need(0.0 <= self.dropout < 1.0, "--dropout must be in [0, 1)")
        need(self.availability in traces.TRACES, f"--availability: one of {traces.TRACES}")
        need(self.speed > 0, "--speed must be > 0")
        need(self.stage_s is None or self.stage_s > 0, "--stage-deadline must be > 0")
        need(
            self.checkin_s is None or 0 < self.checkin_s <= CHECKIN_S_MAX,
            f"the check-in deadline must be in (0, {CHECKIN_S_MAX:g}] s (simulated devices"
            f" give up waiting for their plan after {PARTICIPANT_TIMINGS['checkin_timeout']:g} s)",
        )
        need(not (self.secagg and self.cohort_devices < 2), "SecAgg+ needs --per-round >= 2")
        need(
            self.devices_per_thread is None or self.devices_per_thread >= 0,
            "--devices-per-thread must be >= 0",
        )
        need(
            self.cohort_size is None or self.cohort_size >= MIN_COHORT_SIZE,
            f"--cohort-size must be >= {MIN_COHORT_SIZE}",
        )
        need(1 <= self.coordinators <= 16, "--coordinators must be in 1..16")
        need(
            self.store is None or self.store.startswith(("postgresql://", "postgres://")),
            "--store must be a postgresql:// URL",
        )
        need(
            self.coordinators == 1 or self.store is not None,
            "--coordinators > 1 needs --store postgresql://... (the instances share it)",
        )
        need(
            self.coordinators == 1 or self.broker != "embedded",
            "--coordinators > 1 needs a broker of its own (mosquitto, nats-cluster or a URL)",
        )
        need(
            math.isfinite(self.speed_spread) and self.speed_spread >= 1.0,
            "--speed-spread must be >= 1",
        )
        need(
            math.isfinite(self.train_seconds) and self.train_seconds >= 0.0,
            "--train-seconds must be >= 0",
        )
        need(
            self.target_accuracy is None or 0.0 < self.target_accuracy <= 1.0,
            "--target-accuracy must be in (0, 1]",
        )
        need(
            not self.stop_at_target or self.target_accuracy is not None,
            "--stop-at-target needs --target-accuracy",
        )
        need(self.mode in ("sync", "async"), "--mode must be sync or async")
        need(
            self.mode == "sync" or 2 <= self.buffer_size <= self.devices,
            "--buffer-size must be in 2..devices",
        )
        need(
            self.max_concurrent is None or self.max_concurrent >= 1,
            "--max-concurrent must be >= 1",
        )
        need(self.eval_every >= 0, "--eval-every must be >= 0")
        need(self.eval_every == 0 or self.mode == "sync", "--eval-every needs --mode sync")
        need(0.0 <= self.holdout < 0.9, "--holdout must be in [0, 0.9)")
        need(self.personal_layers >= 0, "--personal-layers must be >= 0")
        need(self.finetune_steps >= 0, "--finetune-steps must be >= 0")
        need(
            self.holdout > 0 or not (self.personal_layers or self.finetune_steps),
            "--personal-layers and --finetune-steps are evaluated on each device's held-out "
            "share: give --holdout (e.g. 0.2)",
        )
        need(self.inbox_qos in (0, 1), "--inbox-qos must be 0 or 1")
        need(
            self.device_processes is None or 1 <= self.device_processes <= 64,
            "--device-processes must be in 1..64",
        )
        need(
            self.device_process_count == 1 or not (self.personal_layers or self.finetune_steps),
            "--device-processes > 1 cannot evaluate personalization (the devices are elsewhere)",
        )
        need(math.isfinite(self.pace_rate) and self.pace_rate > 0, "--pace-rate must be > 0")
        need(math.isfinite(self.qfedavg_q) and 0.0 <= self.qfedavg_q <= 100, "--q: 0..100")
        need(0.0 <= self.fedprox_mu <= 100, "--fedprox-mu must be in [0, 100]")
        datasets.Partition.parse(self.partition)
        for spec in self.chaos:
            parse_chaos(spec)
        try:
            self.dp_config().check_task(
                secagg=self.secagg, mean_aggregation=True, population=self.devices
            )
        except BadRequestError as exc:
            raise UsageError(f"--dp: {exc}") from None
        if self.mode == "async":
            self._check_async()

    def _check_async(self) -> None:
        """The task's own checks of async rounds, as a usage error before anything starts."""
        try:
            self.task_spec()
        except (BadRequestError, ValueError) as exc:
            raise UsageError(f"--mode async: {exc}") from None

    def dp_config(self) -> DpConfig:
        modes = [m.value for m in DpMode]
        if self.dp not in modes:
            raise UsageError(f"--dp must be one of {', '.join(modes)}")
        clip: FixedClip | AdaptiveClip = FixedClip(fixed=self.clip_norm)
        if self.adaptive_clip is not None:
            adaptive = AdaptiveClipSettings(quantile=self.adaptive_clip, initial=self.clip_norm)
            clip = AdaptiveClip(adaptive=adaptive)
        return DpConfig(
            mode=DpMode(self.dp),
            noise_multiplier=self.noise_multiplier,
            target_epsilon=self.target_epsilon,
            delta=self.delta,
            budget_epsilon=self.dp_budget,
            clip=clip,
        )

    @property
    def device_process_count(self) -> int:
        """``device_processes``, or chosen: from AUTO_PROCESSES_FROM devices (and no
        personalization to evaluate on the devices' own models), a process per core, at most
        AUTO_PROCESSES_MAX. All devices in the coordinator's process share one interpreter
        lock with it: at 1,300 devices it used ~1.2 of 2 cores and a SecAgg+ round of 1,000
        took 52-62 s; in two processes of their own, 29-31 s."""
        if self.device_processes is not None:
            return self.device_processes
        if self.devices < AUTO_PROCESSES_FROM or self.personal_layers or self.finetune_steps:
            return 1
        return max(1, min(os.cpu_count() or 1, AUTO_PROCESSES_MAX))

    @property
    def shared_threads(self) -> int:
        """Devices per shared event loop (0: a thread per device)."""
        if self.devices_per_thread is not None:
            return self.devices_per_thread
        return SCALE_DEVICES_PER_THREAD if self.devices >= SCALE_MODE_FROM else 0

    @property
    def total_rounds(self) -> int:
        """Rounds the task runs: ``rounds`` training rounds and the evaluation rounds."""
        return self.rounds + (self.rounds // self.eval_every if self.eval_every else 0)

    @property
    def cohort_devices(self) -> int:
        """Devices reporting together: a round's ``per_round``, an async buffer's size."""
        return self.buffer_size if self.mode == "async" else self.per_round

    @property
    def concurrency(self) -> int:
        """Async mode's devices training at once: ``max_concurrent`` or 3 x buffer_size."""
        if self.max_concurrent is not None:
            return self.max_concurrent
        return max(self.buffer_size, min(self.devices, 3 * self.buffer_size))

    @property
    def checkin_spread_s(self) -> float:
        """The devices' ``checkin_spread``: the whole fleet checking in once at the pace
        target takes this long (10,000 devices at 25/s: 400 s; 100 at 1,000/s: 0.1 s)."""
        return self.devices / self.pace_rate

    @property
    def checkin_deadline_s(self) -> float:
        """The check-in deadline: ``checkin_s``, or sized from the round (and capped)."""
        if self.checkin_s is not None:
            return self.checkin_s
        return min(CHECKIN_S_MAX, CHECKIN_S_BASE + CHECKIN_S_PER_DEVICE * self.cohort_devices)

    @property
    def stage_deadline_s(self) -> float:
        """The SecAgg+ stage deadline: ``stage_s``, or sized from the cohort."""
        if self.stage_s is not None:
            return self.stage_s
        return STAGE_S_BASE + STAGE_S_PER_DEVICE * self.cohort_devices

    @property
    def training_deadline_s(self) -> float:
        """The training deadline: ``training_s``, or sized from the cohort."""
        if self.training_s is not None:
            return self.training_s
        # The slowest device's assumed training time on top: the deadline is there for
        # devices that vanish, not to cut the slow ones (nor lapse their async tickets).
        slowest = self.train_seconds * self.speed_spread
        return TRAINING_S_BASE + TRAINING_S_PER_DEVICE * self.cohort_devices + slowest

    def task_spec(self) -> TaskSpec:
        # Over-select for the dropouts we inject (Bonawitz et al.: select 130 % of the goal).
        over = min(3.0, max(1.0, 1.0 + 1.5 * self.dropout))
        over = min(over, self.devices / self.cohort_devices)
        return TaskSpec(
            strategy=self.strategy,
            server_lr=self.server_lr,
            goal_count=self.cohort_devices,
            over_selection=over,
            min_reports=max(2 if self.secagg else 1, math.ceil(0.5 * self.cohort_devices)),
            checkin_deadline_s=self.checkin_deadline_s,
            training_deadline_s=self.training_deadline_s,
            secagg_stage_deadline_s=self.stage_deadline_s,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            clip_norm=self.clip_norm,
            quantization_bits=self.bits,
            download_bits=self.download_bits,
            secagg=self.secagg,
            eval_every=self.eval_every,
            holdout=self.holdout,
            qfedavg_q=self.qfedavg_q,
            fedprox_mu=self.fedprox_mu,
            personal_last_layers=self.personal_layers,
            finetune_steps=self.finetune_steps,
            promote_margin=1.0,
            max_rounds=self.total_rounds,
            dp=self.dp_config(),
            cohort_size=self.cohort_size or DEFAULT_COHORT_SIZE,
            **self._round_mode(),
        )

    def _round_mode(self) -> dict[str, Any]:
        """The TaskSpec fields of async rounds; none in sync mode (the TaskSpec defaults)."""
        if self.mode == "sync":
            return {}
        return {
            "mode": self.mode,
            "buffer_size": self.buffer_size,
            "max_staleness": self.max_staleness,
            "max_concurrent": self.concurrency,
        }
