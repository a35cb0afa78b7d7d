"""retry_races: a transaction that lost a serialization race (RaceLost) is run again."""

from __future__ import annotations

import pytest

from fedrt.coordinator.errors import ConflictError, RaceLost, retry_races


def test_a_lost_race_is_run_again_until_it_succeeds() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RaceLost("raced")
        return "done"

    assert retry_races(flaky) == "done"
    assert len(calls) == 3


def test_retries_are_bounded_and_other_conflicts_are_not_retried() -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise RaceLost("raced")

    with pytest.raises(RaceLost):
        retry_races(always, attempts=4)
    assert len(calls) == 4

    def duplicate() -> None:
        calls.append(1)
        raise ConflictError("duplicate id")

    calls.clear()
    with pytest.raises(ConflictError):
        retry_races(duplicate)
    assert len(calls) == 1
