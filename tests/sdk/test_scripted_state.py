"""ScriptedDeviceState: a timeline of snapshots played against injected time."""

from __future__ import annotations

import pytest

from fedrt.sdk.errors import DeviceStateError
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in, unplugged


def test_the_latest_started_step_holds() -> None:
    state = ScriptedDeviceState([(10.0, unplugged()), (0.0, idle_plugged_in())])
    assert state.snapshot(-5.0).external_power  # before the first step: the first state
    assert state.snapshot(9.99).external_power
    assert not state.snapshot(10.0).external_power
    assert state.snapshot(10.0).taken_at == 10.0


def test_steps_can_be_added_while_running() -> None:
    state = ScriptedDeviceState([(0.0, idle_plugged_in())])
    state.at(5.0, unplugged())
    state.at(7.0, idle_plugged_in(battery_percent=55.0))
    assert not state.snapshot(6.0).external_power
    assert state.snapshot(8.0).battery_percent == 55.0
    state.at(7.0, idle_plugged_in(battery_percent=60.0))  # replaces the step at 7
    assert state.snapshot(8.0).battery_percent == 60.0


def test_an_empty_timeline_is_refused() -> None:
    with pytest.raises(DeviceStateError):
        ScriptedDeviceState([])
