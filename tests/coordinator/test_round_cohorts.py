"""SecAgg+ in cohorts through whole rounds in memory: RoundMachine + real Participants, every
message through the codecs. The cohort sums add up to the exact sum of the included
devices' quantized updates; a failing cohort is left out while the round commits; each
device sees only its own cohort; device DP noise is sized for one cohort's sum."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import numpy as np
import pytest

from fedrt.coordinator.privacy.device import DeviceDp
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.cohorts import secagg_parameters
from fedrt.coordinator.rounds.journal import metrics_json
from fedrt.coordinator.rounds.states import RoundState
from fedrt.protocol import dp, round_dp, round_update
from fedrt.protocol import round_messages as rm
from fedrt.protocol.graph import validate_parameters
from fedrt.protocol.prg import KeyedUniforms
from fedrt.sdk import participant_commands as pc
from tests.coordinator.round_harness import Network, config

M = 32
N = 15


def _network(seed: int, n: int = N, **overrides: object) -> Network:
    base: dict[str, object] = dict(
        goal_count=n,
        min_reports=6,
        cohort_size=5,
        secagg_neighbors=None,  # chosen per cohort: (k, t) = (4, 3) for 5 devices
        secagg_threshold=None,
        rotate=False,
    )
    rng = np.random.default_rng(seed)
    net = Network(config(**(base | overrides)), n, np.zeros(M, np.float32), seed=seed)
    for d in net.ids:
        v = rng.normal(size=M)
        net.deltas[d] = v * (rng.uniform(0.1, 0.9) / np.linalg.norm(v))
        net.examples[d] = int(rng.integers(1, 100))
    return net


def _select(net: Network) -> dict[str, rm.Plan]:
    """Check everyone in, up to selection; the plan each device was sent."""
    net.start()
    for _ in range(10 * net.n_devices):  # one check-in per step
        if net.machine.state is not RoundState.CHECK_IN:
            break
        device_id, data = net.to_server.popleft()
        net._server(net.machine.receive_data(device_id, data, net.now))
    assert net.machine.state is RoundState.TRAINING
    return {
        c.device_id: c.message
        for c in net.server_out
        if isinstance(c, rc.Send) and isinstance(c.message, rm.Plan)
    }


def _cohorts(plans: dict[str, rm.Plan]) -> list[tuple[str, ...]]:
    groups = {tuple(m.device_id for m in p.secagg.members) for p in plans.values() if p.secagg}
    return sorted(groups)


def _vector(net: Network, device_id: str, plan: rm.Plan) -> np.ndarray:
    """The device's quantized SecAgg+ input, recomputed from its update key (sdk's recipe)."""
    key = net.devices[device_id]._update_key
    seed_round = b"\x00" + key + b"\x00%d" % plan.round_id
    rounding = KeyedUniforms(hashlib.sha256(b"fedrt/update-rounding/v1" + seed_round).digest())
    vec = round_update.encode(
        net.deltas[device_id], net.examples[device_id], plan.update, rounding, weighted=True
    )
    return vec.astype(np.uint64)


def test_each_device_sees_only_its_own_cohort_and_the_cohorts_are_disjoint() -> None:
    net = _network(1)
    plans = _select(net)
    cohorts = _cohorts(plans)
    assert len(cohorts) == 3
    assert all(len(c) == 5 for c in cohorts)
    assert sorted(d for c in cohorts for d in c) == sorted(net.ids)
    for device_id, plan in plans.items():
        assert plan.secagg is not None
        members = [m.device_id for m in plan.secagg.members]
        assert device_id in members
        assert len(members) == 5
        assert members[plan.secagg.client_id] == device_id
        assert (plan.secagg.neighbors, plan.secagg.threshold) == (4, 3)


def test_cohort_sums_add_up_to_the_exact_sum_of_the_included_quantized_updates() -> None:
    net = _network(2)
    plans = _select(net)
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.Commit), out
    assert (out.metrics.cohorts, out.metrics.cohorts_committed) == (3, 3)
    assert out.metrics.included == N
    spec = net.machine.update_spec
    exact = sum(_vector(net, d, plans[d]) for d in net.ids)
    assert isinstance(exact, np.ndarray)
    mean, weight = round_update.decode_sum(exact, spec, N)
    # One quantization level is 2/65535 of the bound over the weight: 1e-9 tells them apart.
    np.testing.assert_allclose(out.delta, mean, rtol=0, atol=1e-9)
    assert out.metrics.total_weight == pytest.approx(weight)


@pytest.mark.parametrize("point", ["share_keys", "masked_input", "consistency_check", "unmask"])
def test_a_failing_cohort_is_left_out_and_the_round_commits_without_it(point: str) -> None:
    net = _network(3)
    plans = _select(net)
    lost = _cohorts(plans)[1]
    # Three of five vanish before answering ``point``: two left, below the cohort's t = 3.
    net.drop = {d: point for d in lost[:3]}
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.Commit), out
    assert (out.metrics.cohorts, out.metrics.cohorts_committed) == (3, 2)
    recorded = metrics_json(out.metrics)  # the API's round detail and the dashboard's data
    assert (recorded["cohorts"], recorded["cohorts_committed"]) == (3, 2)
    kept = [d for d in net.ids if d not in lost]
    assert out.metrics.included == len(kept) == 10
    exact = sum(_vector(net, d, plans[d]) for d in kept)
    mean, _ = round_update.decode_sum(exact, net.machine.update_spec, len(kept))  # type: ignore[arg-type]
    np.testing.assert_allclose(out.delta, mean, rtol=0, atol=1e-9)
    # The two survivors of the failed cohort were told their round was abandoned.
    for d in lost[3:]:
        ends = [c for c in net.device_out[d] if isinstance(c, pc.RoundEnded)]
        assert ends[-1].reason is rm.ReconnectReason.ROUND_ABANDONED
    for d in kept:
        ends = [c for c in net.device_out[d] if isinstance(c, pc.RoundEnded)]
        assert ends[-1].reason is rm.ReconnectReason.ROUND_COMPLETE


def test_the_round_is_abandoned_when_the_cohorts_left_hold_too_few_devices() -> None:
    net = _network(4, min_reports=11)
    plans = _select(net)
    lost = _cohorts(plans)[0]
    net.drop = {d: "share_keys" for d in lost[:3]}
    start = net.weights.copy()
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.AbandonRound)
    assert "cohort" in out.reason
    assert "SecAgg+ aborted in share_keys" in out.reason
    assert "deadline (10 s)" in out.reason  # which deadline made it impossible
    assert out.metrics.cohorts == 3
    assert out.metrics.cohorts_committed == 0
    np.testing.assert_array_equal(net.weights, start)


def test_device_dp_noise_is_sized_for_one_cohort_sum() -> None:
    device_dp = DeviceDp(noise_multiplier=1.0)
    whole = config(goal_count=1000, min_reports=500, cohort_size=1000, weight_cap=1, bits=12)
    cohorts = replace(whole, cohort_size=250)
    assert (cohorts.cohort_capacity, cohorts.cohort_min_reports) == (250, 125)
    assert (whole.cohort_capacity, whole.cohort_min_reports) == (1000, 500)
    rng = np.random.default_rng(0)
    one = rc.update_spec(replace(whole, device_dp=device_dp), 64, rng, secagg=True)
    four = rc.update_spec(replace(cohorts, device_dp=device_dp), 64, rng, secagg=True)
    assert one.dp is not None
    assert four.dp is not None
    # The fewest inputs a cohort's sum is kept with carry the whole target noise.
    target = 1.0 * four.dp.rounded_norm
    assert dp.sum_noise_std(four.dp.noise_std, 125) == pytest.approx(target, rel=1e-6)
    # Four times fewer survivors to spread it over: each device adds twice the std.
    assert four.dp.noise_std == pytest.approx(2 * one.dp.noise_std, rel=1e-6)
    # And the ring holds the sum of the largest cohort.
    assert four.dp.ring_bits >= round_dp.secure_ring_bits(replace(four, dp=None), 250)


def test_a_dp_round_in_cohorts_commits_the_noisy_mean() -> None:
    net = _network(5, weight_cap=1, bits=12, device_dp=DeviceDp(noise_multiplier=0.5))
    _select(net)
    net.run()
    out = net.outcome()
    assert isinstance(out, rc.Commit), out
    assert (out.metrics.cohorts_committed, out.metrics.included) == (3, N)
    assert out.metrics.total_weight == N  # weight 1 each under DP
    ref = np.mean([net.deltas[d] for d in net.ids], axis=0)
    spec = net.machine.update_spec
    # The noise on the mean: sum std over N devices, divided by N; 6 std is a wide margin.
    std = round_dp.float_sum_std(spec, N) / N
    assert std > 0
    assert np.abs(out.delta - ref).max() < 6 * std + N * round_update.step(spec)
    assert math.isfinite(float(np.linalg.norm(out.delta)))


def test_a_configured_degree_fits_every_cohort_size() -> None:
    # The task's k and t, capped to what a (possibly small or odd) cohort can have.
    cfg = config(secagg_neighbors=15, secagg_threshold=9)
    for n in range(3, 60):
        k, t = secagg_parameters(cfg, n)
        validate_parameters(n, k, t)  # raises if not a valid SecAgg+ graph and threshold
        assert k == min(15, n - 1) - (min(15, n - 1) % 2 and n % 2)
        assert t == min(9, k + 1)
