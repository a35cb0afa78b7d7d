"""``fedrt simulate``: a real federated training run on one machine, with a report.

Broker, coordinator and N devices on loopback: every device is a real MQTT client with its
own credentials, session, example store and LiteRT interpreter, speaking the real round
protocol with SecAgg+. The coordinator evaluates each committed model on a held-out
quarter of the data; the report has one entry per round.
"""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.privacy.accounting import ACCOUNTING_ASSUMPTION
from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.rounds.journal import RoundSummary, summary_of
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.store import Store
from fedrt.errors import UsageError
from fedrt.model_export.manifest import MANIFEST_NAME, Manifest
from fedrt.simulation import datasets, traces
from fedrt.simulation.async_rows import async_fields
from fedrt.simulation.chaos import ChaosRunner, parse_chaos
from fedrt.simulation.eval_rows import eval_fields
from fedrt.simulation.evaluate import HeldOutEvaluator, accuracy_and_loss, centralized_baseline
from fedrt.simulation.fleet import Fleet, TracedState
from fedrt.simulation.fleet_procs import ProcessFleet
from fedrt.simulation.personal_eval import evaluate_run
from fedrt.simulation.report import REPORT_VERSION, Report, RoundRow, progress_line, write_report
from fedrt.simulation.sim_config import SCALE_DEVICES_PER_THREAD, SCALE_MODE_FROM, SimConfig
from fedrt.simulation.speed import slowdowns
from fedrt.simulation.stack import LocalStack
from fedrt.simulation.traffic import downlink_summary, traffic_line  # downlink-traffic

# The config and report names are re-exported: their import path predates their modules.
__all__ = [
    "REPORT_VERSION",
    "SCALE_DEVICES_PER_THREAD",
    "SCALE_MODE_FROM",
    "Report",
    "RoundRow",
    "SimConfig",
    "Simulation",
    "export_model",
    "write_report",
]

log = logging.getLogger(__name__)

# Devices connecting a second at most with --device-processes: Mosquitto accepted ~30 a
# second on the loaded 2-core machine while reloading, and its listen queue holds 100.
_CONNECT_RATE = 200.0


