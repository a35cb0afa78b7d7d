"""Async (FedBuff) task settings: defaults, bounds and the rules between them."""

from __future__ import annotations

import pytest

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.tasks import TaskSpec


def test_async_settings_round_trip_and_sync_is_the_default() -> None:
    assert TaskSpec().mode == "sync"
    raw = {"mode": "async", "buffer_size": 4, "max_staleness": 3, "max_concurrent": 12}
    spec = TaskSpec.from_json(raw)
    assert (spec.mode, spec.buffer_size, spec.max_staleness, spec.max_concurrent) == (
        "async", 4, 3, 12,
    )  # fmt: skip
    assert TaskSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"mode": "fedbuff"}, "mode"),
        ({"mode": "async", "buffer_size": 1}, "buffer_size"),
        ({"mode": "async", "max_staleness": -1}, "max_staleness"),
        ({"mode": "async", "max_concurrent": 0}, "max_concurrent"),
        ({"mode": "async", "buffer_size": 8, "max_concurrent": 4}, "at least buffer_size"),
        ({"mode": "async", "strategy": "median", "secagg": False}, "not a mean"),
    ],
)
def test_bad_async_specs_say_why(data: dict[str, object], says: str) -> None:
    with pytest.raises(BadRequestError, match=says):
        TaskSpec.from_json(data)


def test_sync_tasks_ignore_the_async_settings() -> None:
    # A sync task may carry them (an operator switching modes back); they are not checked.
    spec = TaskSpec.from_json({"buffer_size": 8, "max_concurrent": 4})
    assert spec.mode == "sync"


def test_any_weight_cap_goes_with_async() -> None:
    # The staleness discount scales the delta, not the example count: a cap of 1 loses nothing.
    spec = TaskSpec.from_json({"mode": "async", "weight_cap": 1})
    assert (spec.mode, spec.weight_cap) == ("async", 1)


def test_dp_goes_with_async() -> None:
    # Accounted without amplification by sampling (docs/async-internals.md).
    dp = {"mode": "central", "noise_multiplier": 1.0}
    spec = TaskSpec.from_json({"mode": "async", "weight_cap": 1, "dp": dp})
    assert spec.dp.enabled


def test_an_async_tasks_delta_is_checked_against_its_buffer() -> None:
    # An async commit is accounted over its buffer (N = K = buffer_size), not the goal.
    dp = {"mode": "central", "noise_multiplier": 1.0, "delta": 0.04}
    TaskSpec.from_json({"goal_count": 10, "dp": dp})  # 0.04 < 1 / 13
    async_spec = {"mode": "async", "buffer_size": 30, "max_concurrent": 30, "dp": dp}
    with pytest.raises(BadRequestError, match="1/30"):
        TaskSpec.from_json({"goal_count": 10, **async_spec})
