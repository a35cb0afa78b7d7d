"""``device_tests/emulate-pi``: the suite on an emulated Raspberry Pi (arm64, qemu); slow."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "device_tests" / "emulate-pi"
LOCAL_CHECKS = ("training_known_answer", "protocol_vectors", "rotation", "bit_packing", "codec",
                "model_rebuild", "device_state", "cnn_step_time")  # fmt: skip

needs_emulation = pytest.mark.skipif(
    shutil.which("qemu-aarch64-static") is None
    or (shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists()),
    reason="needs qemu-user-static and debootstrap",
)
pytestmark = [pytest.mark.slow, needs_emulation]


@pytest.mark.timeout(900)
def test_suite_passes_on_an_emulated_pi(tmp_path: Path) -> None:
    out = subprocess.run([str(SCRIPT), "--json", str(tmp_path / "pi.json")],
                         capture_output=True, text=True, timeout=880)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((tmp_path / "pi.json").read_text())
    assert report["machine"] == "aarch64"
    assert report["ok"] is True
    assert report["interpreter"]["package"] == "ai_edge_litert"
    assert {c["name"] for c in report["checks"]} == set(LOCAL_CHECKS)
