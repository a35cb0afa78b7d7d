"""The on-disk outbox: a message stays stored until the coordinator acknowledges its id.

Delivery is at-least-once to the coordinator's application: `ReliableSender` publishes a
stored message, publishes it again after every reconnect (and after ``resend_after_s``
without an ack), and forgets it only when `acknowledge` is called with its id. The id travels
with every copy, so the receiver drops duplicates (`fedrt.sdk.dedupe.SeenIds`) and must
acknowledge duplicates too. A process that dies and restarts reopens the same SQLite file and
resends under the same ids, so a reboot neither loses nor duplicates an update.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedrt.sdk.errors import OutboxError, SdkConfigError, TransportError
from fedrt.sdk.transport_base import Transport

__all__ = ["Outbox", "OutboxEntry", "ReliableSender", "new_msg_id"]

# Updates of a few rounds plus their small stage replies; more means the link has been down
# far longer than any round lasts, and the caller should drop stale rounds.
DEFAULT_MAX_ENTRIES = 1000
# Without an ack after this long, publish again even if the link never dropped.
DEFAULT_RESEND_AFTER_S = 60.0
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def new_msg_id() -> str:
    """A random 128-bit id (hex): unique without coordination across devices and reboots."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    msg_id: str
    topic: str
    payload: bytes
    created_at: float
    attempts: int
    last_sent_at: float | None


class Outbox:
    """Messages awaiting an application-level ack, in an SQLite file (``:memory:`` in tests)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise SdkConfigError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # Once closed: how many messages it held then (a stopped device's status still reads it).
        self._closed_len: int | None = None
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a write's commit does not wait for the disk. Only ``put`` needs that (it
            # syncs); a send's count or a forgotten message lost to a power cut only means a
            # message sent again. Those run on the device's network and event threads, where
            # a thousand simulated devices share a few threads and an fsync each stalled every
            # device of the thread behind a busy disk.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " msg_id TEXT UNIQUE NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,"
                " created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
                " last_sent_at REAL)"
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox failure: {exc}") from exc

    def put(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> str:
        """Store a message (idempotent for the same id and content); returns its id."""
        mid = msg_id if msg_id is not None else new_msg_id()
        if not _ID.match(mid):
            raise OutboxError(f"message id {mid!r} must be 1-128 of [A-Za-z0-9_.:-]")
        if not topic:
            raise OutboxError("topic must not be empty")
        data = bytes(payload)
        with self._lock:
            row = self._run("SELECT topic, payload FROM outbox WHERE msg_id = ?", (mid,)).fetchone()
            if row is not None:
                if (row[0], bytes(row[1])) != (topic, data):
                    raise OutboxError(f"message id {mid} is already stored with other content")
                return mid
            (count,) = self._run("SELECT COUNT(*) FROM outbox").fetchone()
            if count >= self.max_entries:
                raise OutboxError(f"outbox full ({count} unacknowledged messages)")
            # FULL for this commit: a message reported as stored survives a power cut (in WAL
            # mode its commit syncs the log, and with it every write before it).
            self._run("PRAGMA synchronous=FULL")
            try:
                self._run(
                    "INSERT INTO outbox (msg_id, topic, payload, created_at) VALUES (?, ?, ?, ?)",
                    (mid, topic, data, self._clock()),
                )
            finally:
                self._run("PRAGMA synchronous=NORMAL")
        return mid

    def ack(self, msg_id: str) -> bool:
        """Forget an acknowledged message; False if it was not (or no longer) stored. Not
        synced to disk: after a power cut it may go once more, and the receiver drops the
        duplicate, as it does every resend."""
        with self._lock:
            return self._run("DELETE FROM outbox WHERE msg_id = ?", (msg_id,)).rowcount > 0

    def drop(self, msg_id: str) -> bool:
        """Give up on a message (its round is over); same effect as an ack."""
        return self.ack(msg_id)

    def mark_sent(self, msg_id: str, now: float) -> None:
        with self._lock:
            self._run(
                "UPDATE outbox SET attempts = attempts + 1, last_sent_at = ? WHERE msg_id = ?",
                (now, msg_id),
            )

    def pending(self) -> list[OutboxEntry]:
        """Unacknowledged messages, oldest first."""
        with self._lock:
            rows = self._run(
                "SELECT msg_id, topic, payload, created_at, attempts, last_sent_at"
                " FROM outbox ORDER BY seq"
            ).fetchall()
        return [
            OutboxEntry(
                msg_id=r[0],
                topic=r[1],
                payload=bytes(r[2]),
                created_at=r[3],
                attempts=r[4],
                last_sent_at=r[5],
            )
            for r in rows
        ]

    def __len__(self) -> int:
        with self._lock:
            if self._closed_len is not None:
                return self._closed_len
            (count,) = self._run("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the file (again: nothing). Its count stays readable (``len``): a device's
        status may be read while it stops, and reading it must not fail then."""
        with self._lock:
            if self._closed_len is not None:
                return
            try:
                (count,) = self._run("SELECT COUNT(*) FROM outbox").fetchone()
            except OutboxError:
                count = 0
            self._closed_len = int(count)
            self._db.close()


