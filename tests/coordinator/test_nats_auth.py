"""Per-device permissions on a real 3-node NATS cluster: the Mosquitto ACL's guarantees."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path

import pytest

from fedrt.coordinator.broker.link import LinkSettings, MqttLink
from fedrt.coordinator.broker.nats_auth import (
    MQTT_DELIVERY_SUBJECTS,
    NatsAuth,
    check_nats_topic,
    device_permissions,
    filter_to_subjects,
)
from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.coordinator.errors import BrokerError, BrokerRefused, ConfigError
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.security.credentials import (
    Secret,
    bcrypt_hash,
    hash_password,
    verify_password,
)
from fedrt.protocol.topics import (
    RULES,
    UpChannel,
    cohort_key,
    cohort_up_filter,
    device_inbox,
    device_up,
    device_up_cohort,
    device_up_filter,
    task_announcement,
    task_announcements_filter,
)
from tests.coordinator.harness import ServiceThread, enroll_device, make_config
from tests.support.mqtt import TestClient
from tests.support.nats import (
    COORDINATOR,
    SecuredCluster,
    core_connect,
    needs_nats,
    running_cluster,
)

A, B = "dev-aaaa", "dev-bbbb"


# ------------------------------------------------------------------ mapping, no server
def test_filters_map_to_the_subjects_nats_checks() -> None:
    assert filter_to_subjects("fedrt/v1/#") == ("fedrt.v1", "fedrt.v1.>")
    assert filter_to_subjects("fedrt/v1/dev/d/up/+") == ("fedrt.v1.dev.d.up.*",)
    assert filter_to_subjects("#") == (">",)


@pytest.mark.parametrize("topic", ["a/b.c", "a/b c", "a/#/b", "", "a//b", "a/$x"])
def test_topics_nats_cannot_carry_are_refused(topic: str) -> None:
    with pytest.raises(BrokerError):
        check_nats_topic(topic)


def test_every_fedrt_topic_travels_through_nats() -> None:
    for rule in RULES:
        key = cohort_key("t-1", 3, 0)
        check_nats_topic(rule.template.format(task_id="t-1", device_id="dev-0a", cohort_key=key))


def test_a_device_may_publish_only_its_own_up_topics() -> None:
    perms = device_permissions(A)
    # Its plain up-topics and its cohort topics (up/c/<key>/<channel>), nothing else.
    assert perms.publish == (f"fedrt.v1.dev.{A}.up.*", f"fedrt.v1.dev.{A}.up.c.*.*")
    assert set(perms.subscribe) == {
        MQTT_DELIVERY_SUBJECTS,
        "fedrt.v1.coord.status",
        "fedrt.v1.tasks.*",
        f"fedrt.v1.dev.{A}.in",
    }


def test_bcrypt_hashes_verify_and_mosquitto_ones_still_do() -> None:
    assert verify_password("pw", bcrypt_hash("pw"))
    assert not verify_password("pw2", bcrypt_hash("pw"))
    assert verify_password("pw", hash_password("pw"))
    assert not verify_password("pw", "$2b$06$garbage")


def test_a_device_without_a_bcrypt_hash_is_left_out(tmp_path: Path) -> None:
    auth = NatsAuth(
        auth_file=tmp_path / "auth.conf",
        coordinator_username=COORDINATOR,
        coordinator_password_hash=bcrypt_hash("c"),
    )
    old = DeviceRecord(
        device_id=A, credential_hash=hash_password("x"), public_key=bytes(32), enrolled_at=0.0
    )
    auth.sync([old])
    text = (tmp_path / "auth.conf").read_text()
    assert COORDINATOR in text
    assert A not in text
    assert (tmp_path / "auth.conf").stat().st_mode & 0o077 == 0
    assert "x" not in text.split("password")[0]  # no plaintext anywhere: only hashes


# ------------------------------------------------------------------ a real cluster
def _client(nc: SecuredCluster, user: str, node: int) -> TestClient:
    host, port = nc.mqtt(node)
    return TestClient(
        host, port, username=user, password=nc.passwords[user], client_id=user, protocol=4
    )


def _until(client: TestClient, topic: str) -> list[bytes]:
    """Payloads on ``topic`` ... up to and including the first on ``topic``; bounded."""
    seen = []
    for _ in range(50):
        got = client.expect()
        seen.append((got.topic, got.payload))
        if got.topic == topic:
            return [p for _, p in seen]
    raise AssertionError(f"nothing on {topic}: {seen}")


@needs_nats
def test_devices_are_confined_to_their_own_topics(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=(A, B)) as nc:
        coord, dev_a, dev_b = _client(nc, COORDINATOR, 0), _client(nc, A, 1), _client(nc, B, 2)
        try:
            for c in (coord, dev_a, dev_b):
                assert not c.connect().is_failure
            assert not coord.subscribe(device_up_filter())[0].is_failure
            key = cohort_key("t-1", 1, 0)
            assert not coord.subscribe(cohort_up_filter(key))[0].is_failure
            assert not dev_a.subscribe(device_inbox(A))[0].is_failure
            assert not dev_a.subscribe(task_announcements_filter())[0].is_failure
            # B cannot read A's inbox, nor everything.
            assert dev_b.subscribe(device_inbox(A))[0].is_failure
            assert dev_b.subscribe("fedrt/v1/#")[0].is_failure
            assert not dev_b.subscribe(device_inbox(B))[0].is_failure

            # A legit round trip, each party on its own node.
            assert not coord.publish(device_inbox(A), b"plan for A").is_failure
            assert dev_a.expect().payload == b"plan for A"
            dev_a.publish(device_up(A, UpChannel.CHECKIN), b"checkin A")
            assert coord.expect().payload == b"checkin A"

            # A forged message as B is dropped (NATS still sends the PUBACK); the next
            # legit one arrives with nothing before it.
            dev_a.publish(device_up(B, UpChannel.UPDATE), b"forged as B")
            dev_a.publish(device_up_cohort(B, key, UpChannel.UPDATE), b"forged as B")
            dev_a.publish(task_announcement("t-1"), b"forged announcement")
            dev_a.publish(device_up(A, UpChannel.ROUND), b"marker")
            assert _until(coord, device_up(A, UpChannel.ROUND)) == [b"marker"]
            # Its own cohort topic is A's to publish on (the cohort's owner reads it).
            dev_a.publish(device_up_cohort(A, key, UpChannel.ROUND), b"cohort marker")
            mine = device_up_cohort(A, key, UpChannel.ROUND)
            assert _until(coord, mine) == [b"cohort marker"]
            # B got nothing meant for A: the next message it gets is its own.
            coord.publish(device_inbox(B), b"plan for B")
            assert dev_b.expect().payload == b"plan for B"
            with pytest.raises(queue.Empty):
                dev_b.messages.get_nowait()
        finally:
            for c in (coord, dev_a, dev_b):
                c.close()


@needs_nats
def test_device_credentials_do_not_work_on_the_core_nats_port(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=(A,), nodes=1) as nc:
        node = nc.cluster.nodes[0]
        answer = core_connect(node.host, node.ports.client, A, nc.passwords[A])
        assert "Authorization Violation" in answer
        # The coordinator's do: its instances read the device topics in a queue group there
        # (tests/coordinator/test_split_reading.py).
        answer = core_connect(node.host, node.ports.client, COORDINATOR, nc.passwords[COORDINATOR])
        assert "Authorization Violation" not in answer


@needs_nats
def test_a_cluster_in_a_relative_directory_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fedrt simulate's default data dir is relative: each node links the one auth file, and
    # a relative link target would point inside the node's own directory ("no such file").
    monkeypatch.chdir(tmp_path)
    with running_cluster(Path("sim"), nodes=1) as nc:
        assert nc.cluster.auth_path.is_absolute()
        node = nc.cluster.nodes[0]
        answer = core_connect(node.host, node.ports.client, COORDINATOR, nc.passwords[COORDINATOR])
        assert "Authorization Violation" not in answer


@needs_nats
def test_wrong_password_and_revoked_device_are_refused(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=(A, B), nodes=1) as nc:
        bad = TestClient(*nc.mqtt(), username=A, password="wrong", client_id=A, protocol=4)
        try:
            assert bad.connect().is_failure
        finally:
            bad.close()
        nc.auth.sync(nc.devices(revoked=(B,)))
        revoked = _client(nc, B, 0)
        try:
            # The reload is asynchronous: the refusal comes within a few tries (bounded).
            for _ in range(50):
                revoked._connected.clear()
                if revoked.connect().is_failure:
                    break
                revoked.client.disconnect()
                revoked.client.loop_stop()
            assert revoked.connect_reason is not None
            assert revoked.connect_reason.is_failure
        finally:
            revoked.close()


@needs_nats
def test_a_refused_coordinator_link_is_a_typed_error(tmp_path: Path) -> None:
    with running_cluster(tmp_path, nodes=1) as nc:
        host, port = nc.mqtt()
        settings = LinkSettings(
            host=host, port=port, username=COORDINATOR, password="wrong", identifier=COORDINATOR
        )

        async def start() -> None:
            await MqttLink(settings, _ignore).start(timeout=3.0)

        with pytest.raises(BrokerRefused, match=r"refused the coordinator.*authoriz"):
            asyncio.run(start())


def test_qos_2_is_refused_before_it_reaches_nats() -> None:
    link = MqttLink(LinkSettings(host="127.0.0.1", port=1, max_qos=1), _ignore)
    with pytest.raises(BrokerError, match="QoS 1 at most"):
        link.enqueue("fedrt/v1/tasks/t", b"x", qos=2)


async def _ignore(topic: str, payload: bytes) -> None:
    return None


@needs_nats
def test_another_devices_client_id_gives_no_access_to_its_queued_messages(
    tmp_path: Path,
) -> None:
    """NATS 2.9 cannot bind client ids to users (docs: "Known gap: client ids"): A may take
    B's client id and session, but B's queued plan is neither read by A nor lost."""
    with running_cluster(tmp_path, devices=(A, B), nodes=1) as nc:
        coord, dev_b = _client(nc, COORDINATOR, 0), _client(nc, B, 0)
        host, port = nc.mqtt()
        impostor = TestClient(
            host, port, username=A, password=nc.passwords[A], client_id=B, protocol=4
        )
        try:
            assert not coord.connect().is_failure
            assert not dev_b.connect().is_failure
            assert not dev_b.subscribe(device_inbox(B))[0].is_failure
            dev_b.close()  # B is away; its persistent session queues its inbox
            coord.publish(device_inbox(B), b"plan for B")
            assert not impostor.connect().is_failure  # the gap: the id is not bound
            assert not impostor.subscribe(device_inbox(A))[0].is_failure
            coord.publish(device_inbox(A), b"plan for A")
            assert impostor.expect().payload == b"plan for A"
            impostor.close()
            back = _client(nc, B, 0)
            try:
                assert not back.connect().is_failure
                assert not back.subscribe(device_inbox(B))[0].is_failure
                assert back.expect().payload == b"plan for B"
            finally:
                back.close()
            with pytest.raises(queue.Empty):
                impostor.messages.get_nowait()
        finally:
            coord.close()


def test_nats_broker_settings_are_checked() -> None:
    nats = {"url": "mqtt://127.0.0.1:4222", "nats_auth_file": "/tmp/auth.conf"}
    with pytest.raises(ConfigError, match="password"):
        BrokerConfig(**nats)
    with pytest.raises(ConfigError, match="replaces password_file"):
        BrokerConfig(**nats, password=Secret("p"), password_file="/tmp/p", acl_file="/tmp/a")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        BrokerConfig(url="mqtt://127.0.0.1:1", nodes=("127.0.0.1",))
    with pytest.raises(ConfigError, match=r"needs broker\.nats_auth_file"):
        BrokerConfig(url="mqtt://127.0.0.1:1", nats_pid_files=("/run/n.pid",))
    ok = BrokerConfig(**nats, password=Secret("p"), nodes=("h2:1884", "[::1]:1885"))
    assert ok.addresses == [("127.0.0.1", 4222), ("h2", 1884), ("::1", 1885)]
    assert ok.max_qos == 1
    assert BrokerConfig(url="mqtt://127.0.0.1:1").max_qos == 2
    with pytest.raises(ConfigError, match="device_inbox_qos must be 0 or 1"):
        BrokerConfig(**nats, password=Secret("p"), device_inbox_qos=2)


@needs_nats
def test_the_coordinator_enrolls_devices_onto_the_cluster(tmp_path: Path) -> None:
    """``fedrt coordinator serve`` on NATS: bcrypt credentials in the nodes' auth file, a
    grant naming every node and MQTT 3.1.1, and the device's own inbox working on node 3."""
    with running_cluster(tmp_path) as nc:
        (host, port), *others = nc.cluster.mqtt_addresses
        broker = BrokerConfig(
            url=f"mqtt://{host}:{port}",
            nodes=tuple(f"{h}:{p}" for h, p in others),
            username=COORDINATOR,
            password=Secret(nc.passwords[COORDINATOR]),
            nats_auth_file=nc.cluster.auth_path,
            nats_pid_files=tuple(str(p) for p in nc.cluster.pid_files),
        )
        with ServiceThread(make_config(tmp_path / "coord", broker=broker)) as svc:
            grant = enroll_device(svc)
            assert grant["mqtt"]["protocol"] == 4
            assert "inbox_qos" not in grant["mqtt"]  # QoS 1 unless broker.device_inbox_qos
            assert grant["mqtt"]["nodes"] == [{"host": h, "port": p} for h, p in others]
            device_id = grant["device_id"]
            assert device_id in nc.cluster.auth_path.read_text()
            assert grant["mqtt_password"] not in nc.cluster.auth_path.read_text()
            nc.passwords[device_id] = grant["mqtt_password"]
            device = None
            for _ in range(50):  # the nodes reload asynchronously: a few tries, bounded
                device = _client(nc, device_id, 2)
                if not device.connect().is_failure:
                    break
                device.close()
            assert device is not None
            try:
                assert not device.subscribe(device_inbox(device_id))[0].is_failure
                svc.run(svc.service.publish, device_inbox(device_id), b"hello")
                assert device.expect().payload == b"hello"
                with pytest.raises(BrokerError, match="QoS 1 at most"):
                    svc.run(svc.service.publish, device_inbox(device_id), b"x", 2)
            finally:
                device.close()
