"""The served round driver in-process: a ``CoordinatorService`` on a data dir (store, blobs,
catalog, tasks) whose ``FederatedDriver`` publishes into a FIFO "broker", and SDK
``Participant`` devices that train instantly. Every message is encoded as on MQTT; the clock
is a number, so rounds are deterministic. A coordinator can be closed and a new one opened
on the same data dir (a restart) while the devices and the broker's queue live on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from paho.mqtt.client import topic_matches_sub

from fedrt.coordinator.config import ClusterConfig, EvaluationConfig, LimitsConfig, StoreConfig
from fedrt.coordinator.driver.base import PublishFn
from fedrt.coordinator.errors import CoordinatorError
from fedrt.coordinator.records import RoundStatus, TaskStatus
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.rounds.versions import flatten
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.service import CoordinatorService
from fedrt.coordinator.tasks import TaskSpec
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights
from fedrt.protocol import round_messages as rm
from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.round_codec import encode_message
from fedrt.protocol.topics import (
    device_inbox,
    device_up,
    device_up_cohort,
    parse_up_topic,
    task_announcement,
)
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import Participant, ParticipantState
from tests.coordinator.harness import make_config
from tests.coordinator.live_round import MODEL_DIR
from tests.coordinator.store_conformance import device

TASK = "t1"
# Short reconnect windows, long stage deadlines: every device is back before a round's
# check-in closes, so each round sees the same devices in the same order.
PACE = PaceConfig(min_delay=1.0, spread=1.0)
Trainer = Callable[[str, int, npt.NDArray[np.float32]], npt.NDArray[np.float64]]


def pull_to_targets(
    device_id: str, round_id: int, w: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """A ``Trainer``: each device pulls the weights a third of the way to its own target."""
    target = np.random.default_rng(int(device_id[-2:])).normal(0.0, 0.5, w.size)
    return (target - w.astype(np.float64)) / 3


def weights_of(svc: CoordinatorService, sha256: str) -> npt.NDArray[np.float32]:
    manifest = Manifest.from_dict(svc.store.get_model(sha256).manifest)
    return flatten(read_weights(svc.catalog.blobs.read(sha256), manifest))


class Coordinator:
    """One coordinator process: the service's parts and the served driver, not started."""

    def __init__(
        self,
        data_dir: Path,
        fleet: Fleet,
        store: StoreConfig | None = None,
        cluster: ClusterConfig | None = None,
        publish: PublishFn | None = None,
        evaluation: EvaluationConfig | None = None,
    ) -> None:
        # Many messages per device within a real-time second: the rate limit is not tested.
        limits = LimitsConfig(device_rate_per_s=1e6, device_burst=1_000_000)
        config = make_config(data_dir, limits=limits, pace=PACE, store=store or StoreConfig(),
                             cluster=cluster or ClusterConfig(),
                             evaluation=evaluation or EvaluationConfig())  # fmt: skip
        self.service = CoordinatorService(config, clock=lambda: fleet.now)
        ctx = dataclasses.replace(
            self.service.driver_context(), publish=publish or fleet.publish, follow=fleet.follow
        )
        self.driver = FederatedDriver(ctx, rng=fleet.rng, retry_delay_s=1.0)
        self.service.driver = self.driver

    def close(self) -> None:
        asyncio.run(self.service.stop())  # the driver persists, the store closes


