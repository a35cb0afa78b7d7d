"""One SecAgg+ round's cohorts spread over the live coordinator instances (``[cluster]
spread_cohorts``): who is alive, handing cohorts out, running them, and the results.

Every instance renews a lease ``instance:<id>`` on its sync: the live instances are the
holders of unexpired ones. When a round of an instance forms its cohorts and others are
alive, cohort ``i`` goes to the ``i mod n``-th live instance (the round's owner among them,
so it keeps a fair share and at least cohort 0's), provided every member reads its cohort
topic. For each cohort handed out, the round's owner writes its ``CohortSetup`` and the
round's offer (which instance runs which cohort) to the task's state in the store, then
nudges each instance it offered cohorts to on that instance's coordinator-only offer topic
(``protocol.relay_topics``). The round's ``CohortsFormed`` comes before any of its plans, so
the offers are in the store and the nudges published ahead of the plans on the same link.

On a nudge, and on its sync for a nudge that was lost, an instance reads the offers of the
task (on its sync, of every running task), claims the lease
``cohort:<task>:<round>:<index>`` of each cohort offered to it, subscribes to the cohort's
topic and runs it (``RemoteCohort``): its requests go to the members' inboxes, with message
ids from a range the round's owner never uses. Its ``CohortResult`` is written to the store
in one transaction with a renewal of the cohort lease, so an instance that lost the lease
writes nothing (as ``TaskOwnership.fence`` does for rounds).

The round's owner reads the results on its syncs and gives them to its machine
(``delegation``); a cohort whose lease lapsed without a result, or that no instance claimed
within a lease, is left out with the reason, and the round commits without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedrt.coordinator.errors import LeaseLost, StoreError
from fedrt.coordinator.records import LeaseRecord, TaskStatus
from fedrt.coordinator.rounds.cohort_owners import FollowFn, cohort_lease_name
from fedrt.coordinator.rounds.cohort_results import CohortResult
from fedrt.coordinator.rounds.commands import Command, Send
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.remote_cohorts import (
    CohortSetup,
    RemoteCohort,
    remote_first_msg_id,
    setup_of,
)
from fedrt.coordinator.store.base import Store
from fedrt.errors import FedrtError
from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.topics import cohort_up_filter

log = logging.getLogger(__name__)

INSTANCE_LEASE_PREFIX = "instance:"
OFFERS_KEY = "cohort_offers"
# A straggler's reply still gets its LATE ack this long after the cohort ended.
LINGER_S = 60.0

# send(device_id, message): publish one message to a device's inbox.
SendFn = Callable[[Send], None]
# nudge(instance_id, task_id): tell an instance that cohorts of the task were offered to it.
NudgeFn = Callable[[str, str], None]


def setup_key(round_id: int, index: int) -> str:
    return f"cohort_setup:{round_id}:{index}"


def result_key(round_id: int, index: int) -> str:
    return f"cohort_result:{round_id}:{index}"


def offered(store: Store, task_id: str, round_id: int) -> dict[int, str]:
    """The instance each cohort of round ``round_id`` was handed to, by index (stored
    offer; empty when that round handed none out or the offer is unreadable)."""
    offer = store.load_task_state(task_id, OFFERS_KEY)
    if offer is None or offer.get("round_id") != round_id:
        return {}
    try:
        return {int(i): str(who) for i, who in dict(offer["cohorts"]).items()}
    except (KeyError, TypeError, ValueError):
        return {}


def forget_round(store: Store, task_id: str, round_id: int) -> None:
    """Delete the cohort set-ups, results and offer that round ``round_id`` of ``task_id``
    wrote to the task's state (in the owner's transaction that records the round's end), so
    the state does not grow by a round's cohorts each round."""
    offer = store.load_task_state(task_id, OFFERS_KEY)
    if offer is None or offer.get("round_id") != round_id:
        return
    indices = offered(store, task_id, round_id)  # unreadable: the offer goes, all the same
    keys = [k for i in indices for k in (setup_key(round_id, i), result_key(round_id, i))]
    store.delete_task_state(task_id, [*keys, OFFERS_KEY])


def live_instances(leases: Sequence[LeaseRecord], now: float) -> list[str]:
    """The ids of the instances whose ``instance:`` lease is unexpired, sorted."""
    return sorted(
        x.owner for x in leases if x.name.startswith(INSTANCE_LEASE_PREFIX) and x.expires_at > now
    )


def assign(n_cohorts: int, instances: Sequence[str]) -> list[str]:
    """The instance that runs each cohort: round robin over ``instances``, sorted."""
    ordered = sorted(instances)
    return [ordered[i % len(ordered)] for i in range(n_cohorts)]


@dataclass(slots=True)
class _Handed:
    """A cohort this instance's round handed out."""

    index: int
    key: str
    since: float


@dataclass(slots=True)
class _Running:
    """A cohort of another instance's round that this instance runs."""

    task_id: str
    runner: RemoteCohort
    lease: LeaseRecord
    filter: str


