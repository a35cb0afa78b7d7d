"""Availability traces: when simulated devices charge, sit idle, use Wi-Fi or go offline.

A trace is generated per device over simulated days; a simulation plays it with a
compressed clock (``sim_seconds = real_seconds * speed``), so eligibility changes, pace
steering, interrupted training and dropouts all happen for real. Traces:

- ``always``: every device plugged in, idle, on Wi-Fi, all the time;
- ``diurnal``: phone-like days after Bonawitz et al. 2019 — charging overnight (so about
  four times as many devices are available at night as by day), short daytime charges,
  busy spells, metered stretches away from home, and brief losses of connectivity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fedrt.errors import UsageError
from fedrt.sdk.device_state import BatteryStatus, DeviceSnapshot, NetworkKind, PowerSource
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in, unplugged

DAY = 86_400.0
HOUR = 3_600.0
TRACES = ("always", "diurnal")


@dataclass(frozen=True, slots=True)
class Offline:
    """A window of simulated time during which the device has no connectivity at all."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class DeviceTrace:
    state: ScriptedDeviceState
    offline: tuple[Offline, ...]

    def online(self, sim_now: float) -> bool:
        return not any(w.start <= sim_now < w.end for w in self.offline)


def _always() -> DeviceTrace:
    return DeviceTrace(ScriptedDeviceState([(0.0, idle_plugged_in())]), ())


def _diurnal(rng: np.random.Generator, days: int) -> DeviceTrace:
    home_wifi = idle_plugged_in()
    steps: list[tuple[float, DeviceSnapshot]] = []
    offline: list[Offline] = []
    for day in range(days):
        base = day * DAY
        # Night: plugged in from ~22:30 to ~07:00, both with an hour of spread.
        plug = base + 22.5 * HOUR + rng.normal(0, HOUR)
        unplug = base + DAY + 7 * HOUR + rng.normal(0, HOUR)
        wake = base + 7 * HOUR + rng.normal(0, 0.5 * HOUR)
        steps.append((max(base, wake), unplugged(battery_percent=float(rng.uniform(60, 100)))))
        # Daytime: away from home on a metered network, and busy now and then.
        steps.append(
            (
                base + 9 * HOUR + rng.normal(0, HOUR),
                unplugged(
                    network=NetworkKind.CELLULAR,
                    network_interface="rmnet0",
                    metered=True,
                    interactive=bool(rng.random() < 0.5),
                    battery_percent=float(rng.uniform(20, 80)),
                ),
            )
        )
        if rng.random() < 0.3:  # a short daytime charge on Wi-Fi at the desk
            t = base + rng.uniform(11, 16) * HOUR
            steps.append((t, dataclasses.replace(home_wifi, interactive=False)))
            steps.append((t + rng.uniform(0.3, 1.0) * HOUR, unplugged(battery_percent=70.0)))
        steps.append((base + 18 * HOUR + rng.normal(0, HOUR), unplugged(battery_percent=40.0)))
        steps.append((plug, home_wifi))
        steps.append((min(unplug, base + 2 * DAY - 1), unplugged(battery_percent=100.0)))
        for _ in range(rng.poisson(1.5)):  # tunnels, lifts, flaky Wi-Fi
            start = base + rng.uniform(0, DAY)
            offline.append(Offline(start, start + rng.exponential(10 * 60)))
    timeline = sorted(steps, key=lambda s: s[0])
    return DeviceTrace(ScriptedDeviceState(timeline), tuple(sorted(offline, key=lambda w: w.start)))


def generate(kind: str, devices: int, *, days: int, rng: np.random.Generator) -> list[DeviceTrace]:
    if kind == "always":
        return [_always() for _ in range(devices)]
    if kind == "diurnal":
        return [_diurnal(rng, days) for _ in range(devices)]
    raise UsageError(f"unknown availability trace {kind!r}; available: {', '.join(TRACES)}")


def charging_and_unmetered(trace: DeviceTrace, sim_now: float) -> bool:
    """Convenience for reports: is the device on external power and Wi-Fi at ``sim_now``?"""
    snap = trace.state.snapshot(sim_now)
    return (
        snap.external_power
        and snap.battery_status is not BatteryStatus.DISCHARGING
        and snap.power_source is not PowerSource.BATTERY
        and snap.metered is False
    )
