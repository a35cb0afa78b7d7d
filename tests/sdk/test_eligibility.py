"""EligibilityPolicy: every condition, its reason, and the defaults from the peers' facts."""

from __future__ import annotations

import dataclasses

import pytest

from fedrt.sdk.device_state import BatteryStatus, NetworkKind, PowerSource, ThermalStatus
from fedrt.sdk.eligibility import EligibilityPolicy, Ineligible
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.scripted_state import idle_plugged_in, unplugged

NOW = 1_000_000.0
POLICY = EligibilityPolicy()


def codes(policy: EligibilityPolicy, **changes: object) -> set[Ineligible]:
    snap = idle_plugged_in(taken_at=NOW, **changes)
    decision = policy.decide(snap, NOW)
    assert decision.eligible == (not decision.reasons)
    return {r.code for r in decision.reasons}


def test_an_idle_charging_device_on_wifi_is_eligible() -> None:
    decision = POLICY.decide(idle_plugged_in(taken_at=NOW), NOW)
    assert decision.eligible
    assert str(decision) == "eligible"


def test_defaults_follow_the_android_client() -> None:
    assert POLICY.min_battery == 30.0
    assert POLICY.require_charging
    assert POLICY.require_unmetered
    assert POLICY.require_idle
    assert POLICY.max_thermal is ThermalStatus.LIGHT


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"battery_percent": 29.0}, Ineligible.BATTERY_LOW),
        ({"battery_percent": None}, Ineligible.BATTERY_LOW),
        ({"network": NetworkKind.NONE, "network_interface": None}, Ineligible.NO_NETWORK),
        ({"metered": True}, Ineligible.METERED_NETWORK),
        ({"metered": None}, Ineligible.METERED_NETWORK),
        ({"interactive": True}, Ineligible.NOT_IDLE),
        ({"load_average": 3.0}, Ineligible.NOT_IDLE),
        ({"thermal": ThermalStatus.MODERATE}, Ineligible.TOO_HOT),
    ],
)
def test_each_condition_has_its_reason(changes: dict[str, object], expected: Ineligible) -> None:
    assert codes(POLICY, **changes) == {expected}


def test_unplugged_is_not_charging_even_with_a_full_battery() -> None:
    decision = POLICY.decide(unplugged(taken_at=NOW, battery_percent=100.0), NOW)
    assert {r.code for r in decision.reasons} == {Ineligible.NOT_CHARGING}
    assert "not plugged in" in str(decision)


def test_battery_threshold_applies_while_charging_too() -> None:
    # >= 30% to start AND to continue: charging does not excuse a low battery.
    assert codes(POLICY, battery_percent=10.0) == {Ineligible.BATTERY_LOW}
    assert codes(POLICY, battery_percent=30.0) == set()


def test_a_device_without_battery_passes_the_power_checks() -> None:
    assert (
        codes(
            POLICY,
            power_source=PowerSource.MAINS_NO_BATTERY,
            battery_status=BatteryStatus.ABSENT,
            battery_percent=None,
        )
        == set()
    )


def test_several_reasons_are_all_reported() -> None:
    got = codes(POLICY, metered=True, thermal=ThermalStatus.SEVERE, battery_percent=5.0)
    assert got == {Ineligible.METERED_NETWORK, Ineligible.TOO_HOT, Ineligible.BATTERY_LOW}


def test_always_for_servers_skips_every_state_condition_but_the_hours() -> None:
    server = EligibilityPolicy(always=True)
    # Everything a phone must not train under, and a reading an hour old.
    snap = unplugged(taken_at=NOW - 3600, battery_percent=5.0, metered=True, load_average=64.0,
                     thermal=ThermalStatus.SEVERE, interactive=True)  # fmt: skip
    assert codes(POLICY, battery_percent=5.0, metered=True)  # a phone would not
    assert server.decide(snap, NOW).eligible
    assert server.decide(snap, NOW, training=True).eligible
    hour = int((NOW % 86400) // 3600)  # 13 UTC
    nights = dataclasses.replace(server, allowed_hours=((hour + 1) % 24, (hour + 5) % 24))
    decision = nights.decide(snap, NOW)
    assert [r.code for r in decision.reasons] == [Ineligible.OUTSIDE_HOURS]


def test_relaxed_policy_ignores_what_it_does_not_require() -> None:
    relaxed = EligibilityPolicy(
        min_battery=0, require_charging=False, require_unmetered=False, require_idle=False
    )
    snap = unplugged(taken_at=NOW, battery_percent=None, metered=True, load_average=9.0)
    assert relaxed.decide(snap, NOW).eligible


def test_own_training_load_is_not_counted_while_training() -> None:
    snap = idle_plugged_in(taken_at=NOW, load_average=2.8, cpu_count=4)
    policy = EligibilityPolicy(max_load_per_cpu=0.5, training_threads=1)
    assert not policy.decide(snap, NOW).eligible  # 0.70 per cpu
    assert policy.decide(snap, NOW, training=True).eligible  # (2.8 - 1) / 4 = 0.45


def test_idleness_unknown_is_not_idle() -> None:
    got = codes(POLICY, load_average=None, interactive=None, input_idle_s=None)
    assert got == {Ineligible.NOT_IDLE}


def test_recent_user_input_is_not_idle() -> None:
    policy = EligibilityPolicy(min_input_idle_s=300)
    assert codes(policy, input_idle_s=12.0) == {Ineligible.NOT_IDLE}
    assert codes(policy, input_idle_s=301.0) == set()


def test_a_stale_snapshot_says_nothing_about_now() -> None:
    snap = idle_plugged_in(taken_at=NOW - 3600)
    decision = POLICY.decide(snap, NOW)
    assert [r.code for r in decision.reasons] == [Ineligible.STALE_SNAPSHOT]


@pytest.mark.parametrize(
    ("hours", "hour", "inside"),
    [
        ((22, 6), 23, True),
        ((22, 6), 3, True),
        ((22, 6), 12, False),
        ((9, 17), 9, True),
        ((9, 17), 17, False),
    ],
)
def test_allowed_hours_wrap_past_midnight(hours: tuple[int, int], hour: int, inside: bool) -> None:
    policy = EligibilityPolicy(allowed_hours=hours, utc_offset_s=3600)
    now = 86400.0 * 100 + (hour - 1) * 3600 + 60  # local = UTC + 1 h
    snap = idle_plugged_in(taken_at=now)
    assert policy.decide(snap, now).eligible is inside


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_battery": 101},
        {"min_battery": -1},
        {"max_thermal": ThermalStatus.UNKNOWN},
        {"max_load_per_cpu": 0},
        {"max_load_per_cpu": float("nan")},
        {"min_input_idle_s": -1},
        {"training_threads": -1},
        {"max_snapshot_age_s": 0},
        {"allowed_hours": (5, 5)},
        {"allowed_hours": (25, 3)},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(SdkConfigError):
        EligibilityPolicy(**kwargs)  # type: ignore[arg-type]


def test_decisions_do_not_depend_on_call_order() -> None:
    a = idle_plugged_in(taken_at=NOW)
    b = dataclasses.replace(a, metered=True)
    first = [POLICY.decide(s, NOW) for s in (a, b, a)]
    assert first[0] == first[2]
    assert not first[1].eligible
