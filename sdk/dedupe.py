"""Receiver-side duplicate filter: remembers recent message ids (optionally on disk)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from fedrt.sdk.errors import OutboxError, SdkConfigError

__all__ = ["SeenIds"]

# Far more ids than messages a device or coordinator can have in flight between two acks.
DEFAULT_CAPACITY = 100_000


class SeenIds:
    """``first_time(id)`` is True exactly once per id (within the last ``capacity`` ids).

    With a file path the memory survives restarts, so a resend after a receiver's crash is
    still recognised. Both sides use it: the coordinator for updates, a device for plans.
    """

    def __init__(self, path: str | Path = ":memory:", *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise SdkConfigError("capacity must be >= 1")
        self.capacity = capacity
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS seen (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " msg_id TEXT UNIQUE NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open dedupe store {path}: {exc}") from exc

    def first_time(self, msg_id: str) -> bool:
        """Record ``msg_id``; True if it had not been seen."""
        with self._lock:
            try:
                cur = self._db.execute("INSERT OR IGNORE INTO seen (msg_id) VALUES (?)", (msg_id,))
                if cur.rowcount == 0:
                    return False
                last = cur.lastrowid or 0
                if last % 1000 == 0:  # prune in bulk, not on every insert
                    self._db.execute("DELETE FROM seen WHERE seq <= ?", (last - self.capacity,))
            except sqlite3.Error as exc:
                raise OutboxError(f"dedupe store failure: {exc}") from exc
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()
