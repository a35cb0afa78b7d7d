"""The hook where a round driver (the round state machine's asyncio-free adapter) plugs in.

The service owns all I/O: it authenticates and meters device messages before handing them
to ``on_device_message``, calls ``on_tick`` every ``tick_interval_s`` for deadlines, and
offers ``DriverContext.publish`` to send. A driver only decides; its calls must not block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fedrt.coordinator.devices.enrollment import Enrollment
from fedrt.coordinator.models.catalog import ModelCatalog
from fedrt.coordinator.models.evaluator import HeldOutEvaluator
from fedrt.coordinator.records import RoundRecord, TaskRecord
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.tasks.manager import TaskManager
from fedrt.coordinator.tasks.ownership import TaskOwnership
from fedrt.protocol.topics import UpTopic

PublishFn = Callable[[str, bytes, int, bool], None]


class RoundObserver:
    """Where a driver reports round events for monitoring (the service's Prometheus series,
    ``telemetry.series``). This base class ignores them, so a driver runs without monitoring."""

    def stage_changed(
        self, task_id: str, round_no: int, previous: str, stage: str, at: float
    ) -> None:
        """The round left stage ``previous`` for ``stage`` at time ``at``."""

    def round_ended(self, record: RoundRecord) -> None:
        """The round committed or was abandoned; ``record`` is the round as stored then."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverContext:
    """What a driver may use: persistent state, models, devices, the clock and the outbox."""

    store: Store
    catalog: ModelCatalog
    tasks: TaskManager
    enrollment: Enrollment
    clock: Callable[[], float]
    # publish(topic, payload, qos, retain): queued and sent in order by the service; QoS 1
    # messages survive broker reconnects (they are resent after the session resumes).
    publish: PublishFn
    # URL prefix devices fetch models from, e.g. "http://host:8080/v1/models/".
    model_url_prefix: str
    # The operator's pace steering (``[pace]`` in coordinator.toml, FEDRT_PACE_*, --pace-*).
    pace: PaceConfig = field(default_factory=PaceConfig)
    # Round events for monitoring; the default ignores them.
    observer: RoundObserver = field(default_factory=RoundObserver)
    # The task leases of this instance (several instances on one store); None: this
    # process is the only coordinator of its store and runs every task (in-memory tests).
    ownership: TaskOwnership | None = None
    # follow(filters, on): (un)subscribe the service's MQTT link to topic filters, in order
    # with ``publish`` (the cohort topics of the rounds this instance runs); None: no link.
    follow: Callable[[Sequence[str], bool], None] | None = None
    # ``[cluster] spread_cohorts``: hand SecAgg+ cohorts to other live instances
    # (``rounds.cohort_spread``); only with ``ownership``.
    spread_cohorts: bool = False
    # The operator's held-out set (``serve --eval-data``): candidates of the tasks whose
    # model fits it are evaluated on it before promotion (``rounds.rollout``); None: none.
    held_out: HeldOutEvaluator | None = None


class RoundDriver(ABC):
    """Runs rounds for the running tasks. Errors it raises should be ``FedrtError``s:
    the service logs them, counts them and carries on with the next message."""

    @abstractmethod
    def on_device_message(self, up: UpTopic, payload: bytes, now: float) -> None:
        """A message from an enrolled, non-revoked device, already size- and rate-checked;
        ``up``: who sent it on which channel, and ``up.cohort`` the key of the cohort topic
        it came under (None: a plain up-topic, or one another instance forwarded)."""

    @abstractmethod
    def on_tick(self, now: float) -> None:
        """Periodic: close stages whose deadline passed, start rounds, steer pace."""

    @abstractmethod
    def on_task_change(self, task: TaskRecord) -> None:
        """A task was created, started, paused, resumed, cancelled or changed model."""

    @abstractmethod
    def on_shutdown(self, now: float) -> None:
        """Persist whatever in-flight state the store does not yet hold."""

    def on_cohorts_offered(self, task_id: str, now: float) -> None:  # noqa: B027
        """A round's owner offered cohorts of ``task_id`` to this instance (its nudge on the
        coordinator-only offer topic): take them now. Drivers that run none ignore it."""


DriverFactory = Callable[[DriverContext], RoundDriver]

__all__ = ["DriverContext", "DriverFactory", "PublishFn", "RoundDriver", "RoundObserver"]
