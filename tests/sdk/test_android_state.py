"""AndroidDeviceState on Android readings: the cases that decide eligibility on a phone.

Each fixture in data/android/ holds the values Android reports (battery broadcast extras,
NetworkCapabilities transports/capabilities, PowerManager) in `AndroidReadings` JSON; a
stand-in Context serves them through the same Java methods an app's Context has. The shared
conformance suite (test_device_state.py) runs every fixture too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedrt.sdk.android_state import (
    ActiveNetwork,
    AndroidReadings,
    BatteryExtras,
    android_snapshot,
)
from fedrt.sdk.device_state import BatteryStatus, NetworkKind, PowerSource, ThermalStatus
from fedrt.sdk.eligibility import EligibilityPolicy, Ineligible
from fedrt.sdk.errors import DeviceStateError
from tests.sdk.android_support import (
    ANDROID_CASES,
    android_provider,
    context_reader,
    recorded,
    replayed,
)

NOW = 1_700_000_000.0


def reasons(case: str) -> set[Ineligible]:
    snap = android_provider(case).snapshot(NOW)
    return {r.code for r in EligibilityPolicy().decide(snap, NOW).reasons}


def test_unplugged_at_40_percent_may_not_train() -> None:
    s = android_provider("unplugged_40").snapshot(NOW)
    assert (s.power_source, s.external_power) == (PowerSource.BATTERY, False)
    assert (s.battery_percent, s.battery_status) == (40.0, BatteryStatus.DISCHARGING)
    assert "battery 28.5 °C" in s.notes
    assert reasons("unplugged_40") == {Ineligible.NOT_CHARGING}


def test_charging_on_wifi_idle_and_cool_is_eligible() -> None:
    s = android_provider("charging_wifi").snapshot(NOW)
    assert (s.power_source, s.external_power, s.battery_status) == (
        PowerSource.AC,
        True,
        BatteryStatus.CHARGING,
    )
    assert (s.network, s.network_interface, s.metered) == (NetworkKind.WIFI, "wlan0", False)
    assert (s.interactive, s.thermal) == (False, ThermalStatus.NONE)
    assert EligibilityPolicy().decide(s, NOW).eligible


def test_cellular_without_not_metered_is_metered() -> None:
    s = android_provider("metered_cellular").snapshot(NOW)
    assert (s.network, s.network_interface, s.metered) == (
        NetworkKind.CELLULAR,
        "rmnet_data0",
        True,
    )
    assert s.power_source is PowerSource.USB
    assert s.thermal is ThermalStatus.LIGHT
    assert reasons("metered_cellular") == {Ineligible.METERED_NETWORK}


def test_thermal_moderate_stops_training() -> None:
    s = android_provider("thermal_throttling").snapshot(NOW)
    assert s.thermal is ThermalStatus.MODERATE
    assert s.power_source is PowerSource.WIRELESS
    assert reasons("thermal_throttling") == {Ineligible.TOO_HOT}


def test_doze_is_idle_but_doze_means_unplugged() -> None:
    s = android_provider("device_idle_doze").snapshot(NOW)
    assert s.interactive is False
    assert "device idle (Doze)" in s.notes
    assert reasons("device_idle_doze") == {Ineligible.NOT_CHARGING}
    # The same reading with the screen state unknown: Doze alone says the screen is off.
    values = recorded("device_idle_doze") | {"interactive": None}
    assert android_snapshot(AndroidReadings.from_dict(values), NOW).interactive is False


def test_screen_on_while_charging_is_not_idle() -> None:
    assert reasons("in_use_charging") == {Ineligible.NOT_IDLE}


def test_docked_full_on_ethernet_before_api_29() -> None:
    s = android_provider("docked_full_api28").snapshot(NOW)
    assert (s.power_source, s.battery_status, s.battery_percent) == (
        PowerSource.AC,
        BatteryStatus.FULL,
        100.0,
    )
    assert "plugged: dock" in s.notes
    assert s.thermal is ThermalStatus.UNKNOWN
    assert "thermal status needs Android 10 (API 29)" in s.notes
    assert (s.network, s.metered) == (NetworkKind.ETHERNET, False)
    assert EligibilityPolicy().decide(s, NOW).eligible


def test_no_active_network() -> None:
    s = android_provider("offline_battery_saver").snapshot(NOW)
    assert (s.network, s.network_interface, s.metered) == (NetworkKind.NONE, None, None)
    assert "battery saver on" in s.notes
    assert reasons("offline_battery_saver") == {Ineligible.NO_NETWORK}


def test_a_box_without_battery_is_mains_powered() -> None:
    s = android_provider("tv_box_no_battery").snapshot(NOW)
    assert (s.power_source, s.battery_status, s.battery_percent) == (
        PowerSource.MAINS_NO_BATTERY,
        BatteryStatus.ABSENT,
        None,
    )
    assert EligibilityPolicy().decide(s, NOW).eligible


@pytest.mark.parametrize("case", ANDROID_CASES)
def test_the_context_reader_reads_what_the_fixture_holds(case: str) -> None:
    assert context_reader(recorded(case)).read().to_dict() == recorded(case)
    assert android_provider(case).snapshot(NOW) == replayed(case).snapshot(NOW)


def test_network_details_vpn_and_temporarily_unmetered() -> None:
    def snap(network: ActiveNetwork) -> tuple[NetworkKind, str | None, bool | None, set[str]]:
        r = AndroidReadings(battery=None, network=network, interactive=False)
        s = android_snapshot(r, NOW)
        return s.network, s.network_interface, s.metered, set(s.notes)

    kind, iface, metered, notes = snap(
        ActiveNetwork(transports=frozenset({1, 4}), capabilities=frozenset({11}), interface="tun0")
    )
    assert (kind, iface, metered) == (NetworkKind.WIFI, "tun0", False)
    assert "through a VPN" in notes
    kind, iface, metered, notes = snap(
        ActiveNetwork(transports=frozenset({0}), capabilities=frozenset({25}))
    )
    assert (kind, iface, metered) == (NetworkKind.CELLULAR, "cellular", False)
    assert {"temporarily not metered", "interface name not reported"} <= notes
    kind, _, metered, _ = snap(ActiveNetwork(transports=frozenset({2}), capabilities=frozenset()))
    assert (kind, metered) == (NetworkKind.OTHER, True)


def test_odd_battery_values_degrade_to_unknown_with_a_note() -> None:
    def snap(
        battery: BatteryExtras | None,
    ) -> tuple[PowerSource, bool, float | None, BatteryStatus, tuple[str, ...]]:
        s = android_snapshot(AndroidReadings(battery=battery, network=None, interactive=None), NOW)
        return s.power_source, s.external_power, s.battery_percent, s.battery_status, s.notes

    source, external, percent, status, notes = snap(None)
    assert (source, external, percent, status) == (
        PowerSource.UNKNOWN,
        False,
        None,
        BatteryStatus.UNKNOWN,
    )
    source, external, percent, status, notes = snap(
        BatteryExtras(present=True, level=-1, scale=0, status=9, plugged=16)
    )
    assert (source, external, percent, status) == (
        PowerSource.UNKNOWN,
        True,
        None,
        BatteryStatus.UNKNOWN,
    )
    assert "plugged: unknown type 16" in notes
    _, _, percent, _, _ = snap(BatteryExtras(present=True, level=3, scale=4, status=2, plugged=2))
    assert percent == 75.0
    decision = EligibilityPolicy().decide(
        android_snapshot(AndroidReadings(battery=None, network=None, interactive=None), NOW), NOW
    )
    assert Ineligible.NOT_IDLE in {r.code for r in decision.reasons}  # idleness unknown


def test_unknown_thermal_levels_are_unknown() -> None:
    r = AndroidReadings(battery=None, network=None, interactive=False, thermal_status=9)
    s = android_snapshot(r, NOW)
    assert s.thermal is ThermalStatus.UNKNOWN
    assert "unknown thermal status 9" in s.notes


@pytest.mark.parametrize(
    "change",
    [
        {"battery": {"present": True}},
        {"battery": {**recorded("unplugged_40")["battery"], "level": "40"}},
        {"battery": {**recorded("unplugged_40")["battery"], "level": True}},
        {"network": {"transports": "wifi", "capabilities": [], "interface": None}},
        {"interactive": "no"},
        {"network": []},
    ],
)
def test_bad_recorded_readings_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(DeviceStateError, match="bad Android readings"):
        AndroidReadings.from_dict(recorded("charging_wifi") | change)


def test_a_java_exception_while_reading_is_a_device_state_error() -> None:
    reader = context_reader(recorded("charging_wifi"), network_denied=True)
    with pytest.raises(DeviceStateError, match="cannot read the Android device state"):
        reader.read()


def test_the_android_modules_import_without_chaquopy() -> None:
    code = (
        "import sys\n"
        "import fedrt.sdk.android_state, fedrt.sdk.android_reader, fedrt.sdk.android_trainer\n"
        "assert 'java' not in sys.modules and 'android' not in sys.modules, sys.modules.keys()\n"
        "try:\n"
        "    import java\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('java importable on the host')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
