"""LinuxDeviceState on fixture sysfs/procfs trees modelled on real machines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedrt.sdk.device_state import BatteryStatus, NetworkKind, PowerSource, ThermalStatus
from fedrt.sdk.eligibility import EligibilityPolicy, Ineligible
from fedrt.sdk.errors import DeviceStateError
from fedrt.sdk.linux_state import LinuxDeviceState, parse_nmcli_metered
from tests.sdk.conftest import SYSFS, nmcli_for

NOW = 50_000.0


def provider(tree: str) -> LinuxDeviceState:
    out = nmcli_for(tree)
    return LinuxDeviceState(SYSFS / tree, nmcli=lambda iface: out)


def test_laptop_on_battery() -> None:
    s = provider("laptop_on_battery").snapshot(NOW)
    assert s.power_source is PowerSource.BATTERY
    assert not s.external_power
    assert s.battery_percent == 64.0  # BAT0; the mouse battery (scope Device) is ignored
    assert s.battery_status is BatteryStatus.DISCHARGING
    assert (s.network, s.network_interface, s.metered) == (NetworkKind.WIFI, "wlp0s20f3", False)
    assert (s.load_average, s.cpu_count) == (0.52, 8)
    assert s.thermal is ThermalStatus.NONE
    decision = EligibilityPolicy().decide(s, NOW)
    assert {r.code for r in decision.reasons} == {Ineligible.NOT_CHARGING}


def test_pi_on_mains_states_it_has_no_battery() -> None:
    s = provider("pi_on_mains").snapshot(NOW)
    assert s.power_source is PowerSource.MAINS_NO_BATTERY
    assert s.external_power
    assert not s.has_battery
    assert s.battery_percent is None
    assert "no battery present: mains powered" in s.notes
    assert (s.network, s.network_interface, s.metered) == (NetworkKind.ETHERNET, "eth0", False)
    assert s.cpu_count == 4
    assert EligibilityPolicy().decide(s, NOW).eligible


def test_phone_charging_over_usb_prefers_the_lowest_metric_route() -> None:
    s = provider("phone_usb_charging").snapshot(NOW)
    assert s.power_source is PowerSource.USB
    assert s.external_power
    assert (s.battery_percent, s.battery_status) == (47.0, BatteryStatus.CHARGING)
    assert (s.network, s.network_interface) == (NetworkKind.WIFI, "wlan0")
    assert EligibilityPolicy().decide(s, NOW).eligible


def test_pi_on_lte_is_metered_and_warm() -> None:
    s = provider("pi_lte_metered").snapshot(NOW)
    # eth0's default route has a better metric but the link is down.
    assert (s.network, s.network_interface, s.metered) == (NetworkKind.CELLULAR, "wwan0", True)
    assert s.thermal is ThermalStatus.LIGHT  # 58 °C, 7 °C below the derived passive point
    decision = EligibilityPolicy().decide(s, NOW)
    assert {r.code for r in decision.reasons} == {Ineligible.METERED_NETWORK}


def test_hotspot_wifi_is_metered_by_networkmanager() -> None:
    s = provider("laptop_hotspot_metered").snapshot(NOW)
    assert (s.power_source, s.battery_status) == (PowerSource.AC, BatteryStatus.FULL)
    assert s.external_power
    assert s.battery_percent == 100.0
    assert (s.network, s.metered) == (NetworkKind.WIFI, True)
    assert "metered=yes from NetworkManager" in s.notes
    assert s.thermal is ThermalStatus.UNKNOWN
    decision = EligibilityPolicy().decide(s, NOW)
    assert {r.code for r in decision.reasons} == {Ineligible.METERED_NETWORK}


def test_without_nmcli_the_same_wifi_counts_as_unmetered() -> None:
    s = LinuxDeviceState(SYSFS / "laptop_hotspot_metered", nmcli=False).snapshot(NOW)
    assert s.metered is False


def test_networkmanager_can_unmeter_a_cellular_link() -> None:
    lte = LinuxDeviceState(SYSFS / "pi_lte_metered", nmcli=lambda _: "GENERAL.METERED:no\n")
    assert lte.snapshot(NOW).metered is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GENERAL.METERED:yes\n", True),
        ("GENERAL.METERED:yes (guessed)\n", True),
        ("GENERAL.METERED:no (guessed)\n", False),
        ("GENERAL.METERED:unknown\n", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_parse_nmcli_metered(text: str, expected: bool | None) -> None:
    assert parse_nmcli_metered(text) is expected


def copy_tree(tmp_path: Path, tree: str) -> Path:
    dest = tmp_path / tree
    shutil.copytree(SYSFS / tree, dest)
    return dest


def test_unplugging_is_seen_on_the_next_snapshot(tmp_path: Path) -> None:
    root = copy_tree(tmp_path, "phone_usb_charging")
    state = LinuxDeviceState(root, nmcli=False)
    assert state.snapshot(NOW).external_power
    (root / "sys/class/power_supply/usb/online").write_text("0\n")
    (root / "sys/class/power_supply/battery/status").write_text("Discharging\n")
    s = state.snapshot(NOW + 1)
    assert (s.external_power, s.power_source) == (False, PowerSource.BATTERY)


def test_no_default_route_means_no_network(tmp_path: Path) -> None:
    root = copy_tree(tmp_path, "pi_on_mains")
    (root / "proc/net/route").write_text("Iface\tDestination\tGateway\n")
    s = LinuxDeviceState(root, nmcli=False).snapshot(NOW)
    assert (s.network, s.network_interface) == (NetworkKind.NONE, None)


def test_hot_and_critical_zones(tmp_path: Path) -> None:
    root = copy_tree(tmp_path, "pi_on_mains")
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.joinpath("temp").write_text("97000\n")  # passive derived as 110 - 15 = 95 °C
    assert LinuxDeviceState(root, nmcli=False).snapshot(NOW).thermal is ThermalStatus.MODERATE
    zone.joinpath("temp").write_text("111000\n")
    assert LinuxDeviceState(root, nmcli=False).snapshot(NOW).thermal is ThermalStatus.CRITICAL


def test_two_batteries_are_weighted_by_energy(tmp_path: Path) -> None:
    root = copy_tree(tmp_path, "laptop_on_battery")
    second = root / "sys/class/power_supply/BAT1"
    shutil.copytree(root / "sys/class/power_supply/BAT0", second)
    (second / "energy_now").write_text("0\n")
    (second / "energy_full").write_text("23360000\n")
    (second / "capacity").write_text("0\n")
    s = LinuxDeviceState(root, nmcli=False).snapshot(NOW)
    assert s.battery_percent == pytest.approx(100 * 36250000 / (56640000 + 23360000))


def test_unreadable_details_become_unknown(tmp_path: Path) -> None:
    root = copy_tree(tmp_path, "laptop_on_battery")
    (root / "proc/loadavg").unlink()
    (root / "sys/class/power_supply/BAT0/capacity").write_text("n/a\n")
    s = LinuxDeviceState(root, nmcli=False).snapshot(NOW)
    assert s.load_average is None
    assert s.battery_percent == pytest.approx(100 * 36250000 / 56640000)


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceStateError):
        LinuxDeviceState(tmp_path / "nope")


def test_the_real_machine_can_be_read() -> None:
    s = LinuxDeviceState("/").snapshot(NOW)
    assert s.taken_at == NOW
    assert s.cpu_count is not None
    assert s.cpu_count >= 1


def test_nmcli_answers_are_cached_for_a_while() -> None:
    calls: list[str] = []

    def nmcli(iface: str) -> str:
        calls.append(iface)
        return "GENERAL.METERED:no\n"

    state = LinuxDeviceState(SYSFS / "laptop_hotspot_metered", nmcli=nmcli, nmcli_ttl_s=30)
    for t in (0.0, 1.0, 29.0):
        state.snapshot(NOW + t)
    assert calls == ["wlan0"]
    state.snapshot(NOW + 31.0)
    assert calls == ["wlan0", "wlan0"]
