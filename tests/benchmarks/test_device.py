"""``fedrt bench device``'s arithmetic floor: a speed target below it is called out of reach."""

from __future__ import annotations

from typing import Any

from fedrt.benchmarks.device import SPEED_TARGET, _floor_line


def _row(tf_ms: float, floor_ms: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"train_gflop": 2.9, "tensorflow": {"ms_median": tf_ms}}
    if floor_ms is not None:
        row["floor_ms"] = floor_ms
    return row


def test_a_target_below_the_floor_is_out_of_reach() -> None:
    line = _floor_line(_row(tf_ms=15.0, floor_ms=13.3))
    assert "2.900 GFLOP/step" in line
    assert f"TF p50 / {SPEED_TARGET:g} = 7.50 ms" in line
    assert "BELOW it: out of reach" in line


def test_a_target_above_the_floor_is_not_excluded() -> None:
    line = _floor_line(_row(tf_ms=1.5, floor_ms=0.3))
    assert "not excluded by it" in line
    assert "out of reach" not in line


def test_without_a_measured_peak_only_the_flops_are_shown() -> None:
    assert _floor_line(_row(tf_ms=1.5, floor_ms=None)).strip() == "train graph 2.900 GFLOP/step"