class CohortSpread:
    """One instance's side of spread cohorts: its own rounds' and the ones it runs."""

    def __init__(
        self,
        store: Store,
        instance_id: str,
        follow: FollowFn | None,
        send: SendFn,
        *,
        lease_s: float,
        nudge: NudgeFn | None = None,
    ) -> None:
        self.store = store
        self.nudge = nudge
        self.instance_id = instance_id
        self.follow = follow
        self.send = send
        self.lease_s = lease_s
        self._instance: LeaseRecord | None = None
        self._handed: dict[str, tuple[int, list[_Handed]]] = {}  # task -> (round, cohorts)
        self._running: dict[str, _Running] = {}  # cohort key -> run
        self._done: set[str] = set()  # lease names of cohorts run here that ended
        self._lingering: list[tuple[float, str]] = []

    # --- liveness --------------------------------------------------------------------------

    def beat(self, now: float) -> None:
        """Renew this instance's ``instance:`` lease (on every sync)."""
        name = INSTANCE_LEASE_PREFIX + self.instance_id
        lease = self.store.claim_lease(name, self.instance_id, now=now, ttl=self.lease_s)
        if lease is None:  # another process runs under this id
            log.warning("instance lease %s is held by another process", name)
        self._instance = lease

    def stop(self) -> None:
        if self._instance is not None:
            self.store.drop_lease(self._instance)
            self._instance = None

    # --- the round's owner -----------------------------------------------------------------

    def hand_out(self, task_id: str, machine: RoundMachine, now: float) -> list[int]:
        """Right after ``machine`` formed its cohorts: hand some to other live instances
        (written to the store); the indices kept here. Nothing is handed out when no other
        instance is alive or a cohort's members do not all read their cohort topic."""
        cohorts = machine.cohorts
        deadline = machine.deadline
        if cohorts is None or deadline is None or len(cohorts.cohorts) < 2:
            return []
        instances = live_instances(self.store.list_leases(), now)
        if self.instance_id not in instances:
            instances.append(self.instance_id)
        owners = assign(len(cohorts.cohorts), instances)
        handed = [
            c.index
            for c in cohorts.cohorts
            if owners[c.index] != self.instance_id and machine.reads_cohort_topics(c.members)
        ]
        if not handed:
            return []
        cfg = machine.config
        # Training, four SecAgg+ stages, and a lease for the result to reach the store.
        results_by = deadline + 4 * cfg.stage_timeout + self.lease_s
        away = (cfg.stage_timeout, 2 * cfg.stage_timeout)
        with self.store.transaction():
            for i in handed:
                first = remote_first_msg_id(machine.next_msg_id, i)
                setup = setup_of(cohorts.cohorts[i], task_id=task_id, round_id=cfg.round_id,
                                 training_deadline=deadline, stage_timeout=cfg.stage_timeout,
                                 floor=cohorts.floor(), away=away, first_msg_id=first)  # fmt: skip
                self.store.save_task_state(task_id, setup_key(cfg.round_id, i), setup.to_json())
            offer = {"round_id": cfg.round_id, "cohorts": {str(i): owners[i] for i in handed}}
            self.store.save_task_state(task_id, OFFERS_KEY, offer)
        if self.nudge is not None:  # the offers are committed: the receivers find them
            for instance in sorted({owners[i] for i in handed}):
                try:
                    self.nudge(instance, task_id)
                except FedrtError as exc:  # its sync takes the offer a little later
                    log.warning("cannot nudge instance %s: %s", instance, exc)
        machine.delegate(handed, results_by=results_by)
        self._handed[task_id] = (
            cfg.round_id,
            [_Handed(i, cohorts.cohorts[i].key, now) for i in handed],
        )
        return handed

    def collect(self, task_id: str, machine: RoundMachine, now: float) -> list[Command]:
        """The commands ``machine`` returns for the results (or lapsed leases) of the
        cohorts its round handed out, read from the store now."""
        entry = self._handed.get(task_id)
        if entry is None or machine.finished:
            self._handed.pop(task_id, None)
            return []
        round_id, handed = entry
        leases = {x.name: x for x in self.store.list_leases()}  # before the results
        out: list[Command] = []
        still: list[_Handed] = []
        for h in handed:
            result = self._result_of(task_id, round_id, h, leases, now)
            if result is None:
                still.append(h)
                continue
            if result.failed:
                log.warning("task %s round %d: cohort %d left out: %s", task_id, round_id,
                            h.index, result.failed)  # fmt: skip
            try:
                out.extend(machine.remote_result(result, now))
            except ProtocolError as exc:
                log.warning("task %s cohort %d: result refused: %s", task_id, h.index, exc)
        self._handed[task_id] = (round_id, still)
        return out

    def _result_of(
        self,
        task_id: str,
        round_id: int,
        h: _Handed,
        leases: dict[str, LeaseRecord],
        now: float,
    ) -> CohortResult | None:
        stored = self.store.load_task_state(task_id, result_key(round_id, h.index))
        if stored is not None:
            try:
                return CohortResult.from_json(stored)
            except StoreError as exc:
                return CohortResult(index=h.index, key=h.key, failed=f"unreadable result: {exc}")
        lease = leases.get(cohort_lease_name(task_id, round_id, h.index))
        if lease is not None and lease.expires_at <= now:
            why = f"its owner {lease.owner} let the cohort lease lapse without a result"
            return CohortResult(index=h.index, key=h.key, failed=why)
        if lease is None and now > h.since + 2 * self.lease_s:
            return CohortResult(index=h.index, key=h.key, failed="no instance took the cohort")
        return None

    def ended(self, task_id: str) -> None:
        self._handed.pop(task_id, None)

    # --- cohorts run here ------------------------------------------------------------------

    def sync(self, now: float) -> None:
        """Beat, renew the cohort leases held, and take the cohorts offered to this
        instance whose nudge did not arrive."""
        self.beat(now)
        for key, run in list(self._running.items()):
            try:
                run.lease = self.store.renew_lease(run.lease, now=now, ttl=self.lease_s)
            except LeaseLost:
                log.warning("cohort lease %s lost: the cohort stops here", run.lease.name)
                self._stop_running(key, now)
        for task in self.store.list_tasks():
            if task.status is TaskStatus.RUNNING:
                self.take_offers(task.task_id, now)

    def take_offers(self, task_id: str, now: float) -> None:
        """Claim and start reading the cohorts of ``task_id``'s round offered to this
        instance (on the owner's nudge, or on the sync); one try per cohort."""
        offer = self.store.load_task_state(task_id, OFFERS_KEY)
        if offer is None:
            return
        try:
            round_id = int(offer["round_id"])
            mine = [int(i) for i, who in dict(offer["cohorts"]).items() if who == self.instance_id]
        except (KeyError, TypeError, ValueError):
            log.warning("task %s: unreadable cohort offer", task_id)
            return
        for index in mine:
            name = cohort_lease_name(task_id, round_id, index)
            if name in self._done or any(r.lease.name == name for r in self._running.values()):
                continue
            self._done.add(name)  # one try: a lost or refused cohort is not taken again
            stored = self.store.load_task_state(task_id, setup_key(round_id, index))
            if stored is None:
                continue
            try:
                setup = CohortSetup.from_json(stored)
            except StoreError as exc:
                log.warning("task %s cohort %d: %s", task_id, index, exc)
                continue
            if now >= setup.training_deadline + 4 * setup.stage_timeout:
                continue  # its round is over
            lease = self.store.claim_lease(name, self.instance_id, now=now, ttl=self.lease_s)
            if lease is None:
                continue
            run = _Running(task_id, RemoteCohort(setup), lease, cohort_up_filter(setup.key))
            self._running[setup.key] = run
            if self.follow is not None:
                self.follow([run.filter], True)
            log.info("task %s: running cohort %d of round %d", task_id, index, round_id)

    def next_deadline(self) -> float | None:
        """The earliest stage deadline of the cohorts run here (None: none runs)."""
        return min((r.runner.deadline for r in self._running.values()), default=None)

    def runs(self, key: str) -> bool:
        return key in self._running

    def receive(self, key: str, device_id: str, message: rm.DeviceMessage, now: float) -> None:
        """A message under cohort topic ``key`` of a cohort run here."""
        run = self._running[key]
        try:
            sends = run.runner.receive(device_id, message, now)
        except (ProtocolError, FedrtError) as exc:
            log.info("cohort %s: %s refused: %s", key, device_id, exc)
            self.send(run.runner.rejection(device_id, message, exc))
            return
        for s in sends:
            self.send(s)
        self._after(key, now)

    def tick(self, now: float) -> None:
        for key, run in list(self._running.items()):
            if now >= run.runner.deadline:
                for s in run.runner.tick(now):
                    self.send(s)
                self._after(key, now)
        due = [f for at, f in self._lingering if at <= now]
        if due:
            self._lingering = [(at, f) for at, f in self._lingering if at > now]
            if self.follow is not None:
                self.follow(due, False)

    def _after(self, key: str, now: float) -> None:
        run = self._running[key]
        result = run.runner.result
        if result is None:
            return
        s = run.runner.setup
        try:
            with self.store.transaction():
                run.lease = self.store.renew_lease(run.lease, now=now, ttl=self.lease_s)
                self.store.save_task_state(
                    run.task_id, result_key(s.round_id, s.index), result.to_json()
                )
        except LeaseLost:
            log.warning("cohort lease %s lost: its result is not written", run.lease.name)
        self._stop_running(key, now)

    def _stop_running(self, key: str, now: float) -> None:
        run = self._running.pop(key)
        try:
            self.store.drop_lease(run.lease)
        except StoreError as exc:
            log.warning("cohort lease %s not dropped: %s", run.lease.name, exc)
        self._lingering.append((now + LINGER_S, run.filter))

    def shutdown(self, now: float) -> None:
        """Stopping: the cohorts run here end as failed (results written), leases go."""
        for key, run in list(self._running.items()):
            run.runner.give_up("its owner stopped")
            self._after(key, now)
        self.stop()


__all__ = [
    "INSTANCE_LEASE_PREFIX", "OFFERS_KEY", "CohortSpread", "NudgeFn", "assign", "forget_round",
    "live_instances", "offered", "result_key", "setup_key",
]  # fmt: skip
