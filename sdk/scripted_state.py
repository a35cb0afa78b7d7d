"""Device state from a script: a timeline of snapshots, for tests and simulated fleets."""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Iterable

from fedrt.sdk.device_state import (
    BatteryStatus,
    DeviceSnapshot,
    DeviceState,
    NetworkKind,
    PowerSource,
    ThermalStatus,
)
from fedrt.sdk.errors import DeviceStateError

__all__ = ["ScriptedDeviceState", "idle_plugged_in", "unplugged"]


def idle_plugged_in(**changes: object) -> DeviceSnapshot:
    """A phone-like device charging on Wi-Fi, idle and cool: eligible under the defaults."""
    base = DeviceSnapshot(
        taken_at=0.0,
        power_source=PowerSource.USB,
        external_power=True,
        battery_percent=80.0,
        battery_status=BatteryStatus.CHARGING,
        network=NetworkKind.WIFI,
        network_interface="wlan0",
        metered=False,
        load_average=0.1,
        cpu_count=4,
        interactive=False,
        thermal=ThermalStatus.NONE,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def unplugged(**changes: object) -> DeviceSnapshot:
    """The same device taken off its charger."""
    return idle_plugged_in(
        power_source=PowerSource.BATTERY,
        external_power=False,
        battery_status=BatteryStatus.DISCHARGING,
        **changes,
    )


class ScriptedDeviceState(DeviceState):
    """Plays ``(start_time, snapshot)`` steps: the state at ``now`` is the latest step started.

    Before the first step the first state holds. ``at`` appends a step while running, so a
    simulation can script events as it goes. Thread-safe: the scheduler polls from its worker.
    """

    def __init__(self, timeline: Iterable[tuple[float, DeviceSnapshot]]) -> None:
        steps = sorted(timeline, key=lambda step: step[0])
        if not steps:
            raise DeviceStateError("a scripted device needs at least one state")
        self._times = [t for t, _ in steps]
        self._states = [s for _, s in steps]
        self._lock = threading.Lock()

    def at(self, start: float, state: DeviceSnapshot) -> None:
        """Switch to ``state`` from ``start`` on (replacing any step at the same time)."""
        with self._lock:
            i = bisect.bisect_left(self._times, start)
            if i < len(self._times) and self._times[i] == start:
                self._states[i] = state
            else:
                self._times.insert(i, start)
                self._states.insert(i, state)

    def snapshot(self, now: float) -> DeviceSnapshot:
        with self._lock:
            i = max(0, bisect.bisect_right(self._times, now) - 1)
            state = self._states[i]
        return dataclasses.replace(state, taken_at=now)
