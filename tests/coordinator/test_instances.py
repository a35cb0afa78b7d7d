"""Two coordinator instances on one PostgreSQL store (``tasks.ownership``): one owns the task,
the other takes it over when the owner dies, and a dead owner's late commit writes nothing.

Both instances receive every device message, as two subscribers of the device topics do;
the clock is a number, so lease expiry is exact."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from fedrt.coordinator.config import ClusterConfig, Secret, StoreConfig
from fedrt.coordinator.records import RoundStatus
from fedrt.coordinator.security.signing import KEY_FILE
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device
from fedrt.sdk import participant_commands as pc
from tests.coordinator.driver_harness import TASK, Coordinator, Fleet, pull_to_targets

LEASE_S = 15.0


class Instance(Coordinator):
    def __init__(self, name: str, data_dir: Path, fleet: Fleet, url: str) -> None:
        self.name, self.sent = name, 0
        self.fleet = fleet
        super().__init__(
            data_dir,
            fleet,
            StoreConfig(url=Secret(url)),
            ClusterConfig(instance_id=name, lease_s=LEASE_S),
            publish=self._publish,
        )

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent += 1
        self.fleet.publish(topic, payload, qos, retain)


class Instances(Fleet):
    """The fleet with several coordinator instances; ``live`` are the ones still running."""

    def __init__(self, n: int) -> None:
        super().__init__(n, pull_to_targets)
        self.live: list[Instance] = []
        self.presence = ""
        # Updates of this device are held back (``held``) instead of reaching the instances.
        self.hold: str | None = None
        self.held: list[tuple[str, bytes]] = []

    def start(self, name: str, data_dir: Path, url: str) -> Instance:
        """An instance with a data dir of its own: only the signing key is copied there
        (as an operator does); every artifact comes through the store."""
        if self.live:
            data_dir.mkdir(parents=True)
            key = self.live[0].service.config.data_dir / KEY_FILE
            shutil.copy2(key, data_dir / KEY_FILE)
        instance = Instance(name, data_dir, self, url)
        self.live.append(instance)
        self.coordinator = self.coordinator or instance
        return instance

    def kill(self, instance: Instance) -> None:
        """kill -9: it stops, with nothing saved or released."""
        self.live.remove(instance)
        if self.coordinator is instance:
            self.coordinator = self.live[0]

    def _deliver(self, topic: str, payload: bytes) -> None:
        for instance in self.live:  # every instance subscribes to the device topics
            assert instance.service.on_device_message(topic, payload) == "accepted"

    def _advance(self) -> None:
        self.now += 1.0  # lease expiry needs the clock to move in small steps

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        queued = len(self.to_coordinator)
        super()._device(device_id, commands)
        if device_id == self.hold:
            while len(self.to_coordinator) > queued:
                topic, payload = self.to_coordinator.pop()
                if isinstance(decode_from_device(payload), rm.StageResponse):
                    self.held.append((topic, payload))
                else:
                    self.to_coordinator.append((topic, payload))
                    break

    def _tick(self) -> None:
        for instance in self.live:
            instance.service.tick()
        # The retained presence every instance publishes; devices in a lost round come back.
        value = self.live[0].service.ownership.incarnation
        if value != self.presence:
            self.presence = value
            for d in self.ids:
                self._device(d, self.devices[d].coordinator_online(value, self.now))

    def rounds(self) -> list[tuple[int, RoundStatus]]:
        return [(r.round_no, r.status) for r in self.svc.store.list_rounds(TASK)]


def _round_running(fleet: Instances, no: int) -> Callable[[], bool]:
    def running() -> bool:
        rounds = fleet.rounds()
        return len(rounds) >= no and rounds[no - 1][1] is RoundStatus.RUNNING

    return running


def _committed(fleet: Instances, n: int) -> Callable[[], bool]:
    return lambda: len(fleet.committed()) >= n


def test_one_instance_runs_the_task_and_another_takes_over_when_it_dies(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = Instances(4)
    a = fleet.start("a", tmp_path / "data", postgres_url)
    fleet.create_task(max_rounds=4)
    b = fleet.start("b", tmp_path / "b", postgres_url)
    fleet.run_until(_committed(fleet, 1))
    assert TASK in a.driver.runs
    assert TASK not in b.driver.runs
    assert b.sent == 0  # b heard every device message and left them all to a
    first = fleet.committed()

    # a dies during round 2; b's next sync after a's lease expired takes the task over.
    fleet.run_until(_round_running(fleet, 2))
    fleet.kill(a)
    fleet.run_until(lambda: TASK in b.driver.runs)
    assert fleet.rounds()[1] == (2, RoundStatus.ABANDONED)
    fleet.run_until(fleet.done)
    assert fleet.committed()[:1] == first  # no committed version lost
    C, A = RoundStatus.COMMITTED, RoundStatus.ABANDONED
    assert [status for _, status in fleet.rounds()] == [C, A, C, C]
    owners = [r.detail["instance"] for r in b.service.store.list_rounds(TASK)]
    assert owners == ["a", "a", "b", "b"]
    assert b.service.store.get_task(TASK).model_sha256 == fleet.committed()[-1]
    # b trained from a's version without sharing a's disk: it came from the store.
    assert b.service.blobs.path(first[0]).is_file()
    (lease,) = b.service.store.list_leases()
    assert (lease.owner, lease.epoch) == ("b", 2)


def test_an_owner_that_lost_its_lease_commits_nothing(tmp_path: Path, postgres_url: str) -> None:
    fleet = Instances(3)
    a = fleet.start("a", tmp_path / "data", postgres_url)
    fleet.create_task(max_rounds=3)
    b = fleet.start("b", tmp_path / "b", postgres_url)
    fleet.hold = "dev-02"  # round 1 waits for this device's update

    def others_answered() -> bool:
        run = a.driver.runs.get(TASK)
        machine = run.machine if run is not None else None
        return machine is not None and bool(fleet.held) and machine.status().answered == 2

    fleet.run_until(others_answered)
    fleet.hold = None
    # a stalls (a long pause, cut off from the database) while b takes the task over.
    fleet.kill(a)
    fleet.now += LEASE_S + 1
    fleet.run_until(lambda: TASK in b.driver.runs)
    assert fleet.rounds() == [(1, RoundStatus.ABANDONED)]
    # a wakes up, still running round 1 in memory, and the last update completes it there:
    # its commit is fenced by its lost lease, so nothing is written and a drops the task.
    machine = a.driver.runs[TASK].machine
    assert machine is not None
    assert not machine.finished
    ((topic, payload),) = fleet.held
    queued = len(fleet.to_devices)
    a.service.on_device_message(topic, payload)
    assert machine.finished
    while len(fleet.to_devices) > queued:  # what the stale a sent, devices ignore (not tested)
        fleet.to_devices.pop()
    assert TASK not in a.driver.runs
    assert fleet.rounds() == [(1, RoundStatus.ABANDONED)]
    assert fleet.committed() == []
    assert b.service.store.list_models(TASK) == []  # not even the version a had made
    fleet.run_until(fleet.done)
    assert [s for _, s in fleet.rounds()] == [
        RoundStatus.ABANDONED,
        RoundStatus.COMMITTED,
        RoundStatus.COMMITTED,
    ]


def test_a_task_paused_and_resumed_through_another_instance_goes_on(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = Instances(3)
    a = fleet.start("a", tmp_path / "data", postgres_url)
    fleet.create_task(max_rounds=3)
    b = fleet.start("b", tmp_path / "b", postgres_url)
    fleet.run_until(_committed(fleet, 1))
    # The operator's calls reach b, which does not run the task: a follows at its next sync.
    b.service.tasks.act(TASK, "pause", actor="test")
    fleet.run_until(lambda: TASK not in a.driver.runs)
    b.service.tasks.act(TASK, "resume", actor="test")
    fleet.run_until(fleet.done)
    assert TASK in a.driver.idle or not a.driver.runs  # a ran it to the end
    assert b.sent == 0
    assert len(fleet.committed()) >= 2
