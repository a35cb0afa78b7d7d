"""Device state on Linux from sysfs/procfs (power supplies, default route, load, thermal zones)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedrt.sdk.device_state import (
    BatteryStatus,
    DeviceSnapshot,
    DeviceState,
    NetworkKind,
    PowerSource,
    ThermalStatus,
)
from fedrt.sdk.errors import DeviceStateError

__all__ = ["LinuxDeviceState", "parse_nmcli_metered", "system_nmcli"]

NmcliRunner = Callable[[str], str | None]

_EXTERNAL_TYPES = {
    "Mains": PowerSource.AC,
    "USB": PowerSource.USB,
    "Wireless": PowerSource.WIRELESS,
}
# USB-C/PD ports report themselves under these types on newer kernels.
_EXTERNAL_TYPES.update({"USB_C": PowerSource.USB, "USB_PD": PowerSource.USB})
_STATUS = {
    "Charging": BatteryStatus.CHARGING,
    "Discharging": BatteryStatus.DISCHARGING,
    "Full": BatteryStatus.FULL,
    "Not charging": BatteryStatus.NOT_CHARGING,
}
# ARPHRD_* link types: PPP (512), raw IP (519, Qualcomm rmnet / MBIM modems).
_CELLULAR_LINK_TYPES = {"512", "519"}
_CELLULAR_PREFIXES = ("wwan", "rmnet", "ccmni", "ppp")
_RTF_UP = 0x1
# Without a passive trip point, throttling usually starts this far below the critical trip.
_PASSIVE_BELOW_CRITICAL_MC = 15000
_DEFAULT_PASSIVE_MC = 85000
_LIGHT_MARGIN_MC = 10000
# A connection's metered flag changes when the user switches networks, not between steps.
DEFAULT_NMCLI_TTL_S = 30.0


def system_nmcli(interface: str) -> str | None:
    """Ask NetworkManager about ``interface``; None when nmcli is missing or fails."""
    exe = shutil.which("nmcli")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "-t", "-f", "GENERAL.METERED", "device", "show", interface],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_nmcli_metered(output: str) -> bool | None:
    """Parse ``GENERAL.METERED:yes (guessed)`` style output; None for unknown."""
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "GENERAL.METERED":
            word = value.strip().split(" ", 1)[0].lower()
            if word == "yes":
                return True
            if word == "no":
                return False
            return None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


@dataclass(slots=True)
class _Power:
    source: PowerSource
    external: bool
    percent: float | None
    status: BatteryStatus
    notes: list[str]


class LinuxDeviceState(DeviceState):
    """Reads ``ROOT/sys`` and ``ROOT/proc``; ``root`` is "/" on a device, a fixture in tests.

    ``nmcli`` is asked for NetworkManager's metered flag only for the real root: running the
    host's nmcli against a fixture tree would mix two machines. Its answer is cached for
    ``nmcli_ttl_s`` per interface: the scheduler reads the state before every training step
    and a subprocess per step would cost more than the step.
    """

    def __init__(
        self,
        root: str | Path = "/",
        *,
        nmcli: NmcliRunner | bool | None = True,
        input_idle: Callable[[], float | None] | None = None,
        nmcli_ttl_s: float = DEFAULT_NMCLI_TTL_S,
    ) -> None:
        self._root = Path(root)
        self._nmcli_ttl_s = nmcli_ttl_s
        self._nmcli_cache: dict[str, tuple[float, str | None]] = {}
        if not self._root.is_dir():
            raise DeviceStateError(f"device-state root {self._root} is not a directory")
        if nmcli is True:
            self._nmcli: NmcliRunner | None = system_nmcli if self._root == Path("/") else None
        elif nmcli is False:
            self._nmcli = None
        else:
            self._nmcli = nmcli
        self._input_idle = input_idle

    def snapshot(self, now: float) -> DeviceSnapshot:
        power = self._power()
        network, iface, metered, net_notes = self._network(now)
        load, cpus = self._load()
        return DeviceSnapshot(
            taken_at=now,
            power_source=power.source,
            external_power=power.external,
            battery_percent=power.percent,
            battery_status=power.status,
            network=network,
            network_interface=iface,
            metered=metered,
            load_average=load,
            cpu_count=cpus,
            input_idle_s=self._input_idle() if self._input_idle is not None else None,
            interactive=None,
            thermal=self._thermal(),
            notes=(*power.notes, *net_notes),
        )

    # -- power -------------------------------------------------------------------------------

    def _power(self) -> _Power:
        base = self._root / "sys/class/power_supply"
        supplies = sorted(base.iterdir()) if base.is_dir() else []
        batteries: list[Path] = []
        online: list[PowerSource] = []
        for sup in supplies:
            kind = _read(sup / "type")
            if kind == "Battery":
                # scope "Device" marks a peripheral's battery (mouse, headset), not ours.
                if _read(sup / "scope") == "Device" or _read_int(sup / "present") == 0:
                    continue
                batteries.append(sup)
            elif kind in _EXTERNAL_TYPES and _read_int(sup / "online") == 1:
                online.append(_EXTERNAL_TYPES[kind])
        if not batteries:
            return _Power(
                source=PowerSource.MAINS_NO_BATTERY,
                external=True,
                percent=None,
                status=BatteryStatus.ABSENT,
                notes=["no battery present: mains powered"],
            )
        notes: list[str] = []
        percent = self._battery_percent(batteries, notes)
        statuses = [
            _STATUS.get(_read(b / "status") or "", BatteryStatus.UNKNOWN) for b in batteries
        ]
        status = statuses[0] if len(set(statuses)) == 1 else self._merge_status(statuses)
        plugged_status = status in (
            BatteryStatus.CHARGING,
            BatteryStatus.FULL,
            BatteryStatus.NOT_CHARGING,
        )
        if online:
            source = online[0]
        elif plugged_status:
            source = PowerSource.UNKNOWN
            notes.append(f"battery {status.value} but no online supply listed")
        elif status is BatteryStatus.DISCHARGING:
            source = PowerSource.BATTERY
        else:
            source = PowerSource.UNKNOWN
        return _Power(
            source=source,
            external=bool(online) or plugged_status,
            percent=percent,
            status=status,
            notes=notes,
        )

    @staticmethod
    def _merge_status(statuses: list[BatteryStatus]) -> BatteryStatus:
        # With two packs (ThinkPads) one may charge while the other is held: any charging wins.
        for wanted in (
            BatteryStatus.CHARGING,
            BatteryStatus.DISCHARGING,
            BatteryStatus.NOT_CHARGING,
        ):
            if wanted in statuses:
                return wanted
        return statuses[0]

    @staticmethod
    def _battery_percent(batteries: list[Path], notes: list[str]) -> float | None:
        caps = [c for c in (_read_int(b / "capacity") for b in batteries) if c is not None]
        # One pack: "capacity" is the figure the OS shows. Two packs: weight them by their
        # energy (or charge) counters, since a small pack at 0% is not half the charge.
        if len(batteries) == 1 and caps:
            return max(0.0, min(100.0, float(caps[0])))
        now_total = full_total = 0
        for b in batteries:
            now_v, full_v = _read_int(b / "energy_now"), _read_int(b / "energy_full")
            if now_v is None or full_v is None:
                now_v, full_v = _read_int(b / "charge_now"), _read_int(b / "charge_full")
            if now_v is None or not full_v:
                break
            now_total += now_v
            full_total += full_v
        else:
            return max(0.0, min(100.0, 100.0 * now_total / full_total))
        if not caps:
            notes.append("battery capacity unreadable")
            return None
        return max(0.0, min(100.0, sum(caps) / len(caps)))

    # -- network -----------------------------------------------------------------------------

    def _default_interface(self) -> str | None:
        text = _read(self._root / "proc/net/route")
        if text is None:
            return None
        best: tuple[int, str] | None = None
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) < 8:
                continue
            iface, dest, flags, metric, mask = cols[0], cols[1], cols[3], cols[6], cols[7]
            try:
                up = int(flags, 16) & _RTF_UP
                prio = int(metric)
            except ValueError:
                continue
            if dest != "00000000" or mask != "00000000" or not up:
                continue
            if _read(self._root / "sys/class/net" / iface / "operstate") in (
                "down",
                "lowerlayerdown",
                "notpresent",
            ):
                continue
            if best is None or prio < best[0]:
                best = (prio, iface)
        return best[1] if best else None

    def _kind(self, iface: str) -> NetworkKind:
        dev = self._root / "sys/class/net" / iface
        uevent = _read(dev / "uevent") or ""
        devtype = next(
            (ln.split("=", 1)[1] for ln in uevent.splitlines() if ln.startswith("DEVTYPE=")), ""
        )
        if (dev / "wireless").is_dir() or (dev / "phy80211").exists() or devtype == "wlan":
            return NetworkKind.WIFI
        link = _read(dev / "type")
        if (
            devtype == "wwan"
            or link in _CELLULAR_LINK_TYPES
            or iface.startswith(_CELLULAR_PREFIXES)
        ):
            return NetworkKind.CELLULAR
        if link == "1":
            return NetworkKind.ETHERNET
        return NetworkKind.OTHER

    def _ask_nmcli(self, iface: str, now: float) -> str | None:
        if self._nmcli is None:
            return None
        cached = self._nmcli_cache.get(iface)
        if cached is not None and 0 <= now - cached[0] < self._nmcli_ttl_s:
            return cached[1]
        output = self._nmcli(iface)
        self._nmcli_cache[iface] = (now, output)
        return output

    def _network(self, now: float) -> tuple[NetworkKind, str | None, bool | None, list[str]]:
        iface = self._default_interface()
        if iface is None:
            return NetworkKind.NONE, None, None, ["no default route"]
        kind = self._kind(iface)
        output = self._ask_nmcli(iface, now)
        flag = parse_nmcli_metered(output) if output is not None else None
        if flag is not None:
            return kind, iface, flag, [f"metered={'yes' if flag else 'no'} from NetworkManager"]
        if kind is NetworkKind.CELLULAR:
            return kind, iface, True, ["cellular link: metered"]
        if kind in (NetworkKind.WIFI, NetworkKind.ETHERNET):
            return kind, iface, False, [f"{kind.value} without a metered flag: unmetered"]
        return kind, iface, None, [f"{iface}: underlying link unknown, metered unknown"]

    # -- load and thermal --------------------------------------------------------------------

    def _load(self) -> tuple[float | None, int | None]:
        text = _read(self._root / "proc/loadavg")
        load: float | None = None
        if text:
            try:
                load = float(text.split()[0])
            except ValueError:
                load = None
        return load, self._cpus()

    def _cpus(self) -> int | None:
        text = _read(self._root / "sys/devices/system/cpu/online")
        if text:
            count = 0
            try:
                for part in text.split(","):
                    lo, _, hi = part.partition("-")
                    count += int(hi or lo) - int(lo) + 1
            except ValueError:
                count = 0
            if count > 0:
                return count
        return os.cpu_count() if self._root == Path("/") else None

    def _thermal(self) -> ThermalStatus:
        base = self._root / "sys/class/thermal"
        zones = sorted(base.glob("thermal_zone*")) if base.is_dir() else []
        worst = ThermalStatus.UNKNOWN
        for zone in zones:
            temp = _read_int(zone / "temp")
            if temp is None:
                continue
            trips: dict[str, int] = {}
            for tp in zone.glob("trip_point_*_type"):
                kind = _read(tp)
                value = _read_int(tp.with_name(tp.name.replace("_type", "_temp")))
                if kind and value is not None and value > 0:
                    trips[kind] = min(value, trips.get(kind, value))
            worst = max(worst, self._zone_status(temp, trips))
        return worst

    @staticmethod
    def _zone_status(temp: int, trips: dict[str, int]) -> ThermalStatus:
        critical = trips.get("critical")
        hot = trips.get("hot")
        passive = trips.get("passive")
        if passive is None:
            passive = critical - _PASSIVE_BELOW_CRITICAL_MC if critical else _DEFAULT_PASSIVE_MC
        if critical is not None and temp >= critical:
            return ThermalStatus.CRITICAL
        if hot is not None and temp >= hot:
            return ThermalStatus.SEVERE
        if temp >= passive:
            return ThermalStatus.MODERATE
        if temp >= passive - _LIGHT_MARGIN_MC:
            return ThermalStatus.LIGHT
        return ThermalStatus.NONE
