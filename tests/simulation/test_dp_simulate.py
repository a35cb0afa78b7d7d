"""``fedrt simulate --dp``: real Mosquitto, coordinator and LiteRT devices under a DP budget."""

from __future__ import annotations

import io
import math
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.rdp import rdp_privacy_accountant

from fedrt.errors import UsageError
from fedrt.simulation.runner import SimConfig, Simulation
from fedrt.simulation.stack import mosquitto_available


def _epsilon(z: float, n: int, k: int, rounds: int, delta: float) -> float:
    """An independent dp_accounting computation (its default orders, no caching)."""
    acc = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    gaussian = dp_accounting.GaussianDpEvent(z / 2.0)  # replace-one: sensitivity 2C
    acc.compose(dp_accounting.SampledWithoutReplacementDpEvent(n, k, gaussian), rounds)
    return float(acc.get_epsilon(delta))


def test_central_dp_run_reports_epsilon_and_stops_at_its_budget(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    out = io.StringIO()
    # 6 devices, 4 per round, z = 2: epsilon 4.43, 6.66, 8.49 after rounds 1-3 at 1e-5.
    config = SimConfig(
        devices=6,
        per_round=4,
        rounds=4,
        model="zoo:mlp",
        partition="iid",
        bits=8,
        seed=3,
        broker="mosquitto",
        data_dir=tmp_path,
        time_limit_s=120,
        dp="central",
        noise_multiplier=2.0,
        clip_norm=1.0,
        dp_budget=7.5,
    )
    report = Simulation(config, out=out).run()
    committed = [r for r in report.rounds if r.status == "committed"]
    assert 1 <= len(committed) <= 2
    for r in committed:
        # Every committed round so far is charged: epsilon after it is the composition.
        n_charged = sum(c.round <= r.round for c in committed)
        assert r.epsilon == pytest.approx(_epsilon(2.0, 6, 4, n_charged, 1e-5), rel=1e-3)
        assert r.noise_stddev == 2.0  # z C on the sum
    if len(committed) == 2:  # rounds can be abandoned on a loaded machine: then no stop yet
        assert "privacy budget exhausted" in report.stopped
        assert "budget exhausted" in out.getvalue()
        assert report.completed
    assert max(r.epsilon or 0.0 for r in report.rounds) <= 7.5
    assert "without replacement" in report.config["dp_accounting"]
    assert report.config["dp"] == "central"


def test_distributed_dp_run_through_mosquitto(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    config = SimConfig(
        devices=6,
        per_round=4,
        rounds=2,
        model="zoo:mlp",
        partition="iid",
        bits=8,
        seed=4,
        broker="mosquitto",
        data_dir=tmp_path,
        time_limit_s=120,
        dp="distributed",
        noise_multiplier=1.0,
        clip_norm=1.0,
        adaptive_clip=0.5,
    )
    report = Simulation(config, out=io.StringIO()).run()
    committed = [r for r in report.rounds if r.status == "committed"]
    assert committed, [r.reason for r in report.rounds]
    for i, r in enumerate(committed, start=1):
        assert r.epsilon == pytest.approx(_epsilon(1.0, 6, 4, i, 1e-5), rel=1e-3)
        # The devices' noise on the sum: at least z times the clip bound, which adapts by
        # at most exp(+-lr / 2) = exp(+-0.1) a round.
        assert r.noise_stddev is not None
        assert r.noise_stddev >= 1.0 * math.exp(-0.1 * (i - 1))
    assert report.config["dp"] == "distributed"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"dp": "central"}, "exactly one of noise_multiplier or target_epsilon"),
        ({"dp": "distributed", "noise_multiplier": 1.0, "secagg": False}, "secagg = true"),
        ({"dp": "central", "noise_multiplier": 1.0, "delta": 0.5}, "below 1 / population"),
        ({"dp": "local"}, "--dp must be one of"),
        ({"dp_budget": 3.0}, "cannot be set"),
    ],
)
def test_bad_dp_options_are_usage_errors(overrides: dict[str, object], says: str) -> None:
    with pytest.raises(UsageError, match=says):
        SimConfig(devices=6, per_round=4, **overrides)  # type: ignore[arg-type]
