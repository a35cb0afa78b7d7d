"""Which coordinator instance owns which SecAgg+ cohort, and the cohort topics it reads.

When a round forms its cohorts (``CohortsFormed``), the instance running the round takes a
lease ``cohort:<task>:<round>:<index>`` per cohort (``store.leases``) and subscribes to
each cohort's topic (``topics.cohort_up_filter``) before any plan names it, so the members'
replies reach this instance and no other. The leases are renewed with the task's (every
sync) and dropped when the round ends (their names are never claimed again, so the rows
go too); the subscriptions stay a stage window longer (``linger_s``), so that a straggler's
reply still gets its LATE ack rather than no answer at all, and then go.

By default the round's owner runs all its cohorts in one ``RoundMachine``; with ``[cluster]
spread_cohorts`` it hands some to other instances (``cohort_spread``), which claim those
cohorts' leases and read their topics, and it owns and reads only the rest. A cohort lease
this instance finds held by another is logged and the cohort still runs here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from fedrt.coordinator.errors import LeaseLost
from fedrt.coordinator.records import LeaseRecord
from fedrt.coordinator.store.base import Store
from fedrt.protocol.topics import cohort_up_filter

log = logging.getLogger(__name__)

COHORT_LEASE_PREFIX = "cohort:"
# A straggler's reply comes at most a stage window after its round ended.
DEFAULT_LINGER_S = 60.0

# ``follow(filters, on)``: subscribe (on) or unsubscribe the link to MQTT topic filters.
FollowFn = Callable[[Sequence[str], bool], None]


def cohort_lease_name(task_id: str, round_id: int, index: int) -> str:
    return f"{COHORT_LEASE_PREFIX}{task_id}:{round_id}:{index}"


@dataclass(slots=True)
class _RoundCohorts:
    round_id: int
    filters: tuple[str, ...]
    leases: list[LeaseRecord] = field(default_factory=list)


class CohortOwnership:
    """One instance's cohort leases and cohort-topic subscriptions, by task."""

    def __init__(
        self,
        store: Store,
        instance_id: str | None,
        follow: FollowFn | None,
        *,
        lease_s: float,
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        # No instance id (no task leases): subscriptions only, as one instance needs.
        self.store = store
        self.instance_id = instance_id
        self.follow = follow
        self.lease_s = lease_s
        self.linger_s = linger_s
        self._running: dict[str, _RoundCohorts] = {}
        # (when to unsubscribe, filters) of ended rounds, in order.
        self._lingering: list[tuple[float, tuple[str, ...]]] = []

    def formed(
        self,
        task_id: str,
        round_id: int,
        keys: Sequence[str],
        now: float,
        handed: Collection[int] = (),
    ) -> None:
        """A round of ``task_id`` formed cohorts with topic ``keys``: own and read them,
        but those ``handed`` to other instances (``cohort_spread``)."""
        self.ended(task_id, now)  # a round left unfinished (never, but bounded if so)
        mine = [i for i in range(len(keys)) if i not in handed]
        entry = _RoundCohorts(round_id, tuple(cohort_up_filter(keys[i]) for i in mine))
        if self.instance_id is not None:
            for index in mine:
                name = cohort_lease_name(task_id, round_id, index)
                lease = self.store.claim_lease(name, self.instance_id, now=now, ttl=self.lease_s)
                if lease is None:
                    log.warning("cohort lease %s is held by another instance", name)
                else:
                    entry.leases.append(lease)
        self._running[task_id] = entry
        if self.follow is not None and entry.filters:
            self.follow(entry.filters, True)

    def ended(self, task_id: str, now: float) -> None:
        """The task's round ended (or the task left this instance): drop its cohort leases,
        keep reading its cohort topics for ``linger_s``."""
        entry = self._running.pop(task_id, None)
        if entry is None:
            return
        for lease in entry.leases:
            self.store.drop_lease(lease)
        if entry.filters:
            self._lingering.append((now + self.linger_s, entry.filters))

    def renew(self, now: float) -> list[str]:
        """Renew every held cohort lease (with the task leases); the tasks whose cohort
        lease another instance took (logged: this instance keeps running them)."""
        lost: list[str] = []
        for task_id, entry in self._running.items():
            kept: list[LeaseRecord] = []
            for lease in entry.leases:
                try:
                    kept.append(self.store.renew_lease(lease, now=now, ttl=self.lease_s))
                except LeaseLost:
                    log.warning("cohort lease %s lost to another instance", lease.name)
                    lost.append(task_id)
            entry.leases = kept
        return lost

    def tick(self, now: float) -> None:
        """Unsubscribe the cohort topics whose linger has passed."""
        due = [filters for at, filters in self._lingering if at <= now]
        if not due:
            return
        self._lingering = [(at, f) for at, f in self._lingering if at > now]
        if self.follow is not None:
            self.follow(tuple(f for filters in due for f in filters), False)

    def filters(self) -> list[str]:
        """Every cohort topic filter read now (running and lingering rounds)."""
        running = [f for e in self._running.values() for f in e.filters]
        return running + [f for _, filters in self._lingering for f in filters]

    def leases(self, task_id: str) -> list[LeaseRecord]:
        entry = self._running.get(task_id)
        return list(entry.leases) if entry is not None else []


__all__ = [
    "COHORT_LEASE_PREFIX", "DEFAULT_LINGER_S", "CohortOwnership", "FollowFn",
    "cohort_lease_name",
]  # fmt: skip
