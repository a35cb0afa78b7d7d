"""``fedrt simulate --mode async``: a small FedBuff run on real devices with SecAgg+ cohorts."""

from __future__ import annotations

import pytest

from fedrt.simulation.runner import Report
from tests.support.simulate import simulate_small

# 30-45 s on a loaded 2-core machine (the model export included); the options' wiring and
# the rows' fields are tested fast in test_async_config.py and test_async_rows.py.
pytestmark = pytest.mark.slow

BUFFER, STALENESS, COMMITS = 3, 3, 3


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return simulate_small(
        tmp_path_factory.mktemp("sim"),
        devices=6,
        rounds=COMMITS,
        partition="iid",
        seed=11,
        mode="async",
        buffer_size=BUFFER,
        max_staleness=STALENESS,
        speed_spread=4.0,
        target_accuracy=0.3,
        local_epochs=2,
    )


def test_rounds_counts_commits_of_a_buffer_each(report: Report) -> None:
    assert report.completed
    committed = [r for r in report.rounds if r.status == "committed"]
    assert len(committed) == COMMITS
    for r in committed:
        assert r.buffer_size == BUFFER
        assert r.staleness is not None
        assert sum(r.staleness.values()) == r.selected  # each cohort member's staleness
        assert all(0 <= int(s) <= STALENESS for s in r.staleness)
        assert r.reported >= 2
        assert r.accuracy is not None
    assert report.config["mode"] == "async"


def test_fedbuff_trains_and_reports_commits_to_target(report: Report) -> None:
    assert report.initial_accuracy is not None
    assert report.final_accuracy is not None
    assert report.final_accuracy > report.initial_accuracy + 0.15
    assert report.rounds_to_target is not None
    assert 1 <= report.rounds_to_target <= COMMITS
    assert report.seconds_to_target is not None
