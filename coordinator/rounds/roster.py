"""Who is in a coordinator round: each device's status, SecAgg+ index, answers and counts."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedrt.coordinator.rounds.commands import RoundMetrics, RoundStatus
from fedrt.protocol import round_messages as rm


class DeviceStatus(enum.Enum):
    CHECKED_IN = "checked_in"
    ACTIVE = "active"  # selected and still expected to answer
    CUT = "cut"  # missed a deadline, or not needed once the goal was met
    UNSELECTED = "unselected"  # checked in, not drawn for the cohort
    WITHDRAWN = "withdrawn"  # sent Abandon, or checked in again having lost its state
    DELEGATED = "delegated"  # in a cohort another instance runs (``remote_cohorts``)


@dataclass(slots=True)
class RoundDevice:
    device_id: str
    # Changed only through ``RoundRoster.set_status``, which keeps the roster's counts.
    status: DeviceStatus = DeviceStatus.CHECKED_IN
    client_id: int = -1  # SecAgg+ index within its cohort
    cohort: int = 0
    answered: set[rm.Stage] = field(default_factory=set)  # added by ``RoundRoster.answer``
    # Message ids processed from this device in this round (QoS 1 redeliveries repeat them).
    seen: set[int] = field(default_factory=set)


class RoundRoster:
    """The devices of one round, in check-in order."""

    __slots__ = (
        "_active", "_answered", "_by_client", "_devices", "_discarded", "bytes_received",
        "dropped",
    )  # fmt: skip

    def __init__(self) -> None:
        self._devices: dict[str, RoundDevice] = {}
        self._by_client: dict[int, RoundDevice] = {}
        self.dropped: dict[str, int] = {}
        self.bytes_received = 0
        # (device id, message id) of refused answers: a redelivered one counts once.
        self._discarded: set[tuple[str, int]] = set()
        # Kept as statuses and answers change, never recounted: the machine weighs them after
        # every answer, and a recount over the cohort would make each stage quadratic.
        self._active = 0  # devices ACTIVE
        self._answered: dict[rm.Stage, int] = {}  # ACTIVE devices that answered each stage

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, device_id: str) -> RoundDevice | None:
        return self._devices.get(device_id)

    def add(self, device_id: str, msg_id: int) -> RoundDevice:
        dev = RoundDevice(device_id=device_id, seen={msg_id})
        self._devices[device_id] = dev
        return dev

    def remove(self, device_id: str) -> None:
        dev = self._devices.pop(device_id)
        if dev.status is DeviceStatus.ACTIVE:
            self._count(dev, -1)

    def ids(self) -> list[str]:
        return list(self._devices)

    def select(self, order: Sequence[str]) -> None:
        """Make ``order`` the cohort: SecAgg+ index = position, all ACTIVE."""
        for client, device_id in enumerate(order):
            dev = self._devices[device_id]
            dev.client_id = client
            self.set_status(dev, DeviceStatus.ACTIVE)
            self._by_client[client] = dev

    def unselect(self, device_id: str) -> None:
        """A device of the pool the cohort did not take: out of the round, still counted as
        checked in (the pool size is the DP sampling population)."""
        self.set_status(self._devices[device_id], DeviceStatus.UNSELECTED)

    def by_client(self, client: int) -> RoundDevice:
        return self._by_client[client]

    def set_cohorts(self, groups: Sequence[Sequence[str]]) -> None:
        """SecAgg+ cohorts: each device's cohort and its index in it."""
        for c, group in enumerate(groups):
            for client, device_id in enumerate(group):
                dev = self._devices[device_id]
                dev.cohort, dev.client_id = c, client

    def set_status(self, dev: RoundDevice, status: DeviceStatus) -> None:
        """``dev`` (one of this roster's) becomes ``status``."""
        step = (status is DeviceStatus.ACTIVE) - (dev.status is DeviceStatus.ACTIVE)
        dev.status = status
        if step:
            self._count(dev, step)

    def answer(self, dev: RoundDevice, stage: rm.Stage) -> None:
        """``dev`` (one of this roster's) answered ``stage``."""
        if stage in dev.answered:
            return
        dev.answered.add(stage)
        if dev.status is DeviceStatus.ACTIVE:
            self._answered[stage] = self._answered.get(stage, 0) + 1

    def n_active(self) -> int:
        """How many devices are ACTIVE (``len(active())``, without the walk)."""
        return self._active

    def n_answered(self, stage: rm.Stage) -> int:
        """How many ACTIVE devices answered ``stage`` (without a walk)."""
        return self._answered.get(stage, 0)

    def with_status(self, *statuses: DeviceStatus) -> list[RoundDevice]:
        return [d for d in self._devices.values() if d.status in statuses]

    def active(self) -> list[RoundDevice]:
        return self.with_status(DeviceStatus.ACTIVE)

    def drop(self, dev: RoundDevice, status: DeviceStatus, during: str) -> None:
        """``dev`` leaves the round as ``status``, counted as a dropout of state ``during``."""
        self.set_status(dev, status)
        self.dropped[during] = self.dropped.get(during, 0) + 1

    def discard(self, device_id: str, msg_id: int) -> None:
        """Count an answer refused as invalid (``RoundMetrics.discarded``)."""
        self._discarded.add((device_id, msg_id))

    def metrics(
        self, *, first: rm.Stage, included: int, started_at: float, now: float
    ) -> RoundMetrics:
        devs = self._devices.values()
        return RoundMetrics(
            checked_in=len(devs),
            selected=sum(d.client_id >= 0 for d in devs),
            reported=sum(first in d.answered for d in devs),
            included=included,
            dropped=tuple(sorted(self.dropped.items())),
            bytes_received=self.bytes_received,
            discarded=len(self._discarded),
            started_at=started_at,
            ended_at=now,
        )

    def status(
        self, *, round_id: int, state: str, deadline: float | None, stage: rm.Stage | None
    ) -> RoundStatus:
        """The round's counts now; ``stage``: the one the active devices are answering."""
        return RoundStatus(
            round_id=round_id,
            state=state,
            deadline=deadline,
            checked_in=len(self),
            active=self._active,
            answered=self.n_answered(stage) if stage else 0,
            dropped=sum(self.dropped.values()),
        )

    def _count(self, dev: RoundDevice, step: int) -> None:
        """``dev`` enters (``step`` 1) or leaves (-1) the ACTIVE devices' counts."""
        self._active += step
        for stage in dev.answered:
            self._answered[stage] = self._answered.get(stage, 0) + step


__all__ = ["DeviceStatus", "RoundDevice", "RoundRoster"]
