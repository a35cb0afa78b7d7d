"""--mode async and its knobs: what the simulation's TaskSpec carries, and what is refused."""

from __future__ import annotations

import pytest

from fedrt.cli import build_parser
from fedrt.errors import UsageError
from fedrt.simulation.cli import _config
from fedrt.simulation.sim_config import SimConfig


def test_async_options_reach_the_task_spec() -> None:
    config = SimConfig(devices=100, mode="async", buffer_size=8, max_staleness=4)
    spec = config.task_spec()
    assert spec.mode == "async"
    assert spec.buffer_size == 8
    assert spec.max_staleness == 4
    assert spec.max_concurrent == 24  # 3 x the buffer by default
    # A commit's SecAgg+ cohort is the buffer: its stages are sized from it, not per_round.
    assert config.stage_deadline_s == SimConfig(per_round=8).stage_deadline_s


def test_the_default_concurrency_never_exceeds_the_fleet() -> None:
    assert SimConfig(devices=12, mode="async", buffer_size=10).task_spec().max_concurrent == 12
    explicit = SimConfig(devices=50, mode="async", buffer_size=5, max_concurrent=7)
    assert explicit.task_spec().max_concurrent == 7


def test_sync_mode_keeps_the_task_defaults() -> None:
    spec = SimConfig(buffer_size=4, max_staleness=2).task_spec()
    assert spec.mode == "sync"
    assert spec.buffer_size != 4


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "fedbuff"},
        {"mode": "async", "buffer_size": 1},
        {"mode": "async", "buffer_size": 30, "devices": 20},
        {"mode": "async", "buffer_size": 10, "max_concurrent": 5},
        {"mode": "async", "max_staleness": -1},
    ],
)
def test_bad_async_options_are_usage_errors(options: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        SimConfig(**options)  # type: ignore[arg-type]


def test_async_takes_dp() -> None:
    # Accounted with no amplification by sampling (docs/privacy.md, "Async tasks").
    config = SimConfig(mode="async", dp="central", noise_multiplier=1.0)
    assert config.task_spec().dp.enabled


def test_the_command_line_carries_the_async_options() -> None:
    argv = ["simulate", "--mode", "async", "--buffer-size", "6", "--max-staleness", "3",
            "--max-concurrent", "12", "--speed-spread", "10", "--target-accuracy", "0.9",
            "--devices", "40", "--train-seconds", "1.5"]  # fmt: skip
    config = _config(build_parser("simulate").parse_args(argv))
    assert (config.mode, config.buffer_size, config.max_staleness) == ("async", 6, 3)
    assert config.max_concurrent == 12
    assert config.speed_spread == 10.0
    assert config.train_seconds == 1.5
    assert config.target_accuracy == 0.9
