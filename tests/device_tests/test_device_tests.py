"""``python -m device_tests`` on the host, as on a device: TensorFlow blocked, real stack."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.tasks import TaskSpec
from fedrt.simulation.stack import LocalStack
from tests.test_packaging import BLOCKER

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "device_tests" / "fixtures"
HEAVY = ("tensorflow", "keras", "aiohttp", "amqtt", "pytest")
LOCAL_CHECKS = {"training_known_answer", "protocol_vectors", "rotation", "bit_packing", "codec",
                "model_rebuild", "device_state", "cnn_step_time"}  # fmt: skip


def _run_suite(
    args: list[str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m device_tests ARGS`` in a child where heavy frameworks cannot be imported."""
    code = BLOCKER.format(heavy=HEAVY) + (
        "import runpy\n"
        f"sys.argv = ['device_tests', *{args!r}]\n"
        "runpy.run_module('device_tests', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def test_suite_passes_without_tensorflow_and_writes_the_report(tmp_path: Path) -> None:
    out = _run_suite(["--json", str(tmp_path / "report.json")], cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    report = _report(tmp_path / "report.json")
    assert report["ok"] is True
    assert report["machine"] == platform.machine()
    assert report["python"].endswith(platform.python_version())
    assert report["interpreter"]["package"] in ("ai_edge_litert", "tflite_runtime")
    assert report["interpreter"]["version"]
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == LOCAL_CHECKS
    for check in checks.values():
        assert check["ok"] is True, check
        assert check["seconds"] >= 0
    training = checks["training_known_answer"]["detail"]
    assert training["max_weight_error"] <= training["tolerance"]["weights_atol"]
    assert "decision" in checks["device_state"]["detail"]
    assert checks["cnn_step_time"]["detail"]["peak_rss_mib"] > 0


def test_committed_protocol_vectors_are_the_suites_own() -> None:
    copy = FIXTURES / "secagg_kat.json"
    source = ROOT / "tests" / "protocol" / "data" / "secagg_kat.json"
    assert json.loads(copy.read_text()) == json.loads(source.read_text())


def test_a_wrong_known_answer_fails_the_run(tmp_path: Path) -> None:
    # A copied folder runs on its own (as on a device), and a corrupted fixture fails it.
    shutil.copytree(ROOT / "device_tests", tmp_path / "device_tests",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    kat_path = tmp_path / "device_tests" / "fixtures" / "mlp" / "kat.npz"
    with np.load(kat_path) as kat:
        arrays = dict(kat)
    arrays["w_logits_bias"] = arrays["w_logits_bias"] + 1e-3
    np.savez(kat_path, **arrays)
    out = _run_suite(["--json", str(tmp_path / "report.json"), "--skip", "cnn_step_time"],
                     cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    report = _report(tmp_path / "report.json")
    assert report["ok"] is False
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["training_known_answer"]
    assert failed[0]["detail"]["max_weight_error"] > 1e-4


def test_suite_takes_part_in_a_real_round(tmp_path: Path) -> None:
    def driver(ctx: DriverContext) -> RoundDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.5, spread=1.0))

    with LocalStack(tmp_path / "stack", broker="mosquitto", driver_factory=driver) as stack:
        svc = stack.service
        assert svc is not None
        model = stack.call(
            lambda: svc.catalog.add_export_dir(FIXTURES / "mlp", actor="t", max_bytes=1 << 26)
        )
        spec = TaskSpec(goal_count=1, min_reports=1, secagg=False, checkin_deadline_s=8.0,
                        training_deadline_s=20.0, max_rounds=3)  # fmt: skip
        task = stack.call(lambda: svc.tasks.create(name="t", model_sha256=model.sha256,
                                                   spec=spec, actor="t"))  # fmt: skip
        token = stack.call(lambda: svc.enrollment.create_token(actor="t"))
        stack.call(lambda: svc.tasks.act(task.task_id, "start", actor="t"))
        args = ["--json", str(tmp_path / "report.json"), "--coordinator", stack.http_url,
                "--token", token, "--task", task.task_id, "--round-timeout", "60",
                *(a for name in sorted(LOCAL_CHECKS) for a in ("--skip", name))]  # fmt: skip
        out = _run_suite(args, cwd=ROOT, timeout=90)
        rounds = stack.call(lambda: svc.store.list_rounds(task.task_id))
    assert out.returncode == 0, out.stdout + out.stderr
    (check,) = _report(tmp_path / "report.json")["checks"]
    assert check["name"] == "coordinator_round"
    assert check["ok"] is True, check
    assert check["detail"]["rounds_completed"] >= 1
    assert any(r.status.value == "committed" for r in rounds)
