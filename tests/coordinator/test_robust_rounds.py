"""Robust rounds end to end: what each rule discarded and the norm outliers, in the API
round record and on /metrics, with one device sending a hostile update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fedrt.coordinator.api.views import round_view
from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.tasks.spec import TaskSpec
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets
from tests.coordinator.test_telemetry import samples, value

HOSTILE = "dev-06"


def one_hostile(
    device_id: str, round_id: int, w: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    honest = pull_to_targets(device_id, round_id, w)
    # Far larger than the others (the SDK clips it to clip_norm, still 10x theirs).
    return -1000.0 * honest if device_id == HOSTILE else 0.1 * honest


@pytest.mark.parametrize(
    ("spec", "discarded"),
    [
        (dict(strategy="krum", byzantine_f=1, krum_m=3), 7 - 3),
        (dict(strategy="bulyan", byzantine_f=1), 2),
        (dict(strategy="trimmed_mean", trimmed_fraction=0.2), 2),
    ],
    ids=["multi-krum", "bulyan", "trimmed_mean"],
)
def test_each_round_says_what_its_rule_discarded_and_flags_the_hostile_update(
    tmp_path: Path, spec: dict[str, object], discarded: int
) -> None:
    fleet = Fleet(7, one_hostile)
    coordinator = fleet.open(tmp_path / "data")
    try:
        fleet.create_task(max_rounds=2, clip_norm=10.0, **spec)
        fleet.run_until(fleet.done)
        rounds = [round_view(r) for r in fleet.svc.store.list_rounds(TASK)]
        found = samples(fleet.svc.metrics.render())
    finally:
        coordinator.close()
    rule = str(spec["strategy"])
    assert [r["status"] for r in rounds] == [RoundStatus.COMMITTED.value] * 2
    for r in rounds:
        m = r["detail"]["metrics"]
        assert (m["aggregator"], m["robust_discarded"], m["norm_outliers"]) == (rule, discarded, 1)
    t = {"task": TASK}
    assert value(found, "fedrt_round_robust_discarded_total", **t, rule=rule) == 2 * discarded
    assert value(found, "fedrt_round_norm_outliers_total", **t) == 2


def test_a_plain_mean_round_counts_outliers_too_and_secagg_rounds_say_nothing(
    tmp_path: Path,
) -> None:
    fleet = Fleet(7, one_hostile)
    coordinator = fleet.open(tmp_path / "data")
    try:
        fleet.create_task(max_rounds=1, clip_norm=10.0)  # fedavg, secagg off
        fleet.run_until(fleet.done)
        (r,) = [round_view(r) for r in fleet.svc.store.list_rounds(TASK)]
    finally:
        coordinator.close()
    m = r["detail"]["metrics"]
    assert (m["aggregator"], m["robust_discarded"], m["norm_outliers"]) == ("mean", 0, 1)


def test_robust_settings_that_cannot_run_are_refused_at_creation() -> None:
    with pytest.raises(BadRequestError, match="needs min_reports >= 7"):
        TaskSpec(strategy="bulyan", secagg=False, byzantine_f=1, min_reports=6, goal_count=6)
    with pytest.raises(BadRequestError, match="needs min_reports >= 7"):
        TaskSpec(strategy="krum", secagg=False, byzantine_f=2, min_reports=6, goal_count=6)
    with pytest.raises(BadRequestError, match="krum_m"):
        TaskSpec(strategy="krum", secagg=False, byzantine_f=1, krum_m=8, min_reports=8)
    with pytest.raises(BadRequestError, match="secagg = false"):
        TaskSpec(strategy="bulyan")  # robust rules need each update: never with SecAgg+
    TaskSpec(strategy="krum", secagg=False, byzantine_f=1, krum_m=7, min_reports=8)
