"""The daily compute budget: how many seconds of training the device gives per local day."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

from fedrt.sdk.errors import SdkConfigError

__all__ = ["DailyBudget"]

_DAY = 86400.0
# At most this much compute can be lost from the ledger by a crash.
_SAVE_EVERY_S = 1.0


class DailyBudget:
    """Counts training seconds per local calendar day; resets at local midnight.

    With a ``path`` the count survives restarts (a JSON file replaced atomically), so a device
    that reboots in a loop cannot train past its budget.
    """

    def __init__(
        self, limit_s: float, *, utc_offset_s: int = 0, path: str | Path | None = None
    ) -> None:
        if not (limit_s > 0 and (math.isfinite(limit_s) or limit_s == math.inf)):
            raise SdkConfigError(f"daily budget must be > 0 seconds, got {limit_s}")
        self.limit_s = limit_s
        self._offset = utc_offset_s
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._day, self._used = -1, 0.0
        self._saved = 0.0
        if self._path is not None and self._path.exists():
            self._load(self._path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            day, used = int(data["day"]), float(data["used_s"])
        except (OSError, ValueError, KeyError, TypeError):
            # A corrupt ledger must not block training forever: start the day afresh.
            return
        if math.isfinite(used) and used >= 0:
            self._day, self._used, self._saved = day, used, used

    def _save(self) -> None:
        if self._path is None:
            return
        self._saved = self._used
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps({"day": self._day, "used_s": self._used}), encoding="utf-8")
        os.replace(tmp, self._path)

    def day_of(self, now: float) -> int:
        return int((now + self._offset) // _DAY)

    def next_reset(self, now: float) -> float:
        """The Unix time of the next local midnight."""
        return (self.day_of(now) + 1) * _DAY - self._offset

    def used(self, now: float) -> float:
        with self._lock:
            return self._used if self.day_of(now) == self._day else 0.0

    def remaining(self, now: float) -> float:
        return max(0.0, self.limit_s - self.used(now))

    def charge(self, seconds: float, now: float) -> None:
        """Add ``seconds`` of compute spent at ``now``."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise SdkConfigError(f"cannot charge {seconds} seconds")
        with self._lock:
            day = self.day_of(now)
            if day != self._day:
                self._day, self._used, self._saved = day, 0.0, 0.0
            self._used += seconds
            # Writing the ledger on every sub-millisecond step would cost more than the step.
            if self._used - self._saved >= _SAVE_EVERY_S or self._used >= self.limit_s:
                self._save()

    def flush(self) -> None:
        """Write the ledger now (the scheduler calls this when it pauses or finishes)."""
        with self._lock:
            self._save()
