"""Availability traces: always-eligible fleets, and diurnal days with more devices at night."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.errors import UsageError
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.simulation.traces import DAY, HOUR, generate

POLICY = EligibilityPolicy()


def _eligible_share(kind: str, hour: float, devices: int = 200) -> float:
    traces = generate(kind, devices, days=3, rng=np.random.default_rng(7))
    now = DAY + hour * HOUR  # the second day, away from the edges of the trace
    ok = [POLICY.decide(t.state.snapshot(now), now).eligible for t in traces]
    return float(np.mean(ok))


def test_always_trace_is_always_eligible() -> None:
    assert _eligible_share("always", 3) == 1.0
    assert _eligible_share("always", 14) == 1.0


def test_diurnal_trace_swings_between_night_and_day() -> None:
    night, day = _eligible_share("diurnal", 3), _eligible_share("diurnal", 13)
    assert night > 0.8
    assert night > 3 * day


def test_diurnal_devices_go_offline_sometimes() -> None:
    traces = generate("diurnal", 100, days=2, rng=np.random.default_rng(1))
    windows = [w for t in traces for w in t.offline]
    assert windows
    w = windows[0]
    owner = next(t for t in traces if w in t.offline)
    assert not owner.online(w.start)
    assert owner.online(w.start - 1.0) or any(x.end > w.start - 1 for x in owner.offline)


def test_unknown_trace_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        generate("weekly", 3, days=1, rng=np.random.default_rng(0))
