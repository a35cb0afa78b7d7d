"""``fedrt.benchmarks.device_round``: device processes in one real SecAgg+ round, measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.benchmarks.device_round import measure_round
from fedrt.simulation.stack import mosquitto_available

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "device_tests" / "fixtures" / "mlp"

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="needs mosquitto")


def test_two_device_processes_commit_a_round_and_report_their_figures(tmp_path: Path) -> None:
    figures = measure_round(MLP, tmp_path, devices=2, examples=24, timeout_s=120)
    assert figures["devices"] == 2
    assert figures["examples_per_device"] == 24
    # Each device downloaded the whole model and uploaded a masked update.
    assert figures["bytes_down"] >= figures["model_bytes"] > 0
    assert figures["bytes_up"] > 0
    assert figures["peak_rss_mib"] >= figures["rss_after_import_mib"] > 0
    assert figures["seconds"] > 0
    reports = sorted(tmp_path.glob("device-*/report.json"))
    assert len(reports) == 2
