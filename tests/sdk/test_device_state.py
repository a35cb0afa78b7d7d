"""The conformance suite every DeviceState provider passes (Linux, Android, scripted)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from fedrt.sdk.device_state import (
    BatteryStatus,
    DeviceSnapshot,
    DeviceState,
    NetworkKind,
    PowerSource,
)
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.errors import DeviceStateError
from fedrt.sdk.linux_state import LinuxDeviceState
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in, unplugged
from tests.sdk.android_support import ANDROID_CASES, android_provider
from tests.sdk.conftest import SYSFS, SYSFS_TREES, nmcli_for


def _linux(tree: str) -> Callable[[], DeviceState]:
    return lambda: LinuxDeviceState(SYSFS / tree, nmcli=lambda _: nmcli_for(tree))


PROVIDERS: dict[str, Callable[[], DeviceState]] = {
    **{f"linux:{tree}": _linux(tree) for tree in SYSFS_TREES},
    **{f"android:{case}": (lambda c=case: android_provider(c)) for case in ANDROID_CASES},
    "scripted": lambda: ScriptedDeviceState([(0.0, idle_plugged_in()), (100.0, unplugged())]),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> DeviceState:
    return PROVIDERS[request.param]()


@pytest.mark.parametrize("now", [0.0, 150.0, 1.7e9])
def test_snapshot_is_taken_at_now(provider: DeviceState, now: float) -> None:
    snap = provider.snapshot(now)
    assert isinstance(snap, DeviceSnapshot)
    assert snap.taken_at == now


def test_snapshot_is_consistent(provider: DeviceState) -> None:
    snap = provider.snapshot(1.0)
    if snap.power_source is PowerSource.MAINS_NO_BATTERY:
        assert snap.external_power
        assert snap.battery_status is BatteryStatus.ABSENT
    if snap.battery_status is BatteryStatus.ABSENT:
        assert snap.battery_percent is None
    if snap.power_source is PowerSource.BATTERY:
        assert not snap.external_power
    if snap.network is NetworkKind.NONE:
        assert snap.network_interface is None
    else:
        assert snap.network_interface
    assert all(isinstance(n, str) and n for n in snap.notes)


def test_reading_twice_changes_nothing(provider: DeviceState) -> None:
    assert provider.snapshot(42.0) == provider.snapshot(42.0)


def test_snapshot_is_immutable(provider: DeviceState) -> None:
    snap = provider.snapshot(1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.taken_at = 2.0  # type: ignore[misc]


def test_policy_decides_on_every_provider(provider: DeviceState) -> None:
    decision = EligibilityPolicy().decide(provider.snapshot(5.0), 5.0)
    assert decision.eligible == (len(decision.reasons) == 0)


def test_snapshots_validate_their_fields() -> None:
    with pytest.raises(DeviceStateError):
        idle_plugged_in(battery_percent=101.0)
    with pytest.raises(DeviceStateError):
        idle_plugged_in(power_source=PowerSource.MAINS_NO_BATTERY)  # but battery charging
    with pytest.raises(DeviceStateError):
        idle_plugged_in(network=NetworkKind.NONE)  # with an interface named
    with pytest.raises(DeviceStateError):
        idle_plugged_in(load_average=-1.0)
