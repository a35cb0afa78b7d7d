"""``fedrt bench secagg`` runs a small round end to end and reports what the issue asks for."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fedrt.cli import main


def test_bench_secagg_prints_a_table_and_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "secagg",
                "--clients",
                "12",
                "--params",
                "300",
                "--dropout",
                "0.25",
                "--repeat",
                "2",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["matched_plain_sum"] is True
    assert report["repeat"] == 2
    assert (report["clients"], report["params"], report["dropout"]) == (12, 300, 0.25)
    for key in ("client_seconds", "server_seconds"):
        assert set(report[key]) == {
            "total",
            "advertise_keys",
            "share_keys",
            "masked_input",
            "consistency_check",
            "unmask",
        } | ({"quantize"} if key == "client_seconds" else set())
        assert report[key]["total"] > 0
    assert (
        report["upload_bytes_per_client"]
        > report["masked_input_bytes"]
        > 300 * report["ring_bits"] / 8
    )
    assert report["download_bytes_per_client"] > 0
    assert report["included"] <= 12 - 2
    assert any(line.startswith("masked_input") for line in out)


def test_bench_secagg_rejects_impossible_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "secagg", "--clients", "5", "--params", "10", "--neighbors", "3"]) == 2
    assert "error" in capsys.readouterr().err


def test_bench_secagg_late_dropouts_leave_masked_input_and_unmask(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["bench", "secagg", "--clients", "12", "--params", "50", "--dropout", "0.25"]
    assert main([*args, "--drop-stage", "late", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Three dropouts, round-robin: two before the masked input, one before unmasking.
    assert (report["drop_stage"], report["included"], report["clock"]) == ("late", 10, "wall")


def test_bench_secagg_refuses_a_flower_python_without_flwr_before_measuring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["bench", "secagg", "--clients", "6", "--params", "10", "--flower-python"]
    assert main([*args, sys.executable]) == 2
    captured = capsys.readouterr()
    assert "cannot import flwr" in captured.err
    assert "matched plain sum" not in captured.out
    assert main([*args, str(tmp_path / "no-python")]) == 2
    assert "cannot run Flower's SecAgg+" in capsys.readouterr().err


FLOWER_PYTHON = os.environ.get("FEDRT_FLOWER_PYTHON", "/tmp/flwr-venv/bin/python")


@pytest.mark.skipif(
    not Path(FLOWER_PYTHON).exists(), reason="no interpreter with flwr (FEDRT_FLOWER_PYTHON)"
)
def test_bench_secagg_runs_flower_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "secagg", "--clients", "10", "--params", "200", "--dropout", "0.2"]
    assert main([*args, "--flower-python", FLOWER_PYTHON, "--clock", "cpu", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    flower = report["flower"]
    assert flower["matched_plain_mean"] is True
    assert report["clock"] == flower["clock"] == "cpu"
    assert (flower["clients"], flower["params"]) == (10, 200)
    assert (flower["num_shares"], flower["threshold"]) == (
        report["neighbors"] + 1,
        report["threshold"],
    )
    assert flower["included"] == report["included"] == 9
    assert set(report["flower_over_fedrt"]) == {"server", "client", "upload"}
    assert any(line.startswith("upload B per client") for line in out)
