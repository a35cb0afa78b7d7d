"""A cohort's result as the store would keep it (``rounds.cohort_results``): written as JSON,
read back and added, it gives the round's aggregate bit for bit; malformed records are
refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrt.coordinator.errors import StoreError
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.cohort_results import CohortResult, sum_results
from fedrt.protocol.round_errors import RoundFailed
from tests.coordinator.round_harness import Network, config

M = 32
N = 15


def _committed_round(seed: int) -> Network:
    cfg = config(goal_count=N, min_reports=6, cohort_size=5, secagg_neighbors=None,
                 secagg_threshold=None, rotate=False)  # fmt: skip
    net = Network(cfg, N, np.zeros(M, np.float32), seed=seed, drop={"dev-04": "masked_input"})
    rng = np.random.default_rng(seed)
    for d in net.ids:
        v = rng.normal(size=M)
        net.deltas[d] = v * (rng.uniform(0.1, 0.9) / np.linalg.norm(v))
        net.examples[d] = int(rng.integers(1, 100))
    net.start()
    net.run()
    return net


def test_results_read_back_from_json_add_up_to_the_rounds_aggregate_exactly() -> None:
    net = _committed_round(4)
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    cohorts = net.machine._agg.cohorts
    assert cohorts is not None
    results = [c.result(2) for c in cohorts.cohorts]
    stored = [CohortResult.from_json(json.loads(json.dumps(r.to_json()))) for r in results]
    for before, after in zip(results, stored, strict=True):
        assert after == before
        assert np.array_equal(after.total, before.total)
    total = sum_results(stored, net.machine.update_spec, cohorts.failures())
    assert np.array_equal(total.delta, commit.delta)
    assert sorted(total.included) == sorted(d for d in net.ids if d != "dev-04")
    assert total.committed == 3
    # A cohort whose owner died is a failed result: left out, the rest still add up.
    lost = CohortResult(index=0, key=stored[0].key, failed="its owner's lease expired")
    partial = sum_results([lost, *stored[1:]], net.machine.update_spec, "cohort 0: lost")
    assert partial.committed == 2
    assert set(partial.included) == set(stored[1].included) | set(stored[2].included)
    with pytest.raises(RoundFailed, match="cohort 0: lost"):
        sum_results([lost], net.machine.update_spec, "cohort 0: lost")


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"index": 0, "key": "k-0", "included": [], "failed": "", "sum": "not base64!"},
        {"index": 0, "key": "k-0", "included": [], "failed": "", "sum": "AAAA"},  # 3 bytes
        {"index": "x", "key": "k-0", "included": [], "failed": "", "sum": ""},
        {"index": 0, "key": "k-0", "included": ["d"], "failed": "lost", "sum": ""},
    ],
)
def test_a_malformed_cohort_result_is_refused(record: dict[str, object]) -> None:
    with pytest.raises(StoreError):
        CohortResult.from_json(record)
