"""Leases: rows with an owner and an expiry through which coordinator instances share work.

One instance owns a lease (a task's rounds) until it expires; the owner renews it well
before then. A claim marked ``fresh`` starts a new tenure even over the owner's own lease
(a restarted process: whatever the old one was doing died with it).

An expired lease goes to the first instance that claims it, and its ``epoch``
grows, so a write fenced with the old (owner, epoch) fails with ``LeaseLost`` even when
the old owner comes back from a pause still believing it owns the work.

Both SQL stores share the statements below (one ``INSERT .. ON CONFLICT .. RETURNING``, atomic
on SQLite and, under SERIALIZABLE, on PostgreSQL, where the loser of a race gets a
``ConflictError`` that a claim reads as "someone else has it"). The in-memory store decides
with ``claim_decision``, the same rule written once in Python.
"""

from __future__ import annotations

from typing import Any

from fedrt.coordinator.errors import ConflictError, LeaseLost, StoreError
from fedrt.coordinator.records import LeaseRecord

_CLAIM = (
    "INSERT INTO leases (name, owner, epoch, expires_at) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (name) DO UPDATE SET "
    "epoch = CASE WHEN leases.owner = excluded.owner AND ? = 0 THEN leases.epoch "
    "ELSE leases.epoch + 1 END, "
    "owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE leases.owner = excluded.owner OR leases.expires_at <= ? "
    "RETURNING name, owner, epoch, expires_at"
)
_RENEW = (
    "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND epoch = ? "
    "RETURNING name, owner, epoch, expires_at"
)
_LIST = "SELECT name, owner, epoch, expires_at FROM leases ORDER BY name"
# Released leases keep their epoch (the next owner's is one more) and expire at once.
_RELEASE = "UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ? AND epoch = ?"
_DROP = "DELETE FROM leases WHERE name = ? AND owner = ? AND epoch = ?"


def check_ttl(ttl: float) -> None:
    if not 0 < ttl < 86_400:
        raise StoreError(f"a lease lasts between 0 and 86400 s, not {ttl!r}")


def lease_row(r: Any) -> LeaseRecord:
    return LeaseRecord(name=r[0], owner=r[1], epoch=int(r[2]), expires_at=float(r[3]))


def claim_decision(
    held: LeaseRecord | None, name: str, owner: str, *, now: float, ttl: float, fresh: bool
) -> LeaseRecord | None:
    """The lease after ``owner`` claims ``name`` at ``now``, or None if another holds it."""
    if held is None:
        return LeaseRecord(name=name, owner=owner, epoch=1, expires_at=now + ttl)
    if held.owner == owner:
        epoch = held.epoch + 1 if fresh else held.epoch
        return LeaseRecord(name=name, owner=owner, epoch=epoch, expires_at=now + ttl)
    if held.expires_at <= now:
        return LeaseRecord(name=name, owner=owner, epoch=held.epoch + 1, expires_at=now + ttl)
    return None


def lost(lease: LeaseRecord) -> LeaseLost:
    return LeaseLost(
        f"lease {lease.name!r} (epoch {lease.epoch}) is no longer held by {lease.owner!r}"
    )


class SqlLeases:
    """The lease methods of ``Store`` for the SQL stores (mixed into ``SqliteStore``)."""

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def claim_lease(
        self, name: str, owner: str, *, now: float, ttl: float, fresh: bool = False
    ) -> LeaseRecord | None:
        check_ttl(ttl)
        try:
            rows = self._q(_CLAIM, (name, owner, now + ttl, int(fresh), now))
        except ConflictError:  # lost a race with another instance's claim
            return None
        return lease_row(rows[0]) if rows else None

    def renew_lease(self, lease: LeaseRecord, *, now: float, ttl: float) -> LeaseRecord:
        check_ttl(ttl)
        rows = self._q(_RENEW, (now + ttl, lease.name, lease.owner, lease.epoch))
        if not rows:
            raise lost(lease)
        return lease_row(rows[0])

    def release_lease(self, lease: LeaseRecord) -> None:
        self._q(_RELEASE, (lease.name, lease.owner, lease.epoch))

    def drop_lease(self, lease: LeaseRecord) -> None:
        self._q(_DROP, (lease.name, lease.owner, lease.epoch))

    def list_leases(self) -> list[LeaseRecord]:
        return [lease_row(r) for r in self._q(_LIST)]


__all__ = ["SqlLeases", "check_ttl", "claim_decision", "lease_row", "lost"]
