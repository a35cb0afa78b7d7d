"""Device traffic split over two instances (``rounds.relay``): each message reaches ONE
instance, as a NATS queue group or an MQTT shared subscription delivers it; the receiver
forwards what the owner needs and answers the rest itself. Real PostgreSQL, real drivers;
the broker is the harness's FIFO (tests/coordinator/test_split_reading.py has the real ones)."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

from fedrt.coordinator.config import ClusterConfig, Secret, StoreConfig
from fedrt.coordinator.rounds.relay import DeviceRelay
from fedrt.coordinator.security.signing import KEY_FILE
from fedrt.coordinator.store.sqlite import SqliteStore
from fedrt.protocol import round_messages as rm
from fedrt.protocol.relay_topics import instance_level, parse_relay_topic, relay_topic
from fedrt.protocol.round_codec import decode_from_coordinator, decode_from_device, encode_message
from fedrt.protocol.topics import PREFIX, UpChannel, device_inbox, parse_device_up
from tests.coordinator.driver_harness import PACE, TASK, Coordinator, Fleet, pull_to_targets
from tests.coordinator.store_conformance import model, round_, task
from tests.support.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

RELAYED = f"{PREFIX}/coord/inst/"


class Split(Fleet):
    """Two instances; a device message reaches one of them in turn (a queue group), a
    forwarded one the instance its topic names."""

    def __init__(self, n: int) -> None:
        super().__init__(n, pull_to_targets)
        self.instances: list[Coordinator] = []
        self.turn = 0
        # (receiver, outcome) of every device message, and of every forwarded one.
        self.direct: Counter[tuple[str, str]] = Counter()
        self.relayed: Counter[tuple[str, str]] = Counter()
        self.forwarded_devices: set[str] = set()
        self.plans: set[str] = set()

    def start(self, name: str, data_dir: Path, url: str) -> Coordinator:
        if self.instances:
            data_dir.mkdir(parents=True)
            key = self.instances[0].service.config.data_dir / KEY_FILE
            shutil.copy2(key, data_dir / KEY_FILE)
        cluster = ClusterConfig(instance_id=name, lease_s=15.0)
        instance = Coordinator(data_dir, self, StoreConfig(url=Secret(url)), cluster)
        svc = instance.service
        # What CoordinatorService.start sets up when the reading is split (broker.reading).
        svc.relay = DeviceRelay(svc.store, name, self.publish, PACE, clock=lambda: self.now)
        self.instances.append(instance)
        self.coordinator = self.coordinator or instance
        return instance

    def name(self, instance: Coordinator) -> str:
        return instance.service.ownership.instance_id

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if topic.startswith(RELAYED):
            self.to_coordinator.append((topic, payload))
            return
        inbox = any(topic == device_inbox(d) for d in self.ids)
        if inbox and isinstance(decode_from_coordinator(payload), rm.Plan):
            self.plans.add(topic.split("/")[3])
        super().publish(topic, payload, qos, retain)

    def _deliver(self, topic: str, payload: bytes) -> None:
        if topic.startswith(RELAYED):
            (target,) = [
                i for i in self.instances if topic.split("/")[4] == instance_level(self.name(i))
            ]
            outcome = target.service.on_device_message(topic, payload)
            self.relayed[(self.name(target), outcome)] += 1
            assert outcome == "accepted", outcome
            return
        target = self.instances[self.turn % len(self.instances)]
        self.turn += 1
        outcome = target.service.on_device_message(topic, payload)
        self.direct[(self.name(target), outcome)] += 1
        if outcome == "forwarded":
            self.forwarded_devices.add(parse_device_up(topic)[0])
        assert outcome in ("accepted", "forwarded", "answered"), (topic, outcome)

    def _tick(self) -> None:
        for instance in self.instances:
            instance.service.tick()


def test_each_message_is_handled_once_and_forwarded_check_ins_get_their_plan(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = Split(6)
    owner = fleet.start("inst-a", tmp_path / "a", postgres_url)
    other = fleet.start("inst-b", tmp_path / "b", postgres_url)
    fleet.create_task(max_rounds=2)  # through inst-a, which takes the task's lease
    assert owner.service.ownership.holds(TASK)
    fleet.run_until(fleet.done)
    assert len(fleet.committed()) == 2
    # inst-b received its share and handed every one to the owner, which took each once.
    forwarded = fleet.direct[("inst-b", "forwarded")]
    assert forwarded > 0
    assert fleet.direct[("inst-b", "accepted")] == 0
    assert fleet.relayed == Counter({("inst-a", "accepted"): forwarded})
    assert fleet.direct[("inst-a", "forwarded")] == 0
    # A device whose check-in went through inst-b got its plan from the owner.
    assert fleet.forwarded_devices
    assert fleet.forwarded_devices <= fleet.plans
    assert not other.service.ownership.holds(TASK)


def _store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "store.sqlite3")


def test_a_check_in_while_the_owner_trains_is_sent_away_by_the_receiver(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sent: list[tuple[str, bytes]] = []
    relay = DeviceRelay(store, "inst-b", lambda t, p, q, r: sent.append((t, p)), PACE,
                        clock=lambda: 100.0)  # fmt: skip
    assert store.claim_lease("task:" + TASK, "inst-a", now=100.0, ttl=15.0) is not None
    base = model("m")
    store.add_model(base)
    store.create_task(task(TASK, base.sha256))
    store.create_round(dataclasses.replace(round_(TASK, 1, base.sha256), stage="training"))
    checkin = rm.CheckIn(msg_id=7, task_id=TASK, sdk_version="t", model_version=0)
    assert relay.route("dev-01", UpChannel.CHECKIN, encode_message(checkin), 100.0) == "answered"
    topics = {t for t, _ in sent}
    assert topics == {device_inbox("dev-01")}
    ack, window = (decode_from_coordinator(p) for _, p in sent)
    assert isinstance(ack, rm.Ack)
    assert ack.acked == 7
    assert isinstance(window, rm.ReconnectWindow)
    assert window.earliest >= PACE.min_delay
    # Ids no owner uses (an owner's start at 1 and grow by 2**32 per restart).
    assert ack.msg_id >= 1 << 62
    assert window.msg_id == ack.msg_id + 1
    store.close()


def test_a_recruiting_owner_gets_the_check_in_on_its_relay_topic(tmp_path: Path) -> None:
    store = _store(tmp_path)
    sent: list[tuple[str, bytes]] = []
    relay = DeviceRelay(store, "inst-b", lambda t, p, q, r: sent.append((t, p)), PACE,
                        clock=lambda: 100.0)  # fmt: skip
    store.claim_lease("task:" + TASK, "inst-a", now=100.0, ttl=15.0)
    payload = encode_message(rm.CheckIn(msg_id=7, task_id=TASK, sdk_version="t", model_version=0))
    assert relay.route("dev-01", UpChannel.CHECKIN, payload, 100.0) == "forwarded"
    ((topic, forwarded),) = sent
    assert topic == relay_topic("inst-a", "dev-01", UpChannel.CHECKIN)
    assert forwarded == payload
    assert decode_from_device(forwarded).msg_id == 7
    assert parse_relay_topic(topic, "inst-a") == ("dev-01", UpChannel.CHECKIN)
    # Our own task, a task whose lease expired, presence: the receiver's driver takes them.
    assert relay.route("dev-01", UpChannel.STATUS, b"online", 100.0) is None
    store.claim_lease("task:" + TASK, "inst-a", now=200.0, ttl=15.0)  # renewed far ahead
    late = DeviceRelay(store, "inst-b", lambda t, p, q, r: None, PACE, clock=lambda: 300.0)
    assert late.route("dev-01", UpChannel.CHECKIN, payload, 300.0) is None
    store.close()
