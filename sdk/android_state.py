"""Device state on Android: raw platform readings, their mapping to a snapshot, the provider.

Android reports power, network and idleness through three services, each with its own
constants: the sticky ``ACTION_BATTERY_CHANGED`` broadcast (``BatteryManager`` extras),
``ConnectivityManager`` (``NetworkCapabilities`` of the active network) and ``PowerManager``.
`AndroidReadings` holds exactly those values, so a phone's state can be recorded as JSON and
replayed in tests; `android_snapshot` is the pure mapping into a `DeviceSnapshot`; and
`AndroidDeviceState` reads a live ``Context`` through Chaquopy (see `android_reader`).
Constants below are the values documented in the Android SDK (stable since their API level).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedrt.sdk.device_state import (
    BatteryStatus,
    DeviceSnapshot,
    DeviceState,
    NetworkKind,
    PowerSource,
    ThermalStatus,
)
from fedrt.sdk.errors import DeviceStateError

if TYPE_CHECKING:
    from android.content import Context

__all__ = [
    "ActiveNetwork",
    "AndroidDeviceState",
    "AndroidReadings",
    "BatteryExtras",
    "android_snapshot",
]

# BatteryManager.BATTERY_STATUS_*
_STATUS = {
    1: BatteryStatus.UNKNOWN,
    2: BatteryStatus.CHARGING,
    3: BatteryStatus.DISCHARGING,
    4: BatteryStatus.NOT_CHARGING,
    5: BatteryStatus.FULL,
}
# BatteryManager.BATTERY_PLUGGED_* (a bit mask; 0 means on battery). A dock (API 33) powers
# the phone from the mains like an adapter.
_PLUGGED = (
    (1, PowerSource.AC, "ac"),
    (2, PowerSource.USB, "usb"),
    (4, PowerSource.WIRELESS, "wireless"),
    (8, PowerSource.AC, "dock"),
)
# NetworkCapabilities.TRANSPORT_*, in the order a kind is preferred when several are present.
TRANSPORT_CELLULAR, TRANSPORT_WIFI, TRANSPORT_BLUETOOTH, TRANSPORT_ETHERNET = 0, 1, 2, 3
TRANSPORT_VPN, TRANSPORT_USB = 4, 8
_KINDS = (
    (TRANSPORT_WIFI, NetworkKind.WIFI),
    (TRANSPORT_ETHERNET, NetworkKind.ETHERNET),
    (TRANSPORT_USB, NetworkKind.ETHERNET),
    (TRANSPORT_CELLULAR, NetworkKind.CELLULAR),
)
TRANSPORTS = (0, 1, 2, 3, 4, 5, 6, 8)  # the transports a reader asks about
# NetworkCapabilities.NET_CAPABILITY_*: NOT_METERED, and TEMPORARILY_NOT_METERED (API 30:
# e.g. an unmetered 5G plan), which JobScheduler's unmetered constraint also accepts.
NET_CAPABILITY_NOT_METERED = 11
NET_CAPABILITY_TEMPORARILY_NOT_METERED = 25
CAPABILITIES = (NET_CAPABILITY_NOT_METERED, NET_CAPABILITY_TEMPORARILY_NOT_METERED)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryExtras:
    """The ``ACTION_BATTERY_CHANGED`` extras ``present``, ``level``, ``scale``, ``status``,
    ``plugged`` and ``temperature`` (tenths of a degree Celsius), as Android sends them."""

    present: bool
    level: int
    scale: int
    status: int
    plugged: int
    temperature: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveNetwork:
    """The active network: its transports and unmetered capabilities, and its interface."""

    transports: frozenset[int]
    capabilities: frozenset[int]
    interface: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AndroidReadings:
    """One reading of the platform; ``None`` where Android gave nothing.

    ``battery`` is None when no battery broadcast is sticky yet, ``network`` when
    ``getActiveNetwork()`` is null, ``thermal_status`` below API 29.
    """

    battery: BatteryExtras | None
    network: ActiveNetwork | None
    interactive: bool | None
    device_idle: bool | None = None
    power_save: bool | None = None
    thermal_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the format of recorded fixtures)."""
        battery = None
        if self.battery is not None:
            b = self.battery
            battery = {
                "present": b.present,
                "level": b.level,
                "scale": b.scale,
                "status": b.status,
                "plugged": b.plugged,
                "temperature": b.temperature,
            }
        network = None
        if self.network is not None:
            network = {
                "transports": sorted(self.network.transports),
                "capabilities": sorted(self.network.capabilities),
                "interface": self.network.interface,
            }
        return {
            "battery": battery,
            "network": network,
            "interactive": self.interactive,
            "device_idle": self.device_idle,
            "power_save": self.power_save,
            "thermal_status": self.thermal_status,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AndroidReadings:
        """Parse `to_dict`'s form; a wrong type is a `DeviceStateError` naming the field."""
        try:
            raw_battery = data.get("battery")
            battery = None
            if raw_battery is not None:
                battery = BatteryExtras(
                    present=_typed(raw_battery["present"], bool, "battery.present"),
                    level=_typed(raw_battery["level"], int, "battery.level"),
                    scale=_typed(raw_battery["scale"], int, "battery.scale"),
                    status=_typed(raw_battery["status"], int, "battery.status"),
                    plugged=_typed(raw_battery["plugged"], int, "battery.plugged"),
                    temperature=_optional(raw_battery.get("temperature"), int, "temperature"),
                )
            raw_network = data.get("network")
            network = None
            if raw_network is not None:
                network = ActiveNetwork(
                    transports=frozenset(
                        _typed(t, int, "network.transports") for t in raw_network["transports"]
                    ),
                    capabilities=frozenset(
                        _typed(c, int, "network.capabilities") for c in raw_network["capabilities"]
                    ),
                    interface=_optional(raw_network.get("interface"), str, "network.interface"),
                )
            return cls(
                battery=battery,
                network=network,
                interactive=_optional(data.get("interactive"), bool, "interactive"),
                device_idle=_optional(data.get("device_idle"), bool, "device_idle"),
                power_save=_optional(data.get("power_save"), bool, "power_save"),
                thermal_status=_optional(data.get("thermal_status"), int, "thermal_status"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DeviceStateError(f"bad Android readings: {exc!r}") from None


def _typed(value: Any, kind: type, name: str) -> Any:
    # bool is an int in Python; a JSON true is not a battery level.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DeviceStateError(f"bad Android readings: {name} must be {kind.__name__}")
    return value


def _optional(value: Any, kind: type, name: str) -> Any:
    return None if value is None else _typed(value, kind, name)


def android_snapshot(r: AndroidReadings, now: float) -> DeviceSnapshot:
    """Map one reading to the snapshot eligibility decides on (pure: no platform calls)."""
    notes: list[str] = []
    source, external, percent, status = _power(r.battery, notes)
    network, interface, metered = _network(r.network, notes)
    interactive = r.interactive
    if r.device_idle:
        notes.append("device idle (Doze)")
        # Doze only starts with the screen off; say so when the screen state was not read.
        interactive = False if interactive is None else interactive
    if r.power_save:
        notes.append("battery saver on")
    return DeviceSnapshot(
        taken_at=now,
        power_source=source,
        external_power=external,
        battery_percent=percent,
        battery_status=status,
        network=network,
        network_interface=interface,
        metered=metered,
        interactive=interactive,
        thermal=_thermal(r.thermal_status, notes),
        notes=tuple(notes),
    )


def _power(
    b: BatteryExtras | None, notes: list[str]
) -> tuple[PowerSource, bool, float | None, BatteryStatus]:
    if b is None:
        notes.append("no battery broadcast yet: power unknown")
        return PowerSource.UNKNOWN, False, None, BatteryStatus.UNKNOWN
    if not b.present:
        notes.append("no battery present: mains powered")
        return PowerSource.MAINS_NO_BATTERY, True, None, BatteryStatus.ABSENT
    source = PowerSource.BATTERY
    if b.plugged:
        source = PowerSource.UNKNOWN
        for bit, kind, name in _PLUGGED:
            if b.plugged & bit:
                source = kind
                notes.append(f"plugged: {name}")
                break
        else:
            notes.append(f"plugged: unknown type {b.plugged}")
    percent = None
    if b.level >= 0 and b.scale > 0:
        percent = min(100.0, max(0.0, 100.0 * b.level / b.scale))
    else:
        notes.append(f"battery level unreadable (level {b.level}, scale {b.scale})")
    status = _STATUS.get(b.status, BatteryStatus.UNKNOWN)
    if b.temperature is not None:
        notes.append(f"battery {b.temperature / 10:.1f} °C")
    return source, b.plugged != 0, percent, status


def _network(
    n: ActiveNetwork | None, notes: list[str]
) -> tuple[NetworkKind, str | None, bool | None]:
    if n is None:
        return NetworkKind.NONE, None, None
    kind = next((k for t, k in _KINDS if t in n.transports), NetworkKind.OTHER)
    if TRANSPORT_VPN in n.transports:
        notes.append("through a VPN")
    if NET_CAPABILITY_NOT_METERED in n.capabilities:
        metered = False
    elif NET_CAPABILITY_TEMPORARILY_NOT_METERED in n.capabilities:
        metered = False
        notes.append("temporarily not metered")
    else:
        metered = True
    interface = n.interface
    if not interface:
        # Android hides the link's name from some apps; the kind still names the network.
        notes.append("interface name not reported")
        interface = kind.value
    return kind, interface, metered


def _thermal(value: int | None, notes: list[str]) -> ThermalStatus:
    if value is None:
        notes.append("thermal status needs Android 10 (API 29)")
        return ThermalStatus.UNKNOWN
    try:
        return ThermalStatus(value)
    except ValueError:
        notes.append(f"unknown thermal status {value}")
        return ThermalStatus.UNKNOWN


class AndroidDeviceState(DeviceState):
    """Snapshots from a reader of `AndroidReadings` (a live ``Context``, or recorded ones).

    In an app: ``AndroidDeviceState.from_context(context)`` under Chaquopy.
    """

    def __init__(self, read: Callable[[], AndroidReadings]) -> None:
        self._read = read

    @classmethod
    def from_context(cls, context: Context) -> AndroidDeviceState:
        """Read an ``android.content.Context`` through Chaquopy's ``java`` module."""
        from fedrt.sdk.android_reader import ContextReader

        return cls(ContextReader(context).read)

    def snapshot(self, now: float) -> DeviceSnapshot:
        return android_snapshot(self._read(), now)
