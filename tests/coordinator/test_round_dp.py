"""DP through whole rounds in memory: RoundMachine and real Participants over encoded messages,
SecAgg+ with dropouts. The committed delta of zero updates is the noise, so its spread is
checked against what the configuration promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedrt.coordinator.privacy.central import CentralNoise
from fedrt.coordinator.privacy.config import AdaptiveClip, AdaptiveClipSettings, DpConfig, DpMode
from fedrt.coordinator.privacy.device import DeviceDp
from fedrt.coordinator.privacy.rounds import TaskPrivacy
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.strategies import FedAvg, OptimizerState
from fedrt.protocol import round_dp
from tests.coordinator.round_harness import Network, config

P = 1024  # parameters: a power of two, so the rotation pads nothing


def _round(
    cfg: rc.RoundConfig,
    drop: dict[int, str],
    seed: int,
    deltas: dict[int, np.ndarray] | None = None,
) -> tuple[Network, rc.Commit]:
    net = Network(cfg, 8, np.zeros(P, np.float32), seed=seed)
    for i, d in enumerate(net.ids):
        net.deltas[d] = deltas[i] if deltas else np.zeros(P)
        net.examples[d] = 3 + i
    net.drop = {net.ids[i]: point for i, point in drop.items()}
    net.start()
    net.run()
    commits = [c for c in net.server_out if isinstance(c, rc.Commit)]
    assert len(commits) == 1, [c for c in net.server_out if isinstance(c, rc.AbandonRound)]
    return net, commits[0]


def _dp_config(**device_dp: object) -> rc.RoundConfig:
    return config(
        goal_count=8,
        min_reports=5,
        secagg_neighbors=7,
        secagg_threshold=5,
        weight_cap=1,
        bits=12,
        device_dp=DeviceDp(**device_dp),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("skellam", [False, True])
def test_distributed_noise_under_secagg_with_dropouts_has_the_configured_distribution(
    skellam: bool,
) -> None:
    cfg = _dp_config(noise_multiplier=1.0, skellam=skellam)
    # Drops before the masked input (their noise never enters) and after it (it does).
    patterns = [{}, {0: "masked_input"}, {0: "share_keys", 1: "masked_input"}, {2: "unmask"}]
    samples = []
    for seed, drop in enumerate(patterns):
        net, commit = _round(cfg, drop, seed)
        spec = net.machine.update_spec
        assert spec.dp is not None
        assert spec.dp.noise_std > 0
        n = commit.metrics.included
        assert n == 8 - sum(p != "unmask" for p in drop.values())
        # The sum carries each survivor's share: at least the target at the threshold (5).
        target = round_dp.float_sum_std(spec, cfg.min_reports)
        got = round_dp.float_sum_std(spec, n)
        assert got >= target
        assert target == pytest.approx(1.0 * spec.dp.rounded_norm * _step(spec))
        # The mean's noise is the sum's over n; the +-1/2 rounding of zeros adds a little.
        expected = math.sqrt(got**2 + n * 0.25 * _step(spec) ** 2) / n
        samples.append(commit.delta / expected)
    z = np.concatenate(samples)
    assert abs(z.std() - 1.0) < 0.03
    assert stats.kstest(z, "norm").pvalue > 1e-3


def _step(spec: object) -> float:
    from fedrt.protocol import round_update

    qs = round_update.quant_spec(spec)  # type: ignore[arg-type]
    return 2 * qs.bound / qs.levels


def test_noise_free_dp_round_equals_the_plain_mean_and_counts_clip_bits() -> None:
    rng = np.random.default_rng(5)
    deltas = {i: rng.normal(size=P) * (0.01 if i < 3 else 1.0) for i in range(8)}
    _, commit = _round(_dp_config(unclipped_bit=True), {1: "masked_input"}, 0, deltas)
    assert commit.metrics.unclipped == 2.0  # devices 0 and 2 (1 dropped) were within 1.0
    clipped = [deltas[i] / max(1.0, np.linalg.norm(deltas[i])) for i in range(8) if i != 1]
    assert np.abs(commit.delta - np.mean(clipped, axis=0)).max() < 0.02


def test_distributed_clip_bit_count_is_noised() -> None:
    counts = []
    for seed in range(30):
        cfg = _dp_config(noise_multiplier=1.0, unclipped_bit=True, bit_sum_std=2.0)
        _, commit = _round(cfg, {}, seed)
        assert commit.metrics.unclipped is not None
        counts.append(commit.metrics.unclipped)
    c = np.asarray(counts)
    assert c.std() > 1.0  # noise of std 2 * sqrt(8 / 5) on the count of 8
    assert abs(c.mean() - 8.0) < 2.0


def test_central_noise_is_added_once_to_the_aggregate() -> None:
    cfg = config(goal_count=8, min_reports=5, secagg_neighbors=7, secagg_threshold=5,
                 weight_cap=1, bits=12)  # fmt: skip
    net = Network(cfg, 8, np.zeros(P, np.float32))
    for d in net.ids:
        net.deltas[d] = np.zeros(P)
        net.examples[d] = 4
    z = 2.0
    net.machine = RoundMachine(
        cfg,
        weights=np.zeros(P, np.float32),
        optimizer=FedAvg(),
        optimizer_state=OptimizerState(),
        pace=PaceSteering(),
        rng=np.random.default_rng(1),
        identity_keys=net.machine._keys,
        central_noise=CentralNoise(noise_multiplier=z, rng=np.random.default_rng(9)),
    )
    net.start()
    net.run()
    commit = next(c for c in net.server_out if isinstance(c, rc.Commit))
    # N(0, (z C)^2) on the sum of 8 weight-1 updates: std z C / 8 on the mean.
    assert commit.delta.std() == pytest.approx(z * 1.0 / 8, rel=0.06)
    assert stats.kstest(commit.delta / (z / 8), "norm").pvalue > 1e-3


@pytest.mark.parametrize("mode", [DpMode.CENTRAL, DpMode.DISTRIBUTED])
def test_adaptive_clipping_through_secure_bits_converges_to_the_quantile(mode: DpMode) -> None:
    """Synthetic population: update norms log-normal around 1 (median 1.0). Starting at
    0.1, the bound the rounds move with the devices' secure clip bits ends near the median."""
    adaptive = AdaptiveClipSettings(quantile=0.5, lr=0.2, initial=0.1)
    dp = DpConfig(mode=mode, noise_multiplier=0.5, clip=AdaptiveClip(adaptive=adaptive))
    privacy = TaskPrivacy(dp, train_rounds=100)
    rng = np.random.default_rng(21)
    clips = []
    for seed in range(40):
        plan = privacy.plan(population=1000, cohort=12)
        cfg = config(goal_count=12, min_reports=8, secagg_neighbors=11, secagg_threshold=8,
                     weight_cap=1, bits=12, clip_norm=plan.clip,
                     device_dp=privacy.device_dp(plan))  # fmt: skip
        net = Network(cfg, 12, np.zeros(64, np.float32), seed=seed)
        for d in net.ids:
            x = rng.normal(size=64)
            net.deltas[d] = x / np.linalg.norm(x) * rng.lognormal(0.0, 0.5)
            net.examples[d] = 1
        net.start()
        net.run()
        commit = next(c for c in net.server_out if isinstance(c, rc.Commit))
        privacy.commit(plan, included=commit.metrics.included,
                       unclipped=commit.metrics.unclipped, device_sum_std=0.0, rng=rng)  # fmt: skip
        clips.append(privacy.clip)
    assert clips[0] < 0.2
    assert 0.7 < float(np.median(clips[-10:])) < 1.4
