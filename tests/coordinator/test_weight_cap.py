"""weight_cap, a task setting: where a device's FedAvg weight stops growing (cross-silo)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.plan import round_config
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm
from tests.coordinator.round_harness import Network, config
from tests.coordinator.store_conformance import model

M = 16
# Two silos: one with 1,000 examples, one with 4,000.
EXAMPLES = {"dev-00": 1000, "dev-01": 4000, "dev-02": 4000}


def _committed_delta(cap: int, *, secagg: bool) -> np.ndarray:
    extra: dict[str, object] = (
        {} if secagg else dict(secagg=False, secagg_neighbors=None, secagg_threshold=None)
    )
    cfg = config(goal_count=3, min_reports=2, weight_cap=cap, clip_norm=10.0, **extra)
    net = Network(cfg, 3, np.zeros(M, np.float32))
    net.deltas = {d: np.full(M, 1.0 if d == "dev-00" else -1.0) for d in net.ids}
    net.examples = dict(EXAMPLES)
    net.start()
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.Commit), out
    return out.delta


@pytest.mark.parametrize("secagg", [True, False], ids=["secagg", "plain"])
def test_each_silo_counts_by_its_size_up_to_the_cap(secagg: bool) -> None:
    # Cap 1000: every silo weighs 1 -> (1 - 1 - 1) / 3. Cap 10000: 0.1, 0.4, 0.4 -> -0.7 / 0.9.
    capped = _committed_delta(1000, secagg=secagg)
    by_size = _committed_delta(10_000, secagg=secagg)
    np.testing.assert_allclose(capped, -1 / 3, atol=1e-3)
    np.testing.assert_allclose(by_size, -0.7 / 0.9, atol=1e-3)


def test_the_task_setting_reaches_the_round_and_the_devices_plan() -> None:
    spec = TaskSpec(weight_cap=50_000)
    cfg = round_config(task_id="t", round_no=1, spec=spec, kind=rm.RoundKind.TRAIN,
                       model=model("w"), model_url_prefix="/m/", batch_size=8)  # fmt: skip
    assert cfg.weight_cap == 50_000
    assert rc.update_spec(cfg, 10, np.random.default_rng(0), secagg=True).weight_cap == 50_000
    assert TaskSpec().weight_cap == 1000  # the phone-fleet default
