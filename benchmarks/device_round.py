"""One real round of device PROCESSES against a real coordinator and Mosquitto on loopback.

A ``LocalStack`` (coordinator + managed Mosquitto) serves one task on an exported model; each
device is its own process running ``python -m device_tests.round_device`` from this
checkout, started by a command prefix: the host's Python (``HOST``) or the emulated
Raspberry Pi (``EMULATED_PI``, qemu-aarch64). The task starts once every device is enrolled
and listening, so all of them are in its first round. Each process reports its own peak RSS
and bytes up/down (and, with ``record``, the vector it handed to SecAgg+).

Used by ``fedrt bench device`` (peak RSS and bytes of a device during a round) and by
``tests/device_tests/test_mixed_round.py`` (mixed architectures aggregate exactly).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.rounds.journal import RoundSummary
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.tasks import TaskSpec
from fedrt.errors import UsageError
from fedrt.simulation.stack import LocalStack, mosquitto_available

REPO = Path(__file__).resolve().parents[1]
HOST = (sys.executable, "-m", "device_tests.round_device")
EMULATED_PI = (str(REPO / "device_tests" / "emulate-pi"), "--module", "device_tests.round_device")
_READY_TIMEOUT_S = 300.0  # the emulated device needs ~30 s to start; a first run builds more


@dataclass(slots=True)
class RoundRun:
    """What one round left behind: each device's report and folder, the coordinator's rounds."""

    reports: list[dict[str, Any]]
    directories: list[Path]
    summaries: list[RoundSummary] = field(default_factory=list)

    @property
    def committed(self) -> list[RoundSummary]:
        return [s for s in self.summaries if s.status == "committed"]


def run_round(
    model_dir: Path,
    spec: TaskSpec,
    devices: Sequence[Sequence[str]],
    work: Path,
    *,
    device_args: Sequence[str] = (),
    record: bool = False,
    timeout_s: float = 300.0,
) -> RoundRun:
    """Serve ``model_dir`` with ``spec`` and run one device process per command prefix."""
    if not (REPO / "device_tests" / "round_device.py").is_file():
        raise UsageError(f"a device round needs the fedrt checkout's device_tests/ ({REPO})")
    if not mosquitto_available():
        raise UsageError("a device round needs mosquitto (apt-get install mosquitto)")
    summaries: list[RoundSummary] = []

    def driver(ctx: DriverContext) -> RoundDriver:
        pace = PaceConfig(min_delay=0.5, spread=1.0)
        return FederatedDriver(ctx, listener=summaries.append, pace=pace, retry_delay_s=1.0)

    outs = [work / f"device-{i}" for i in range(len(devices))]
    procs: list[subprocess.Popen[bytes]] = []
    with LocalStack(work / "stack", broker="mosquitto", driver_factory=driver) as stack:
        svc = stack.service
        assert svc is not None
        model = stack.call(
            lambda: svc.catalog.add_export_dir(model_dir, actor="bench", max_bytes=1 << 30)
        )
        task = stack.call(lambda: svc.tasks.create(name=f"device round {model_dir.name}",
                                                   model_sha256=model.sha256, spec=spec,
                                                   actor="bench"))  # fmt: skip
        try:
            for prefix, out in zip(devices, outs, strict=True):
                out.mkdir(parents=True)
                token = stack.call(lambda: svc.enrollment.create_token(actor="bench"))
                args = ["--coordinator", stack.http_url, "--token", token, "--task", task.task_id,
                        "--timeout", str(timeout_s), "--json", str(out / "report.json"),
                        "--ready", str(out / "ready"), *device_args]  # fmt: skip
                if record:
                    args += ["--record", str(out / "updates.npz")]
                with (out / "log").open("wb") as log:
                    procs.append(subprocess.Popen([*prefix, *args], cwd=REPO, stdout=log,
                                                  stderr=subprocess.STDOUT))  # fmt: skip
            _wait_ready(procs, outs)
            stack.call(lambda: svc.tasks.act(task.task_id, "start", actor="bench"))
            for proc in procs:
                proc.wait(timeout=timeout_s + 60)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    failed = [o for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
    if failed:
        raise UsageError(f"device process(es) failed:\n{device_logs(failed)}")
    reports = [json.loads((o / "report.json").read_text()) for o in outs]
    return RoundRun(reports=reports, directories=outs, summaries=summaries)


def _wait_ready(procs: Sequence[subprocess.Popen[bytes]], outs: Sequence[Path]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not all((o / "ready").exists() for o in outs):
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise UsageError(f"device processes did not all start:\n{device_logs(outs)}")
        time.sleep(0.5)


def device_logs(outs: Sequence[Path]) -> str:
    """The tail of each device process's output, for an error message."""
    return "\n".join(f"--- {o.name}\n{(o / 'log').read_text(errors='replace')[-3000:]}"
                     for o in outs if (o / "log").exists())  # fmt: skip


def measure_round(
    model_dir: Path,
    work: Path,
    *,
    devices: int,
    examples: int,
    emulated: bool = False,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Peak RSS and bytes up/down of ``devices`` device processes in one SecAgg+ round.

    With ``emulated`` the first device runs on the emulated Raspberry Pi and is reported on
    its own (``emulated_pi``); the figures at the top level are the host devices'.
    """
    if devices < 2:
        raise UsageError(f"a SecAgg+ round needs at least 2 devices, not {devices}")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    batch = int(manifest["batch_size"])
    spec = TaskSpec(goal_count=devices, over_selection=1.0, min_reports=devices, secagg=True,
                    checkin_deadline_s=60.0, training_deadline_s=timeout_s / 2,
                    secagg_stage_deadline_s=60.0, batch_size=batch, learning_rate=0.01,
                    local_epochs=1, eval_every=0, max_rounds=1)  # fmt: skip
    shape = ",".join(str(d) for d in manifest["input"]["shape"])
    classes = str(manifest["output"]["shape"][-1])
    args = ["--input-shape", shape, "--dtype", manifest["input"]["dtype"],
            "--classes", classes, "--examples", str(examples)]  # fmt: skip
    prefixes = [EMULATED_PI] * emulated + [HOST] * (devices - emulated)
    run = run_round(model_dir, spec, prefixes, work, device_args=args, timeout_s=timeout_s)
    if not run.committed:
        raise UsageError(f"the device round did not commit: {run.summaries}")
    reports = run.reports[int(emulated) :]
    extra = {}
    if emulated:
        pi = run.reports[0]
        keys = ("machine", "peak_rss_mib", "bytes_up", "bytes_down", "seconds")
        extra["emulated_pi"] = {k: pi[k] for k in keys}
    return {
        **extra,
        "devices": devices,
        "examples_per_device": examples,
        "model_bytes": int(manifest["model_bytes"]),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in reports),
        "rss_after_import_mib": max(r["peak_rss_mib_after_import"] for r in reports),
        "bytes_up": round(sum(r["bytes_up"] for r in reports) / len(reports)),
        "bytes_down": round(sum(r["bytes_down"] for r in reports) / len(reports)),
        "seconds": max(r["seconds"] for r in reports),
    }


__all__ = ["EMULATED_PI", "HOST", "RoundRun", "device_logs", "measure_round", "run_round"]
