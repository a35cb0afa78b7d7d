"""Device-state check: the Linux provider reads this machine; the default policy decides."""

from __future__ import annotations

import time
from typing import Any

from device_tests.report import CheckFailed


def device_state() -> dict[str, Any]:
    import sys

    if not sys.platform.startswith("linux"):
        raise CheckFailed(f"no device-state provider for {sys.platform} in fedrt.sdk yet")
    from fedrt.sdk.eligibility import EligibilityPolicy
    from fedrt.sdk.linux_state import LinuxDeviceState

    now = time.time()
    snap = LinuxDeviceState().snapshot(now)
    decision = EligibilityPolicy().decide(snap, now)
    return {
        "power_source": snap.power_source.value,
        "external_power": snap.external_power,
        "battery_percent": snap.battery_percent,
        "battery_status": snap.battery_status.value,
        "network": snap.network.value,
        "network_interface": snap.network_interface,
        "metered": snap.metered,
        "load_average": snap.load_average,
        "cpu_count": snap.cpu_count,
        "input_idle_s": snap.input_idle_s,
        "thermal": snap.thermal.name,
        "notes": list(snap.notes),
        # Ineligible is a finding, not a failure: a busy CI box is rightly not idle.
        "eligible": decision.eligible,
        "decision": str(decision),
        "reasons": [{"code": r.code.value, "detail": r.detail} for r in decision.reasons],
    }