def export_model(config: SimConfig, data: datasets.Dataset, out_root: Path) -> Path:
    """The model directory: given as one, or a zoo model exported once (cached by content)."""
    if not config.model.startswith("zoo:"):
        path = Path(config.model)
        if not (path / MANIFEST_NAME).is_file():
            raise UsageError(f"--model {config.model}: no {MANIFEST_NAME} there")
        return path
    shape = ",".join(str(d) for d in data.input_shape)
    # SCAFFOLD trains through the model's correction input (fedrt export --scaffold).
    flags = ["--scaffold"] if config.strategy == "scaffold" else []
    flags += ["--fedprox"] if config.fedprox_mu > 0 else []  # the input mu goes in
    key = f"{config.model}|{shape}|{data.classes}|{config.batch_size}"
    key += "".join(f"|{flag}" for flag in flags)
    out = out_root / "models" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (out / MANIFEST_NAME).is_file():
        return out
    argv = [
        sys.executable,
        "-m",
        "fedrt",
        "--log-level",
        "WARNING",
        "export",
        config.model,
        "--input-shape",
        shape,
        "--classes",
        str(data.classes),
        "--batch",
        str(config.batch_size),
        "--out",
        str(out),
        *flags,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise UsageError(f"exporting {config.model} failed:\n{done.stderr[-2000:]}")
    return out


class Simulation:
    """One run: start everything, let rounds happen, collect the report, stop everything."""

    def __init__(self, config: SimConfig, *, out: TextIO | None = None) -> None:
        self.config = config
        self.out = out if out is not None else sys.stdout
        self.report = Report(
            config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
        )
        if config.dp != "none":
            self.report.config["dp_accounting"] = ACCOUNTING_ASSUMPTION
        self.report.config["devices_per_thread"] = config.shared_threads
        self.report.config["device_processes"] = config.device_process_count
        self.report.config["checkin_s"] = config.checkin_deadline_s
        self.report.config["stage_s"] = config.stage_deadline_s
        self.report.config["training_s"] = config.training_deadline_s
        # Device i's training-time multiple (--speed-spread), drawn from --seed.
        self.slowdowns = slowdowns(config.devices, config.speed_spread, config.seed)
        self.report.config["slowdowns"] = [round(m, 3) for m in self.slowdowns]
        self._finished = threading.Event()
        self._last_end = 0.0
        self._task_started = 0.0
        self._last_bytes = (0, 0)
        self.fleet: Fleet | ProcessFleet | None = None
        self.stack: LocalStack | None = None
        self.task_id = ""
        self._reported: set[int] = set()
        self._evaluator: Callable[[bytes, Manifest], Mapping[str, float]] = lambda m, f: {}

    # ------------------------------------------------------------------ progress
    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _traffic(self, s: RoundSummary) -> dict[str, Any] | None:  # downlink-traffic
        # Called by the driver on the service's loop: the store is read directly.
        svc = self.stack.service if self.stack is not None else None
        traffic = svc.store.get_round(s.task_id, s.round_no).detail.get("traffic") if svc else None
        return traffic if isinstance(traffic, dict) else None

    def _instance(self, s: RoundSummary) -> str | None:
        svc = self.stack.service if self.stack is not None else None
        owner = svc.store.get_round(s.task_id, s.round_no).detail.get("instance") if svc else None
        return owner if isinstance(owner, str) else None

    def _detail(self, s: RoundSummary) -> dict[str, Any] | None:
        svc = self.stack.service if self.stack is not None else None
        return dict(svc.store.get_round(s.task_id, s.round_no).detail) if svc else None

    def _poll_rounds(self, stack: LocalStack) -> None:
        """Instances of their own (``--coordinators``) tell this process nothing: report the
        rounds they ended from the store, each committed version evaluated here."""
        svc = stack.service
        assert svc is not None
        for record in svc.store.list_rounds(self.task_id):
            if record.status is RoundStatus.RUNNING or record.round_no in self._reported:
                continue
            self._reported.add(record.round_no)
            summary = summary_of(record)
            if record.result_sha256 is not None:
                manifest = Manifest.from_dict(svc.store.get_model(record.result_sha256).manifest)
                model = svc.blobs.read(record.result_sha256)  # from the store, cached here
                summary = replace(summary, evaluation=self._evaluator(model, manifest))
            self._on_round(summary)

    def _on_round(self, s: RoundSummary) -> None:
        now = time.time()
        up_total, down_total = self.fleet.bytes_moved() if self.fleet else (0, 0)
        up, down = up_total - self._last_bytes[0], down_total - self._last_bytes[1]
        self._last_bytes = (up_total, down_total)
        row = RoundRow(
            round=s.round_no,
            status=s.status,
            accuracy=s.evaluation.get("accuracy"),
            loss=s.evaluation.get("loss"),
            selected=s.metrics.selected,
            reported=s.metrics.included,
            dropped=sum(n for _, n in s.metrics.dropped),
            bytes_up=max(up, s.metrics.bytes_received),
            bytes_down=max(down, s.bytes_out),
            seconds=round(now - self._last_end, 3),
            model_sha256=s.result_sha256,
            reason=s.reason,
            epsilon=s.epsilon,
            noise_stddev=s.noise_stddev,
            cohorts=s.metrics.cohorts,
            cohorts_committed=s.metrics.cohorts_committed,
            cohort_owners=(self._detail(s) or {}).get("cohort_runs"),
            instance=self._instance(s),
            traffic=self._traffic(s),  # downlink-traffic
            elapsed_s=round(now - self._task_started, 3),
            **async_fields(self._detail(s)),
            **eval_fields(s.evaluation, self._detail(s)),
        )
        self._last_end = now
        self.report.rounds.append(row)
        if s.result_sha256:
            self.report.versions.append(
                {
                    "round": s.round_no,
                    "sha256": s.result_sha256,
                    "parent": s.model_sha256,
                    "promoted": s.promoted,
                    **dict(s.evaluation),
                }
            )
        self._line(progress_line(row, self.config.total_rounds))
        committed = sum(r.status == "committed" for r in self.report.rounds)
        total = self.config.total_rounds  # training and evaluation rounds
        if s.round_no >= total or committed >= total:
            self._finished.set()
        async_mode = self.config.mode == "async"
        if self.report.reached_target(row, self.config.target_accuracy, commits=async_mode):
            self._line(f"target accuracy reached in {row.elapsed_s:.0f} s (round {row.round})")
            if self.config.stop_at_target:
                self._finished.set()

    # ------------------------------------------------------------------ the run
    def run(self, *, keep_serving: Callable[[str], None] | None = None) -> Report:
        cfg = self.config
        started = time.time()
        rng = np.random.default_rng(cfg.seed)
        data = datasets.load(cfg.dataset, flat=cfg.model == "zoo:mlp")
        train, test = datasets.holdout_split(data, rng)
        parts = datasets.partition(
            train, cfg.devices, datasets.Partition.parse(cfg.partition), rng, min_size=1
        )
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        model_dir = export_model(cfg, data, cfg.data_dir)
        manifest = Manifest.load(model_dir)
        model_bytes = manifest.verify_model_file(model_dir).read_bytes()
        from fedrt.model_export.litert_model import LiteRTModel

        initial = accuracy_and_loss(LiteRTModel(model_bytes, manifest), manifest, test)
        self.report.initial_accuracy = initial["accuracy"]
        self._line(
            f"model {cfg.model}: {manifest.num_params} parameters; "
            f"held-out accuracy before training {initial['accuracy']:.3f}"
        )
        if cfg.baseline:
            base = centralized_baseline(
                model_bytes,
                manifest,
                train,
                test,
                epochs=cfg.baseline_epochs,
                lr=cfg.learning_rate,
                seed=cfg.seed,
            )
            self.report.baseline_accuracy = base["accuracy"]
            self._line(
                f"centralized baseline ({cfg.baseline_epochs} epochs): "
                f"accuracy {base['accuracy']:.3f}"
            )

        run_dir = cfg.data_dir / f"run-{int(started)}-{cfg.seed}"
        evaluator = HeldOutEvaluator(test)
        pace = PaceConfig(target_rate=cfg.pace_rate, min_delay=0.5, spread=1.0)

        def make_driver(ctx: DriverContext) -> RoundDriver:
            return FederatedDriver(
                ctx,
                evaluator=evaluator,
                listener=self._on_round,
                pace=pace,
                rng=np.random.default_rng(cfg.seed + 1),
                retry_delay_s=0.5,
            )

        self.stack = stack = LocalStack(
            run_dir,
            broker=cfg.broker,
            driver_factory=make_driver,
            http_host=cfg.http_host,
            http_port=cfg.http_port,
            coordinators=cfg.coordinators,
            store_url=cfg.store,
            pace=pace,
            inbox_qos=cfg.inbox_qos,
        )
        self._evaluator = evaluator
        chaos: ChaosRunner | None = None
        try:
            stack.start()
            self.report.broker = stack.broker_kind
            chaos = ChaosRunner(
                stack,
                [parse_chaos(c) for c in cfg.chaos],
                lambda: len(self.report.rounds),
                self._devices_connected,
                rounds_committed=lambda: sum(r.status == "committed" for r in self.report.rounds),
            )
            chaos.check(stack.broker_kind)
            self._line(f"broker: {stack.broker_kind}; coordinator: {stack.http_url}/")
            self.task_id = self._create_task(stack, model_dir)
            self.fleet = fleet = self._fleet(stack, train, parts, rng)
            self._line(
                f"starting {cfg.devices} devices ({cfg.partition}, "
                f"{cfg.availability} availability, dropout {cfg.dropout})"
            )
            t_fleet = time.time()
            fleet.start_all()
            # A device refused by the broker backs off; round 1 should not start without it.
            up = fleet.wait_connected(30.0 + cfg.devices / 20)
            self._line(f"{up}/{cfg.devices} devices connected in {time.time() - t_fleet:.0f} s")
            self._last_end = self._task_started = time.time()
            stack.call(lambda: self._start_task(stack))
            chaos.start()
            if not self._wait(stack, time.time() + cfg.time_limit_s):
                self._line(f"time limit of {cfg.time_limit_s:.0f} s reached")
            self.report.completed = self._finished.is_set() or bool(self.report.stopped)
            dirs = [d.directory for d in self.fleet.devices]  # personalization, per device
            self.report.personalization = evaluate_run(
                cfg, stack, dirs, self.task_id, self.report.versions, self._line
            )
            if keep_serving is not None:
                keep_serving(stack.http_url)
        finally:
            if chaos is not None:
                chaos.stop()
                self.report.chaos = chaos.results
            if self.fleet is not None:
                self.fleet.stop_all()
            stack.stop()
        if isinstance(self.fleet, ProcessFleet):
            self.report.crashes = self.fleet.crashes
            self.report.offline_spells = self.fleet.offline_spells
        elif self.fleet is not None:
            self.report.crashes = sum(d.crashes for d in self.fleet.devices)
            self.report.offline_spells = sum(d.offline_spells for d in self.fleet.devices)
        committed = [r for r in self.report.rounds if r.accuracy is not None]
        self.report.final_accuracy = committed[-1].accuracy if committed else None
        self.report.downlink = downlink_summary(self.report.rounds)  # downlink-traffic
        self._line(traffic_line(self.report.downlink))  # downlink-traffic
        self.report.wall_seconds = round(time.time() - started, 2)
        return self.report

    def _devices_connected(self) -> tuple[int, int] | None:
        """(devices connected, devices) for --chaos reports; None before the fleet starts."""
        fleet = self.fleet
        if fleet is None:
            return None
        if isinstance(fleet, ProcessFleet):
            return fleet.connected(), fleet.size
        # Devices away on purpose (--dropout, restarting) are not waited for.
        present = [s.device for s in fleet.devices if s.device is not None]
        return sum(d.status().connected for d in present), len(present)

    def _wait(self, stack: LocalStack, until: float) -> bool:
        """Until the last round, the coordinator ending the task (its privacy budget spent:
        the reason is in the audit log) or ``until``; whether the run ended in time."""
        svc = stack.service
        assert svc is not None
        while not self._finished.wait(min(1.0, max(0.0, until - time.time()))):
            if stack.instances is not None:
                self._poll_rounds(stack)
            if time.time() >= until:
                return False
            if stack.call(lambda: svc.store.get_task(self.task_id).status.value) == "completed":
                why = stack.call(lambda: _end_reason(svc.store, self.task_id))
                self.report.stopped = why
                self._line(f"task ended by the coordinator: {self.report.stopped}")
                return True
        return True

    def _create_task(self, stack: LocalStack, model_dir: Path) -> str:
        svc = stack.service
        assert svc is not None
        record = stack.call(
            lambda: svc.catalog.add_export_dir(model_dir, actor="simulate", max_bytes=1 << 30)
        )
        task = stack.call(
            lambda: svc.tasks.create(
                name=f"simulate {self.config.model}",
                model_sha256=record.sha256,
                spec=self.config.task_spec(),
                actor="simulate",
            )
        )
        return task.task_id

    def _start_task(self, stack: LocalStack) -> None:
        assert stack.service is not None
        stack.service.tasks.act(self.task_id, "start", actor="simulate")

    def _fleet(
        self,
        stack: LocalStack,
        train: datasets.Dataset,
        parts: list[Any],
        rng: np.random.Generator,
    ) -> Fleet | ProcessFleet:
        cfg = self.config
        svc = stack.service
        assert svc is not None

        def token() -> str:
            return stack.call(lambda: svc.enrollment.create_token(actor="simulate"))

        # Between events a device looks at its eligibility every poll_s: with many devices in
        # one process, look less often so the looking does not starve training.
        poll_s = max(0.2, cfg.devices / cfg.device_process_count / 100)
        if cfg.device_process_count > 1:
            return self._process_fleet(stack, train, parts, poll_s)
        fleet = Fleet(
            cfg.data_dir / "devices" / f"seed-{cfg.seed}-{int(time.time())}",
            coordinator_url=stack.http_url,
            task_id=self.task_id,
            mqtt_protocol=stack.mqtt_protocol,
            token_factory=token,
            dropout=cfg.dropout,
            rng=rng,
            poll_s=poll_s,
            devices_per_thread=cfg.shared_threads,
            slowdowns=self.slowdowns,
            train_seconds=cfg.train_seconds,
            checkin_spread=cfg.checkin_spread_s,
        )
        days = max(1, math.ceil(cfg.time_limit_s * cfg.speed / traces.DAY) + 1)
        device_traces = traces.generate(cfg.availability, cfg.devices, days=days, rng=rng)
        t0 = time.time()
        # Start the simulated day at 23:00, when phones charge on Wi-Fi.
        sim_start = 23 * traces.HOUR
        for i, (idx, trace) in enumerate(zip(parts, device_traces, strict=True)):
            fleet.add(
                i,
                train.subset(idx),
                TracedState(trace, t0=t0, speed=cfg.speed, sim_start=sim_start),
            )
        return fleet

    def _process_fleet(
        self, stack: LocalStack, train: datasets.Dataset, parts: list[Any], poll_s: float
    ) -> ProcessFleet:
        cfg = self.config
        svc = stack.service
        assert svc is not None

        def tokens(n: int) -> list[str]:
            return stack.call(lambda: svc.enrollment.create_tokens(n, actor="simulate"))

        settings = {
            "coordinator_url": stack.http_url,
            "task_id": self.task_id,
            "mqtt_protocol": stack.mqtt_protocol,
            "dropout": cfg.dropout,
            "seed": cfg.seed,
            "poll_s": poll_s,
            "devices_per_thread": cfg.shared_threads,
            "train_seconds": cfg.train_seconds,
            "availability": cfg.availability,
            "speed": cfg.speed,
            "time_limit_s": cfg.time_limit_s,
            "t0": time.time(),
            "sim_start": 23 * traces.HOUR,  # as in-process: 23:00, phones charging on Wi-Fi
            "enroll_workers": 16,
            # Connections a second, all processes together (fleet.Fleet.start_all).
            "connect_rate": _CONNECT_RATE / cfg.device_process_count,
            "checkin_spread": cfg.checkin_spread_s,
        }
        return ProcessFleet(
            cfg.data_dir / "devices" / f"seed-{cfg.seed}-{int(time.time())}",
            processes=cfg.device_process_count,
            tokens=tokens,
            train=train,
            parts=parts,
            settings=settings,
            slowdowns=self.slowdowns,
        )


def _end_reason(store: Store, task_id: str) -> str:
    """Why the coordinator ended a task: the reason of its last audit entry about it."""
    reason, seq = "completed", 0
    while entries := store.list_audit(after_seq=seq, limit=1000):
        for e in entries:
            if e.subject == task_id and e.actor == "coordinator":
                reason = str(e.detail.get("reason", reason))
        seq = entries[-1].seq or seq + len(entries)
    return reason