class Fleet:
    """Devices, the broker between them and the coordinator, and the clock."""

    def __init__(self, n: int, trainer: Trainer, *, seed: int = 0) -> None:
        self.now = 1000.0
        self.trainer = trainer
        # The coordinator's RNG (selection order, rotation seeds): one stream across restarts,
        # as the test is about what the coordinator persists, not about its randomness.
        self.rng = np.random.default_rng(seed)
        self.ids = [f"dev-{i:02d}" for i in range(n)]
        self.keys = {d: identity_from_seed(bytes([i + 1]) * 32) for i, d in enumerate(self.ids)}
        self.devices = {
            d: Participant(pc.ParticipantConfig(device_id=d, task_id=TASK),
                           identity=self.keys[d], rng=np.random.default_rng([seed, i]))
            for i, d in enumerate(self.ids)
        }  # fmt: skip
        self.to_devices: deque[tuple[str, bytes]] = deque()
        self.to_coordinator: deque[tuple[str, bytes]] = deque()
        self.coordinator: Coordinator | None = None
        # The cohort topic filters the coordinators read (``follow``), and what the broker
        # dropped for want of a reader (a cohort topic nobody subscribed to).
        self.following: set[str] = set()
        self.followed: list[str] = []
        self.unread: list[str] = []

    # --- setting up -----------------------------------------------------------------------
    def open(
        self,
        data_dir: Path,
        store: StoreConfig | None = None,
        evaluation: EvaluationConfig | None = None,
    ) -> Coordinator:
        """A coordinator on ``data_dir``, its rows in ``store`` (None: SQLite there), with the
        held-out set ``evaluation`` names (``serve --eval-data``)."""
        self.coordinator = Coordinator(data_dir, self, store, evaluation=evaluation)
        return self.coordinator

    def create_task(self, **spec: object) -> str:
        svc = self.svc
        for d in self.ids:
            public = self.keys[d].public_key().public_bytes_raw()
            svc.store.add_device(dataclasses.replace(device(d), public_key=public))
        base = svc.catalog.add_export_dir(MODEL_DIR, actor="test", max_bytes=1 << 20)
        n = len(self.ids)
        fields: dict[str, object] = dict(goal_count=n, over_selection=1.0, min_reports=n,
                                         secagg=False, eval_every=0, checkin_deadline_s=600.0,
                                         training_deadline_s=600.0)  # fmt: skip
        svc.tasks.create(name="t", model_sha256=base.sha256, task_id=TASK,
                         spec=TaskSpec(**(fields | spec)), actor="test")  # type: ignore[arg-type]  # fmt: skip
        svc.tasks.act(TASK, "start", actor="test")
        return base.sha256

    @property
    def svc(self) -> CoordinatorService:
        assert self.coordinator is not None
        return self.coordinator.service

    def committed(self) -> list[str]:
        """The result versions of the task's committed rounds, in order."""
        rounds = self.svc.store.list_rounds(TASK)
        return [r.result_sha256 or "" for r in rounds if r.status is RoundStatus.COMMITTED]

    def done(self) -> bool:
        return self.svc.store.get_task(TASK).status is TaskStatus.COMPLETED

    # --- the broker -----------------------------------------------------------------------
    def follow(self, filters: Sequence[str], on: bool) -> None:
        if on:
            self.following.update(filters)
            self.followed.extend(filters)
        else:
            self.following.difference_update(filters)

    def read(self, topic: str) -> bool:
        """Whether a coordinator reads ``topic``: every plain up-topic, a cohort topic only
        while subscribed to (as a broker drops what no one subscribed to)."""
        if parse_up_topic(topic).cohort is None:
            return True
        return any(topic_matches_sub(f, topic) for f in self.following)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if topic == task_announcement(TASK):
            self.to_devices.extend((d, payload) for d in self.ids)
            return
        (target,) = [d for d in self.ids if topic == device_inbox(d)]
        self.to_devices.append((target, payload))

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        p = self.devices[device_id]
        for c in commands:
            if isinstance(c, pc.Publish):
                topic = (
                    device_up_cohort(device_id, c.cohort, c.channel)
                    if c.cohort
                    else device_up(device_id, c.channel)
                )
                self.to_coordinator.append((topic, encode_message(c.message)))
            elif isinstance(c, pc.Train):
                try:  # the device downloads the plan's model; a corrupt one fails to verify
                    weights = weights_of(self.svc, c.plan.model.sha256)
                except CoordinatorError as exc:
                    reason = rm.AbandonReason.MODEL_UNAVAILABLE
                    self._device(device_id, p.training_abandoned(reason, self.now, str(exc)))
                    continue
                delta = self.trainer(device_id, c.plan.round_id, weights)
                self._device(device_id, p.training_done(delta, 10, self.now))

    # --- running --------------------------------------------------------------------------
    def run_until(self, done: Callable[[], bool], max_steps: int = 20_000) -> None:
        """Deliver, tick, check in and move the clock until ``done()``."""
        for _ in range(max_steps):
            if done():
                return
            if self.to_coordinator:
                self._deliver(*self.to_coordinator.popleft())
            elif self.to_devices:
                device_id, payload = self.to_devices.popleft()
                self._device(device_id, self.devices[device_id].receive_data(payload, self.now))
            else:
                self._tick()
                if self.to_devices:
                    continue
                ready = [d for d in self.ids if self.devices[d].may_check_in(self.now)]
                for d in ready:
                    self._device(d, self.devices[d].check_in(self.now))
                if not ready:
                    self._advance()
        raise AssertionError("the rounds did not get there")

    def _deliver(self, topic: str, payload: bytes) -> None:
        if not self.read(topic):
            self.unread.append(topic)
            return
        outcome = self.svc.on_device_message(topic, payload)
        assert outcome == "accepted", (topic, outcome)

    def _tick(self) -> None:
        self.svc.tick()

    def _advance(self) -> None:
        # Devices sent away all come back together (the latest window), so every round
        # sees them check in in the same order whatever pace steering told each.
        waiting = [p.not_before for p in self.devices.values()
                   if p.state is ParticipantState.IDLE and p.not_before > self.now]  # fmt: skip
        times = [max(waiting)] if waiting else []
        times += [t for p in self.devices.values() if (t := p.next_deadline()) is not None]
        assert self.coordinator is not None
        for run in self.coordinator.driver.runs.values():
            if run.machine is not None and not run.machine.finished:
                times.append(run.machine.next_deadline() or self.now)
            times.append(run.next_start)
        later = [t for t in times if t > self.now]
        assert later, "nothing left to wait for"
        self.now = min(later)
