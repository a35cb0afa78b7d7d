"""Reads `AndroidReadings` from a live ``android.content.Context`` through Chaquopy.

Imported only inside an app: the Android classes come from Chaquopy's import hook and its
``java`` module, loaded lazily, so this module imports (and type-checks against
``chaquopy-stubs-android``) on any machine. Needs the ``ACCESS_NETWORK_STATE`` permission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from fedrt.sdk.android_state import (
    CAPABILITIES,
    TRANSPORTS,
    ActiveNetwork,
    AndroidReadings,
    BatteryExtras,
)
from fedrt.sdk.errors import DeviceStateError

if TYPE_CHECKING:
    from android.content import Context, Intent, IntentFilter
    from android.net import ConnectivityManager
    from android.os import PowerManager

__all__ = ["ContextReader"]

# Documented constant values: Intent.ACTION_BATTERY_CHANGED, Context.*_SERVICE and the
# BatteryManager.EXTRA_* keys.
ACTION_BATTERY_CHANGED = "android.intent.action.BATTERY_CHANGED"
CONNECTIVITY_SERVICE = "connectivity"
POWER_SERVICE = "power"


class ContextReader:
    """One `read()` = one sticky battery broadcast, one network query, one power query.

    ``intent_filter`` builds an ``IntentFilter`` and ``java_error`` is the class Java
    exceptions arrive as (``java.lang.Throwable``); both default to Chaquopy's and are
    injectable so the reading code runs against stand-in objects in tests.
    """

    def __init__(
        self,
        context: Context,
        *,
        intent_filter: Callable[[str], IntentFilter] | None = None,
        java_error: type[Exception] | None = None,
    ) -> None:
        if intent_filter is None or java_error is None:
            from android.content import IntentFilter as JavaIntentFilter
            from java.lang import Throwable

            intent_filter = intent_filter or JavaIntentFilter
            java_error = java_error or Throwable
        self._context = context
        self._intent_filter = intent_filter
        self._java_error = java_error

    def read(self) -> AndroidReadings:
        try:
            battery = self._battery()
            network = self._network()
            power = cast("PowerManager | None", self._context.getSystemService(POWER_SERVICE))
        except self._java_error as exc:
            # SecurityException without ACCESS_NETWORK_STATE, DeadObjectException while the
            # system server restarts: this reading is lost, the next poll tries again.
            raise DeviceStateError(f"cannot read the Android device state: {exc}") from exc
        if power is None:
            return AndroidReadings(battery=battery, network=network, interactive=None)
        return AndroidReadings(
            battery=battery,
            network=network,
            interactive=bool(power.isInteractive()),
            device_idle=bool(power.isDeviceIdleMode()),
            power_save=bool(power.isPowerSaveMode()),
            thermal_status=self._thermal(power),
        )

    def _battery(self) -> BatteryExtras | None:
        # A null receiver returns the sticky broadcast without registering anything.
        intent: Intent | None = self._context.registerReceiver(  # type: ignore[call-overload]
            None, self._intent_filter(ACTION_BATTERY_CHANGED)
        )
        if intent is None:
            return None
        temperature = int(intent.getIntExtra("temperature", -10_000))
        return BatteryExtras(
            present=bool(intent.getBooleanExtra("present", True)),
            level=int(intent.getIntExtra("level", -1)),
            scale=int(intent.getIntExtra("scale", -1)),
            status=int(intent.getIntExtra("status", 1)),
            plugged=int(intent.getIntExtra("plugged", 0)),
            temperature=None if temperature == -10_000 else temperature,
        )

    def _network(self) -> ActiveNetwork | None:
        manager = cast(
            "ConnectivityManager | None", self._context.getSystemService(CONNECTIVITY_SERVICE)
        )
        if manager is None:
            raise DeviceStateError("this Context has no ConnectivityManager")
        network = manager.getActiveNetwork()
        if network is None:
            return None
        caps = manager.getNetworkCapabilities(network)
        if caps is None:  # the network went away between the two calls
            return None
        link = manager.getLinkProperties(network)
        return ActiveNetwork(
            transports=frozenset(t for t in TRANSPORTS if caps.hasTransport(t)),
            capabilities=frozenset(c for c in CAPABILITIES if caps.hasCapability(c)),
            interface=None if link is None else link.getInterfaceName(),
        )

    @staticmethod
    def _thermal(power: PowerManager) -> int | None:
        try:
            read = power.getCurrentThermalStatus  # API 29+; Chaquopy: AttributeError before
        except AttributeError:
            return None
        return int(read())
