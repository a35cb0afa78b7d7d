"""Which coordinator instance runs which task: one lease per task in the shared store.

Several ``fedrt coordinator serve`` processes on one database serve one fleet. Each running
task's rounds belong to the instance holding the lease ``task:<id>`` (``store.leases``); the
others leave that task's device messages to it. The owner renews its leases every third of
their life, and every write that decides a round (its start, a stage, its commit or end) is
fenced by a renewal inside the same transaction, so an owner that lost its lease (paused
past the expiry, cut off from the database) writes nothing more: two instances never both
commit a round. When an owner dies, its leases expire and the next sync of another instance
claims them, abandons the round the dead one left open and waits for the devices.

Devices learn that their round was lost from the coordinator's retained presence (``online
<incarnation>``). With several instances the incarnation must be one value that all of them
publish, changing only when work was lost: it is a digest of the epochs of the task leases
past their first tenure, so it changes when a lease changes hands or a restarted process
takes its tasks back (a ``fresh`` claim), and not when an instance starts, a task is created
or a lease is merely renewed. A change makes every device in a round check in again, whichever
task it serves: the price of one presence topic for the fleet.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from pathlib import Path

from fedrt.coordinator.errors import LeaseLost
from fedrt.coordinator.records import LeaseRecord
from fedrt.coordinator.store.base import Store

log = logging.getLogger(__name__)

LEASE_PREFIX = "task:"
# A dead instance's tasks move within one lease plus one sync (15 + 5 s): well inside the
# minute a round's devices wait, while a renewal every 5 s is a negligible load on the store.
DEFAULT_LEASE_S = 15.0


def lease_name(task_id: str) -> str:
    return LEASE_PREFIX + task_id


def instance_id(data_dir: Path, configured: str | None) -> str:
    """The configured id, else one made of the host's name and the data dir: stable across
    restarts (a restarted instance takes its own tasks back at once), different for
    instances on other hosts even when they share a data dir. Set it where hostnames are
    not stable (containers)."""
    if configured is not None:
        return configured
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
    place = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{host}-{place}"


def fleet_incarnation(leases: list[LeaseRecord]) -> str:
    """The presence value every instance publishes (see the module docstring)."""
    lost = sorted((x.name, x.epoch) for x in leases if x.name.startswith(LEASE_PREFIX))
    text = ";".join(f"{name}={epoch}" for name, epoch in lost if epoch > 1)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TaskOwnership:
    """The task leases one instance holds, and the sync that renews and claims them."""

    def __init__(self, store: Store, instance_id: str, *, lease_s: float = DEFAULT_LEASE_S):
        self.store = store
        self.instance_id = instance_id
        self.lease_s = lease_s
        self._held: dict[str, LeaseRecord] = {}
        # Tasks this process has not claimed yet: its first claim starts a new tenure.
        self._claimed_before: set[str] = set()
        self._next_sync = 0.0
        self.incarnation = fleet_incarnation(store.list_leases())

    def holds(self, task_id: str) -> bool:
        return task_id in self._held

    def held(self) -> list[str]:
        return sorted(self._held)

    def claim(self, task_id: str, now: float) -> bool:
        """Take the task (True) unless another live instance holds it."""
        fresh = task_id not in self._claimed_before
        lease = self.store.claim_lease(
            lease_name(task_id), self.instance_id, now=now, ttl=self.lease_s, fresh=fresh
        )
        if lease is None:
            self._held.pop(task_id, None)
            return False
        self._claimed_before.add(task_id)
        self._held[task_id] = lease
        self.refresh()  # a new tenure may have begun: the presence value follows
        return True

    def fence(self, task_id: str, now: float) -> None:
        """Renew the task's lease; inside a store transaction, the other writes commit only
        if this instance still owns the task. ``LeaseLost`` (and the task forgotten) if not."""
        lease = self._held.get(task_id)
        if lease is None:
            raise LeaseLost(f"task {task_id!r} is not owned by {self.instance_id!r}")
        try:
            self._held[task_id] = self.store.renew_lease(lease, now=now, ttl=self.lease_s)
        except LeaseLost:
            self._held.pop(task_id, None)
            raise

    def sync_due(self, now: float) -> bool:
        if now < self._next_sync:
            return False
        self._next_sync = now + self.lease_s / 3
        return True

    def renew(self, now: float) -> list[str]:
        """Renew every held lease; returns the tasks lost to another instance."""
        lost = []
        for task_id in list(self._held):
            try:
                self.fence(task_id, now)
            except LeaseLost:
                log.warning("task %s: lease lost to another coordinator instance", task_id)
                lost.append(task_id)
        self.refresh()
        return lost

    def release(self, task_id: str) -> None:
        lease = self._held.pop(task_id, None)
        if lease is not None:
            self.store.release_lease(lease)

    def release_all(self) -> None:
        for task_id in list(self._held):
            self.release(task_id)

    def refresh(self) -> str:
        """Re-read the fleet's presence value (after a takeover, here or elsewhere)."""
        self.incarnation = fleet_incarnation(self.store.list_leases())
        return self.incarnation


__all__ = [
    "DEFAULT_LEASE_S", "LEASE_PREFIX", "TaskOwnership", "fleet_incarnation",
    "instance_id", "lease_name",
]  # fmt: skip
