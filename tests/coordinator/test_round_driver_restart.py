"""The served driver between rounds: an idle task waits for a check-in instead of opening a
round per check-in deadline, and a restarted coordinator sends a lost round's devices back
soon. The service's parts on a data dir, messages encoded as on MQTT, the clock a number."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.service import CoordinatorService
from fedrt.coordinator.tasks import TaskSpec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.round_codec import decode_from_coordinator, encode_message
from fedrt.protocol.topics import UpTopic, device_inbox, task_announcement
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import Participant, ParticipantState
from tests.coordinator.harness import make_config
from tests.coordinator.live_round import MODEL_DIR

TASK = "t1"


class _Coordinator:
    """One coordinator process (not started: no broker, its publications are collected)."""

    def __init__(self, data_dir: Path, now: list[float]) -> None:
        self.now = now
        self.svc = CoordinatorService(make_config(data_dir), clock=lambda: now[0])
        self.sent: list[tuple[str, rm.CoordinatorMessage]] = []
        ctx = dataclasses.replace(self.svc.driver_context(), publish=self._publish)
        self.driver = FederatedDriver(ctx, rng=np.random.default_rng(0))
        self.svc.driver = self.driver

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append((topic, decode_from_coordinator(payload)))

    def create_task(self, **spec: object) -> None:
        base = self.svc.catalog.add_export_dir(MODEL_DIR, actor="test", max_bytes=1 << 20)
        fields: dict[str, object] = dict(goal_count=2, over_selection=1.0, min_reports=2,
                                         secagg=False, eval_every=0)  # fmt: skip
        self.svc.tasks.create(name="t", model_sha256=base.sha256, task_id=TASK,
                              spec=TaskSpec(**(fields | spec)), actor="test")  # type: ignore[arg-type]  # fmt: skip
        self.svc.tasks.act(TASK, "start", actor="test")

    def rounds(self) -> list[tuple[int, RoundStatus]]:
        return [(r.round_no, r.status) for r in self.svc.store.list_rounds(TASK)]

    def take(self, device_id: str) -> list[rm.CoordinatorMessage]:
        """What went to ``device_id``'s inbox since the last look."""
        mine = [m for t, m in self.sent if t == device_inbox(device_id)]
        self.sent = [(t, m) for t, m in self.sent if t != device_inbox(device_id)]
        return mine


def _device(i: int) -> Participant:
    config = pc.ParticipantConfig(device_id=f"dev-{i}", task_id=TASK)
    key = identity_from_seed(bytes([i + 1]) * 32)
    return Participant(config, identity=key, rng=np.random.default_rng(i))


def _send(c: _Coordinator, p: Participant, commands: list[pc.Command]) -> None:
    for command in commands:
        if isinstance(command, pc.Publish):
            payload = encode_message(command.message)
            up = UpTopic(device_id=p.config.device_id, channel=command.channel)
            c.driver.on_device_message(up, payload, c.now[0])


def _deliver(c: _Coordinator, p: Participant) -> list[pc.Command]:
    out: list[pc.Command] = []
    for message in c.take(p.config.device_id):
        out += p.receive(message, c.now[0])
    return out


def test_an_idle_task_opens_one_round_then_waits_for_a_check_in(tmp_path: Path) -> None:
    now = [1000.0]
    c = _Coordinator(tmp_path / "data", now)
    c.create_task(checkin_deadline_s=5.0)
    for _ in range(600):  # ten minutes and no device: was a round every 7 s
        now[0] += 1.0
        c.driver.on_tick(now[0])
    assert c.rounds() == [(1, RoundStatus.ABANDONED)]
    # The first check-in opens the next round at once, and is in it.
    p = _device(0)
    _send(c, p, p.check_in(now[0]))
    assert c.rounds() == [(1, RoundStatus.ABANDONED), (2, RoundStatus.RUNNING)]
    (ack,) = c.take("dev-0")
    assert isinstance(ack, rm.Ack)
    assert (ack.round_id, ack.status) == (2, rm.AckStatus.ACCEPTED)
    machine = c.driver.runs[TASK].machine
    assert machine is not None
    assert machine.status().checked_in == 1


def test_a_restarted_coordinator_sends_the_lost_rounds_devices_back_soon(tmp_path: Path) -> None:
    now = [1000.0]
    first = _Coordinator(tmp_path / "data", now)
    first.create_task(checkin_deadline_s=600.0)
    first.driver.on_tick(now[0])
    fast, slow = _device(0), _device(1)
    for p in (fast, slow):
        _send(first, p, p.check_in(now[0]))
    trains = [c for p in (fast, slow) for c in _deliver(first, p) if isinstance(c, pc.Train)]
    assert len(trains) == 2
    _send(first, fast, fast.training_done(np.zeros(trains[0].plan.update.params), 10, now[0]))
    _deliver(first, fast)  # accepted; the round waits for the slow one ...
    first.svc.store.close()  # ... when the coordinator dies: no shutdown, nothing saved

    now[0] += 5.0
    second = _Coordinator(tmp_path / "data", now)
    assert second.rounds() == [(1, RoundStatus.ABANDONED)]
    second.driver.on_tick(now[0])
    assert second.rounds() == [(1, RoundStatus.ABANDONED)]  # waiting for a check-in
    (welcome,) = [m for t, m in second.sent if t == task_announcement(TASK)]
    assert isinstance(welcome, rm.TaskAnnouncement)
    assert (welcome.accepting, welcome.round_id) == (True, 2)
    # The slow device has not heard of the restart: its update of the lost round gets LATE and
    # a window that starts now, not after pace steering's min_delay (60 s).
    params = trains[1].plan.update.params
    (update,) = [c for c in slow.training_done(np.zeros(params), 10, now[0])
                 if isinstance(c, pc.Publish)]  # fmt: skip
    _send(second, slow, [update])
    ack, window = second.take("dev-1")
    assert isinstance(ack, rm.Ack)
    assert ack.status is rm.AckStatus.LATE
    assert isinstance(window, rm.ReconnectWindow)
    assert (window.round_id, window.reason) == (1, rm.ReconnectReason.ROUND_ABANDONED)
    assert window.earliest < 60.0
    assert window.msg_id > ack.msg_id > first.driver.runs[TASK].next_msg_id  # ids not reused
    out = slow.receive(ack, now[0]) + slow.receive(window, now[0])
    assert slow.state is ParticipantState.IDLE
    (at,) = [c.at for c in out if isinstance(c, pc.ScheduleCheckIn)]
    assert at <= now[0] + window.latest
    # The same device's other messages of that round need only the ack.
    _send(second, slow, [update])
    assert [type(m) for m in second.take("dev-1")] == [rm.Ack]
    # The fast device checks in again (as one that heard the new incarnation does): round 2.
    fast.coordinator_restarted(now[0])
    now[0] = fast.not_before
    _send(second, fast, fast.check_in(now[0]))
    assert second.rounds() == [(1, RoundStatus.ABANDONED), (2, RoundStatus.RUNNING)]
