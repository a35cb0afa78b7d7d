"""Pace steering: reconnect windows that spread unneeded devices' check-ins evenly over time.

Bonawitz et al. (2019, section 2.3) send every device the coordinator cannot use now a
window in which to come back, sized so that the expected arrival rate matches what the
coordinator wants. Here each window is a SLOT on a shared time line that advances by
``1 / target_rate`` per device told to wait: however many devices are turned away at
once, they come back at most ``target_rate`` per second (plus the jitter of each window),
so a burst of thousands never stampedes the broker. When few devices are waiting, the slot
line falls behind the clock and the window starts ``min_delay`` after now.

``min_delay`` is for devices the coordinator sent away because a round is under way or just
ended. A device whose round the coordinator lost in a restart gets a ``soon`` window
instead: from now on, since the next round opens as soon as a device checks in, still on
the same line, so the restart's returning devices keep to ``target_rate`` as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedrt.coordinator.errors import ConfigError
from fedrt.protocol.round_messages import MAX_WINDOW


@dataclass(frozen=True, slots=True, kw_only=True)
class PaceConfig:
    # Check-ins per second the coordinator wants at most from devices it sent away; 10/s is
    # far below what one Mosquitto handles and far above what a round needs.
    target_rate: float = 10.0
    # Nobody comes back sooner than this: a round takes minutes, so earlier is pointless.
    min_delay: float = 60.0
    # Width of each window; the device picks uniformly inside, which smooths the slots.
    spread: float = 30.0

    def __post_init__(self) -> None:
        for name in ("target_rate", "spread"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"pace.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.min_delay) and 0 <= self.min_delay <= MAX_WINDOW / 2):
            raise ConfigError(f"pace.min_delay must lie in [0, {MAX_WINDOW / 2}]")
        if self.spread > MAX_WINDOW / 2:
            raise ConfigError(f"pace.spread must be at most {MAX_WINDOW / 2}")


class PaceSteering:
    """Hands out reconnect windows; one instance per task, shared by its rounds."""

    __slots__ = ("_config", "_deferred_slot", "_next_slot")

    def __init__(self, config: PaceConfig | None = None) -> None:
        self._config = config or PaceConfig()
        self._next_slot = -math.inf
        # Devices deferred past the end of a round (``not_before``) queue on a line of their
        # own: were they put on the main line, every device sent away after them (at the
        # end of this very round, say) would wait behind them too.
        self._deferred_slot = -math.inf

    @property
    def config(self) -> PaceConfig:
        return self._config

    def window(
        self, now: float, *, not_before: float = 0.0, soon: bool = False
    ) -> tuple[float, float]:
        """(earliest, latest) in seconds from ``now`` for the next device sent away.

        ``not_before`` (seconds from now) raises the floor, e.g. to after the current round;
        ``soon`` drops it to now (a device whose round was lost in a restart).
        Each of the two lines (now, deferred) keeps to ``target_rate``.
        """
        c = self._config
        floor = now if soon else now + max(c.min_delay, not_before)
        deferred = not soon and floor > max(self._next_slot, now + c.min_delay)
        line = self._deferred_slot if deferred else self._next_slot
        slot = max(line, floor)
        # A week is the longest window on the wire; beyond that the line just stops growing.
        slot = min(slot, now + MAX_WINDOW - c.spread)
        if deferred:
            self._deferred_slot = slot + 1.0 / c.target_rate
        else:
            self._next_slot = slot + 1.0 / c.target_rate
        earliest = slot - now
        return earliest, earliest + c.spread

    def backlog(self, now: float) -> float:
        """Seconds of already promised slots ahead of ``now`` (0 when idle)."""
        return max(0.0, self._next_slot - now)


__all__ = ["PaceConfig", "PaceSteering"]