class ReliableSender:
    """Publishes through a `Transport` from an `Outbox` until each message is acknowledged."""

    def __init__(
        self,
        transport: Transport,
        outbox: Outbox,
        *,
        resend_after_s: float = DEFAULT_RESEND_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not resend_after_s > 0:
            raise SdkConfigError("resend_after_s must be > 0")
        self._transport = transport
        self._outbox = outbox
        self._resend_after_s = resend_after_s
        self._clock = clock
        self._send_lock = threading.Lock()
        # msg_id -> the transport's connection_count when it was last published, so the
        # on-connect flush skips what already went out on this very connection.
        self._sent_on: dict[str, int] = {}
        transport.add_connect_listener(self._on_connect)

    def _on_connect(self, session_present: bool) -> None:
        # Resend even when the session survived: the ack may be what was lost.
        for e in self._outbox.pending():
            self._publish(e.msg_id, e.topic, e.payload, skip_if_sent_on_this_connection=True)

    def send(self, topic: str, payload: bytes, *, msg_id: str | None = None) -> str:
        """Store, then try to publish at once; returns the id the ack will carry.

        Returns normally while the link is down: the message is on disk and goes out on the
        next connect. Sending an id again that already went out on the current connection
        publishes nothing (use `flush` or `resend_due` to publish again).
        """
        mid = self._outbox.put(topic, payload, msg_id=msg_id)
        self._publish(mid, topic, payload, skip_if_sent_on_this_connection=True)
        return mid

    def acknowledge(self, msg_id: str) -> bool:
        """The coordinator confirmed ``msg_id``; True if it was still pending."""
        with self._send_lock:
            self._sent_on.pop(msg_id, None)
        return self._outbox.ack(msg_id)

    def flush(self) -> int:
        """Publish every pending message now (on connect); returns how many went out."""
        return sum(self._publish(e.msg_id, e.topic, e.payload) for e in self._outbox.pending())

    def resend_due(self) -> int:
        """Publish messages unacknowledged for ``resend_after_s`` (call it periodically)."""
        now = self._clock()
        due = [
            e
            for e in self._outbox.pending()
            if e.last_sent_at is None or now - e.last_sent_at >= self._resend_after_s
        ]
        return sum(self._publish(e.msg_id, e.topic, e.payload) for e in due)

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def _publish(
        self,
        msg_id: str,
        topic: str,
        payload: bytes,
        *,
        skip_if_sent_on_this_connection: bool = False,
    ) -> bool:
        with self._send_lock:
            connection = self._transport.connection_count
            # Checked under the lock: a send() racing the on-connect flush publishes once.
            if skip_if_sent_on_this_connection and self._sent_on.get(msg_id) == connection:
                return False
            try:
                self._transport.publish(topic, payload, msg_id=msg_id, qos=1)
            except TransportError:  # NotConnected included: it stays stored for the next try
                return False
            self._sent_on[msg_id] = connection
            self._outbox.mark_sent(msg_id, self._clock())
            return True
