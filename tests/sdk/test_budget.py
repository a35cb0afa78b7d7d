"""DailyBudget: per local day, reset at midnight, persisted across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.sdk.budget import DailyBudget
from fedrt.sdk.errors import SdkConfigError

DAY = 86400.0


def test_charges_add_up_within_a_day_and_reset_at_local_midnight() -> None:
    b = DailyBudget(100, utc_offset_s=7200)  # UTC+2
    t = 10 * DAY + 3600  # 03:00 local
    b.charge(60, t)
    assert b.remaining(t) == 40
    b.charge(60, t + 10)
    assert b.remaining(t) == 0
    midnight = b.next_reset(t)
    assert midnight == 11 * DAY - 7200
    assert b.remaining(midnight - 1) == 0
    assert b.remaining(midnight) == 100


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    b = DailyBudget(100, path=path)
    b.charge(30.5, 5.0)
    b.flush()
    assert DailyBudget(100, path=path).used(6.0) == 30.5
    assert DailyBudget(100, path=path).used(DAY + 1) == 0.0


def test_a_corrupt_ledger_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    path.write_text("{not json")
    assert DailyBudget(100, path=path).used(1.0) == 0.0


@pytest.mark.parametrize("limit", [0, -1, float("nan")])
def test_bad_limits_are_refused(limit: float) -> None:
    with pytest.raises(SdkConfigError):
        DailyBudget(limit)


def test_bad_charges_are_refused() -> None:
    b = DailyBudget(10)
    with pytest.raises(SdkConfigError):
        b.charge(-1, 0.0)
    assert b.used(0.0) == 0.0
