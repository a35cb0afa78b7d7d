"""Token buckets with an injected clock."""

from __future__ import annotations

import pytest

from fedrt.coordinator.api.ratelimit import RateLimiter
from fedrt.coordinator.errors import RateLimitedError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_steady_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.try_acquire("d") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("d") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.try_acquire("d") == 0.0
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("d")
    assert info.value.retry_after == pytest.approx(0.5)
    assert limiter.try_acquire("other") == 0.0  # buckets are per key
    clock.now += 100
    assert [limiter.try_acquire("d") for _ in range(4)].count(0.0) == 3  # capped at burst


def test_memory_is_bounded_by_evicting_idle_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock(), max_keys=10)
    for i in range(1000):
        limiter.try_acquire(f"k{i}")
    assert len(limiter._buckets) == 10


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1, clock=Clock())
