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
from typing import Annotated

from pydantic import Field

from fedrt.coordinator.validation import SettingFloat, SettingsModel
from fedrt.protocol.round_messages import MAX_WINDOW

# At most half the longest window on the wire, so that delay + spread always fits in it.
_HalfWindow = Annotated[SettingFloat, Field(le=MAX_WINDOW / 2)]


class PaceConfig(SettingsModel):
    """The ``[pace]`` settings (validated on construction, ``ConfigError`` naming the key)."""

    where = "pace"

    # Check-ins per second the coordinator wants at most from devices it sent away; 10/s is
    # far below what one Mosquitto handles and far above what a round needs.
    target_rate: SettingFloat = Field(10.0, gt=0)
    # Nobody comes back sooner than this: a round takes minutes, so earlier is pointless.
    min_delay: _HalfWindow = Field(60.0, ge=0)
    # Width of each window; the device picks uniformly inside, which smooths the slots.
    spread: _HalfWindow = Field(30.0, gt=0)


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
