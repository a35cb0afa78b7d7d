"""The device-state snapshot that eligibility decides on, and the provider interface behind it."""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from fedrt.sdk.errors import DeviceStateError

__all__ = [
    "BatteryStatus",
    "DeviceSnapshot",
    "DeviceState",
    "NetworkKind",
    "PowerSource",
    "ThermalStatus",
]


class PowerSource(enum.Enum):
    """Where the device's power comes from right now."""

    BATTERY = "battery"  # running on its battery, nothing plugged in
    AC = "ac"  # a mains adapter is online
    USB = "usb"  # charging from a USB port or charger (phones, some boards)
    WIRELESS = "wireless"  # a wireless charger
    # A device without any battery (Raspberry Pi, desktop, server) is mains powered by
    # definition; saying so explicitly keeps "no battery" from reading as "battery unknown".
    MAINS_NO_BATTERY = "mains_no_battery"
    UNKNOWN = "unknown"


class BatteryStatus(enum.Enum):
    CHARGING = "charging"
    DISCHARGING = "discharging"
    FULL = "full"
    NOT_CHARGING = "not_charging"  # plugged in but held (charge threshold, too hot)
    UNKNOWN = "unknown"
    ABSENT = "absent"


class NetworkKind(enum.Enum):
    """The kind of the interface carrying the default route."""

    WIFI = "wifi"
    ETHERNET = "ethernet"
    CELLULAR = "cellular"
    OTHER = "other"  # VPN tunnels and the like: the underlying link is not visible
    NONE = "none"  # no default route


class ThermalStatus(enum.IntEnum):
    """Thermal pressure, ordered by severity; values follow Android's PowerManager levels."""

    UNKNOWN = -1
    NONE = 0
    LIGHT = 1
    MODERATE = 2
    SEVERE = 3
    CRITICAL = 4
    EMERGENCY = 5
    SHUTDOWN = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSnapshot:
    """What a provider saw at ``taken_at``; ``None`` means the provider could not tell.

    ``notes`` explains derived fields (e.g. why the network counts as metered), so a status
    line can say why a device is or is not eligible.
    """

    taken_at: float
    power_source: PowerSource
    external_power: bool  # plugged in (charging, full, or held), or no battery at all
    battery_percent: float | None  # None when absent or unreadable
    battery_status: BatteryStatus
    network: NetworkKind
    network_interface: str | None = None
    metered: bool | None = None  # None: could not tell; eligibility treats it as metered
    load_average: float | None = None  # 1-minute load average
    cpu_count: int | None = None
    input_idle_s: float | None = None  # seconds since the last user input, when known
    interactive: bool | None = None  # screen on / user present (Android), when known
    thermal: ThermalStatus = ThermalStatus.UNKNOWN
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not math.isfinite(self.taken_at):
            raise DeviceStateError(f"taken_at must be finite, got {self.taken_at}")
        if self.battery_percent is not None and not 0.0 <= self.battery_percent <= 100.0:
            raise DeviceStateError(f"battery_percent out of [0, 100]: {self.battery_percent}")
        if self.power_source is PowerSource.MAINS_NO_BATTERY and (
            self.battery_status is not BatteryStatus.ABSENT or not self.external_power
        ):
            raise DeviceStateError("a device without a battery is mains powered and has no status")
        if self.battery_status is BatteryStatus.ABSENT and self.battery_percent is not None:
            raise DeviceStateError("an absent battery has no charge level")
        if self.network is NetworkKind.NONE and self.network_interface is not None:
            raise DeviceStateError("no network but an interface was named")
        if self.load_average is not None and not (
            math.isfinite(self.load_average) and self.load_average >= 0
        ):
            raise DeviceStateError(f"load_average must be >= 0, got {self.load_average}")
        if self.cpu_count is not None and self.cpu_count < 1:
            raise DeviceStateError(f"cpu_count must be >= 1, got {self.cpu_count}")
        if self.input_idle_s is not None and self.input_idle_s < 0:
            raise DeviceStateError(f"input_idle_s must be >= 0, got {self.input_idle_s}")

    @property
    def has_battery(self) -> bool:
        return self.battery_status is not BatteryStatus.ABSENT


class DeviceState(ABC):
    """A source of device snapshots (Linux sysfs, Android through Chaquopy, a script)."""

    @abstractmethod
    def snapshot(self, now: float) -> DeviceSnapshot:
        """Read the device state; the result's ``taken_at`` is ``now``.

        Unreadable details become ``None``/``UNKNOWN`` with a note; `DeviceStateError` is
        for a provider that cannot work at all.
        """
