"""``fedrt bench secagg`` runs a small round end to end and reports what the issue asks for."""

from __future__ import annotations

import json

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
