"""DP in async (FedBuff) tasks: each commit charged with no amplification by sampling, and
the staleness discount on the clipped delta (every device weighs 1 under DP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.records import RoundStatus
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_update
from tests.coordinator.driver_harness import TASK, weights_of
from tests.coordinator.test_async_rounds import slow_fleet

CLIP = 1.0


@pytest.mark.parametrize("secagg", [False, True], ids=["plain", "secagg"])
def test_async_commits_are_charged_in_full_and_discounted_on_the_clipped_delta(
    tmp_path: Path, secagg: bool
) -> None:
    # A noise multiplier too small to matter here: the test is about the arithmetic.
    dp = {"mode": "central", "noise_multiplier": 1e-6, "clip": {"fixed": CLIP}}
    fleet, buffer = slow_fleet(tmp_path, secagg, max_rounds=5, dp=dp)
    fleet.run_until(fleet.done)
    committed = [r for r in fleet.svc.store.list_rounds(TASK) if r.status is RoundStatus.COMMITTED]
    assert len(committed) >= 3
    epsilons = [r.epsilon or 0.0 for r in committed]
    assert all(e > 0 for e in epsilons)
    assert epsilons == sorted(epsilons)
    stale = 0
    for r in committed:
        # Charged as its whole cohort taken from a pool of itself (q = 1).
        assert (r.detail["dp"]["population"], r.detail["dp"]["cohort"]) == (buffer, buffer)
        members = fleet.reported[r.round_no]
        stale += sum(s > 0 for _, s, _ in members)
        expected = sum(ra.staleness_weight(s) * round_update.clip(d, CLIP)
                       for _, s, d in members) / len(members)  # fmt: skip
        got = weights_of(fleet.svc, r.result_sha256 or "") - weights_of(fleet.svc, r.model_sha256)
        np.testing.assert_allclose(got, expected, atol=2e-4)
    assert stale >= 1  # a discounted update was among them
