"""Whether a device may train now: a pure policy over a `DeviceSnapshot` and the time."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from fedrt.sdk.device_state import DeviceSnapshot, NetworkKind, PowerSource, ThermalStatus
from fedrt.sdk.errors import SdkConfigError

__all__ = ["EligibilityDecision", "EligibilityPolicy", "Ineligible", "Reason"]

# Google's Android federated-compute client: battery >= 30% to start AND to continue.
DEFAULT_MIN_BATTERY = 30.0
# ... and it stops at thermal status MODERATE, so LIGHT is the hottest allowed.
DEFAULT_MAX_THERMAL = ThermalStatus.LIGHT
# A 1-minute load below half the cores leaves room for a training thread without the user
# noticing; Linux has no "screen off" signal, so load stands in for it.
DEFAULT_MAX_LOAD_PER_CPU = 0.5
# A snapshot older than this says nothing about now (providers are polled every few seconds).
DEFAULT_MAX_SNAPSHOT_AGE_S = 60.0


class Ineligible(enum.Enum):
    """One reason a device may not train."""

    STALE_SNAPSHOT = "stale_snapshot"
    BATTERY_LOW = "battery_low"
    NOT_CHARGING = "not_charging"
    NO_NETWORK = "no_network"
    METERED_NETWORK = "metered_network"
    NOT_IDLE = "not_idle"
    TOO_HOT = "too_hot"
    OUTSIDE_HOURS = "outside_hours"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    code: Ineligible
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EligibilityDecision:
    eligible: bool
    reasons: tuple[Reason, ...]  # empty exactly when eligible

    def __str__(self) -> str:
        if self.eligible:
            return "eligible"
        return "ineligible: " + "; ".join(r.detail for r in self.reasons)


@dataclass(frozen=True, slots=True, kw_only=True)
class EligibilityPolicy:
    """The conditions under which training may start and continue.

    ``allowed_hours`` is a local-time window ``(start_hour, end_hour)``, wrapping past
    midnight when start > end (``(22, 6)`` = nights); ``utc_offset_s`` turns ``now`` (Unix
    time) into local time. While training, ``training_threads`` is subtracted from the load
    average so the device's own training does not make it look busy.

    ``always`` is for servers (a silo of a cross-silo task: mains power, a data-centre link,
    nobody at a screen, a load that is its own business): every condition on the device's
    state is skipped, so it trains whenever the coordinator asks; ``allowed_hours`` still
    applies, for a site that lends its machines at night only.
    """

    always: bool = False
    min_battery: float = DEFAULT_MIN_BATTERY
    require_charging: bool = True
    require_unmetered: bool = True
    require_idle: bool = True
    max_thermal: ThermalStatus = DEFAULT_MAX_THERMAL
    max_load_per_cpu: float = DEFAULT_MAX_LOAD_PER_CPU
    min_input_idle_s: float = 0.0
    training_threads: int = 1
    allowed_hours: tuple[int, int] | None = None
    utc_offset_s: int = 0
    max_snapshot_age_s: float = DEFAULT_MAX_SNAPSHOT_AGE_S

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_battery <= 100.0:
            raise SdkConfigError(f"min_battery must be in [0, 100], got {self.min_battery}")
        if self.max_thermal is ThermalStatus.UNKNOWN:
            raise SdkConfigError("max_thermal must be a real thermal level")
        if not (math.isfinite(self.max_load_per_cpu) and self.max_load_per_cpu > 0):
            raise SdkConfigError(f"max_load_per_cpu must be > 0, got {self.max_load_per_cpu}")
        if self.min_input_idle_s < 0:
            raise SdkConfigError("min_input_idle_s must be >= 0")
        if self.training_threads < 0:
            raise SdkConfigError("training_threads must be >= 0")
        if self.max_snapshot_age_s <= 0:
            raise SdkConfigError("max_snapshot_age_s must be > 0")
        if self.allowed_hours is not None:
            start, end = self.allowed_hours
            if not (0 <= start <= 23 and 0 <= end <= 24 and start != end):
                raise SdkConfigError(f"allowed_hours must be two distinct hours, got {start, end}")

    def decide(
        self, snapshot: DeviceSnapshot, now: float, *, training: bool = False
    ) -> EligibilityDecision:
        """Decide for ``now``; ``training`` says whether this device is training already."""
        if self.always:
            reasons = self._hours(now)
            return EligibilityDecision(eligible=not reasons, reasons=tuple(reasons))
        reasons = [
            *self._freshness(snapshot, now),
            *self._power(snapshot),
            *self._network(snapshot),
            *self._idle(snapshot, training),
            *self._thermal(snapshot),
            *self._hours(now),
        ]
        return EligibilityDecision(eligible=not reasons, reasons=tuple(reasons))

    def _freshness(self, s: DeviceSnapshot, now: float) -> list[Reason]:
        age = now - s.taken_at
        if age > self.max_snapshot_age_s:
            return [
                Reason(code=Ineligible.STALE_SNAPSHOT, detail=f"device state is {age:.0f} s old")
            ]
        return []

    def _power(self, s: DeviceSnapshot) -> list[Reason]:
        out: list[Reason] = []
        if self.require_charging and not s.external_power:
            out.append(Reason(code=Ineligible.NOT_CHARGING, detail="not plugged in"))
        if s.power_source is not PowerSource.MAINS_NO_BATTERY and self.min_battery > 0:
            if s.battery_percent is None:
                out.append(Reason(code=Ineligible.BATTERY_LOW, detail="battery level unknown"))
            elif s.battery_percent < self.min_battery:
                out.append(
                    Reason(
                        code=Ineligible.BATTERY_LOW,
                        detail=f"battery {s.battery_percent:.0f}% < {self.min_battery:.0f}%",
                    )
                )
        return out

    def _network(self, s: DeviceSnapshot) -> list[Reason]:
        if s.network is NetworkKind.NONE:
            return [Reason(code=Ineligible.NO_NETWORK, detail="no default route")]
        # An unknown metered state counts as metered: never spend a user's data plan on a guess.
        if self.require_unmetered and s.metered is not False:
            what = "metered" if s.metered else "possibly metered"
            return [
                Reason(
                    code=Ineligible.METERED_NETWORK,
                    detail=f"{what} {s.network.value} network",
                )
            ]
        return []

    def _idle(self, s: DeviceSnapshot, training: bool) -> list[Reason]:
        if not self.require_idle:
            return []
        out: list[Reason] = []
        if s.interactive:
            out.append(Reason(code=Ineligible.NOT_IDLE, detail="user is using the device"))
        if s.input_idle_s is not None and s.input_idle_s < self.min_input_idle_s:
            out.append(
                Reason(code=Ineligible.NOT_IDLE, detail=f"user input {s.input_idle_s:.0f} s ago")
            )
        if s.load_average is not None and s.cpu_count is not None:
            own = self.training_threads if training else 0
            per_cpu = max(0.0, s.load_average - own) / s.cpu_count
            if per_cpu > self.max_load_per_cpu:
                out.append(
                    Reason(
                        code=Ineligible.NOT_IDLE,
                        detail=f"load {per_cpu:.2f}/cpu > {self.max_load_per_cpu:.2f}",
                    )
                )
        elif s.interactive is None and s.input_idle_s is None:
            out.append(Reason(code=Ineligible.NOT_IDLE, detail="idleness unknown"))
        return out

    def _thermal(self, s: DeviceSnapshot) -> list[Reason]:
        if s.thermal is not ThermalStatus.UNKNOWN and s.thermal > self.max_thermal:
            return [
                Reason(
                    code=Ineligible.TOO_HOT,
                    detail=f"thermal {s.thermal.name} > {self.max_thermal.name}",
                )
            ]
        return []

    def _hours(self, now: float) -> list[Reason]:
        if self.allowed_hours is None:
            return []
        start, end = self.allowed_hours
        hour = int(((now + self.utc_offset_s) % 86400) // 3600)
        inside = start <= hour < end if start < end else (hour >= start or hour < end)
        if inside:
            return []
        return [
            Reason(
                code=Ineligible.OUTSIDE_HOURS,
                detail=f"hour {hour} outside {start:02d}-{end:02d}",
            )
        ]
