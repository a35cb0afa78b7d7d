"""Topic layout, parsing, rules, and the ACL enforced by a real Mosquitto."""

from __future__ import annotations

import queue
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker, write_password_file
from fedrt.coordinator.security.credentials import hash_password
from fedrt.protocol import topics
from fedrt.protocol.round_errors import InvalidTopic, MalformedMessage
from fedrt.protocol.topics import QoS, UpChannel
from tests.support.mqtt import TestClient


def test_layout() -> None:
    assert topics.device_inbox("pi-7") == "fedrt/v1/dev/pi-7/in"
    assert topics.device_up("pi-7", UpChannel.UPDATE) == "fedrt/v1/dev/pi-7/up/update"
    assert topics.task_announcement("mnist") == "fedrt/v1/tasks/mnist"
    assert topics.device_up_filter() == "fedrt/v1/dev/+/up/+"
    assert topics.device_up_filter("coord") == "$share/coord/fedrt/v1/dev/+/up/+"
    assert topics.coordinator_status() == "fedrt/v1/coord/status"


@pytest.mark.parametrize("channel", list(UpChannel))
def test_parse_device_up_inverts_device_up(channel: UpChannel) -> None:
    assert topics.parse_device_up(topics.device_up("a.b_c-9", channel)) == ("a.b_c-9", channel)


@pytest.mark.parametrize(
    "topic",
    [
        "fedrt/v1/dev/pi/in",
        "fedrt/v1/dev/pi/up/other",
        "fedrt/v1/dev/pi/up/round/extra",
        "fedrt/v2/dev/pi/up/round",
        "fedrt/v1/dev/+/up/round",
        "fedrt/v1/dev//up/round",
        "",
    ],
)
def test_parse_device_up_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        topics.parse_device_up(topic)


def test_coordinator_presence_round_trips_and_plain_online_still_reads() -> None:
    payload = topics.coordinator_presence("0123abcd89ef4567")
    assert payload == b"online 0123abcd89ef4567"
    assert topics.parse_coordinator_presence(payload) == topics.CoordinatorPresence(
        online=True, incarnation="0123abcd89ef4567"
    )
    assert topics.parse_coordinator_presence(b"online") == topics.CoordinatorPresence(online=True)
    offline = topics.coordinator_presence(None, online=False)
    assert topics.parse_coordinator_presence(offline) == topics.CoordinatorPresence(online=False)
    with pytest.raises(InvalidTopic):
        topics.coordinator_presence("NOT-HEX")


@pytest.mark.parametrize(
    "payload",
    [b"", b"online ", b"online abc", b"online 0123ABCD", b"online  01234567", b"onlinex",
     b"online 01234567 extra", b"online " + b"a" * 33, b"offline 01234567", b"\xff" * 8,
     b"online " + b"a" * 100],
)  # fmt: skip
def test_malformed_coordinator_presence_is_refused(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        topics.parse_coordinator_presence(payload)


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "$SYS", "a b", "-lead", "x" * 65, "é"])
def test_ids_that_would_break_topics_or_acls_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        topics.device_inbox(bad)
    with pytest.raises(InvalidTopic):
        topics.task_announcement(bad)


def test_parse_task_announcement() -> None:
    assert topics.parse_task_announcement("fedrt/v1/tasks/mnist") == "mnist"
    with pytest.raises(InvalidTopic):
        topics.parse_task_announcement("fedrt/v1/tasks/mnist/x")


def test_rules_qos_and_retain() -> None:
    assert topics.rule_for("fedrt/v1/tasks/mnist").retain
    assert topics.rule_for("fedrt/v1/coord/status").retain
    inbox = topics.rule_for(topics.device_inbox("d1"))
    assert (inbox.qos, inbox.retain) == (QoS.AT_LEAST_ONCE, False)
    for channel in UpChannel:
        rule = topics.rule_for(topics.device_up("d1", channel))
        assert not rule.retain
        assert rule.qos == QoS.AT_LEAST_ONCE
    with pytest.raises(InvalidTopic):
        topics.rule_for("elsewhere/x")


@pytest.mark.parametrize("channel", [UpChannel.ROUND, UpChannel.UPDATE])
def test_cohort_topics_parse_back_with_their_key(channel: UpChannel) -> None:
    key = topics.cohort_key("mnist", 7, 2)
    assert key == topics.cohort_key("mnist", 7, 2) != topics.cohort_key("other", 7, 2)
    assert key != topics.cohort_key("mnist", 8, 2)
    assert key.endswith("-2")
    topic = topics.device_up_cohort("pi-7", key, channel)
    assert topic == f"fedrt/v1/dev/pi-7/up/c/{key}/{channel.value}"
    assert topics.parse_up_topic(topic) == topics.UpTopic(
        device_id="pi-7", channel=channel, cohort=key
    )
    assert topics.parse_up_topic(topics.device_up("pi-7", channel)).cohort is None
    assert topics.rule_for(topic).qos == QoS.AT_LEAST_ONCE
    assert not topics.rule_for(topic).retain
    assert topics.cohort_up_filter(key) == f"fedrt/v1/dev/+/up/c/{key}/+"
    with pytest.raises(InvalidTopic):  # the plain parser does not drop the key silently
        topics.parse_device_up(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "fedrt/v1/dev/pi/up/c/+/round",  # a wildcard
        "fedrt/v1/dev/pi/up/c/#/round",
        "fedrt/v1/dev/pi/up/c/" + "a" * 33 + "/round",  # too long
        "fedrt/v1/dev/pi/up/c/Key.1/round",  # upper case, a dot (a NATS separator)
        "fedrt/v1/dev/pi/up/c//round",
        "fedrt/v1/dev/pi/up/c/abc-1/checkin",  # check-ins precede cohorts
        "fedrt/v1/dev/pi/up/c/abc-1/status",
        "fedrt/v1/dev/pi/up/x/abc-1/round",
        "fedrt/v1/dev/pi/up/c/abc-1/other",
    ],
)
def test_bad_cohort_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        topics.parse_up_topic(topic)


@pytest.mark.parametrize("bad", ["", "A-1", "a.b", "a/b", "+", "#", "-1", "a" * 33])
def test_bad_cohort_keys_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        topics.check_cohort_key(bad)
    with pytest.raises(InvalidTopic):
        topics.cohort_up_filter(bad)


def test_acl_rendering() -> None:
    text = topics.render_acl_file("coordinator")
    assert "pattern write fedrt/v1/dev/%u/up/+" in text
    assert "pattern write fedrt/v1/dev/%u/up/c/+/+" in text
    assert "pattern read fedrt/v1/dev/%u/in" in text
    assert "user coordinator\ntopic readwrite fedrt/v1/#" in text
    concrete = {e.render() for e in topics.device_acl("pi-1")}
    assert "topic write fedrt/v1/dev/pi-1/up/+" in concrete
    assert "topic read fedrt/v1/dev/pi-1/in" in concrete
    assert not any("%u" in line for line in concrete)
    with pytest.raises(InvalidTopic):
        topics.device_acl("a/#")


# --- the real broker ------------------------------------------------------------------------

# carol spies: one user is one client id (use_username_as_clientid), so a second
# connection as alice would take alice's over.
USERS = ("coordinator", "alice", "bob", "carol")


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, dict[str, str]]]:
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    passwords = {u: secrets.token_urlsafe(12) for u in USERS}
    write_password_file(directory / "passwd", {u: hash_password(p) for u, p in passwords.items()})
    (directory / "acl").write_text(topics.render_acl_file("coordinator"))
    broker = MosquittoBroker(
        BrokerConfig(
            directory=directory,
            allow_anonymous=False,
            password_file=directory / "passwd",
            acl_file=directory / "acl",
        )
    )
    broker.start()
    yield broker, passwords
    broker.stop()


def _client(broker: MosquittoBroker, passwords: dict[str, str], user: str) -> TestClient:
    client = TestClient(broker.host, broker.port, username=user, password=passwords[user])
    assert not client.connect().is_failure
    return client


def _nothing(client: TestClient, wait: float = 0.3) -> bool:
    try:
        client.expect(timeout=wait)
    except queue.Empty:
        return True
    return False


def test_broker_confines_each_device_to_its_own_topics(
    acl_broker: tuple[MosquittoBroker, dict[str, str]],
) -> None:
    broker, passwords = acl_broker
    coord = _client(broker, passwords, "coordinator")
    alice = _client(broker, passwords, "alice")
    bob = _client(broker, passwords, "bob")
    spy = _client(broker, passwords, "carol")
    try:
        assert not coord.subscribe(topics.device_up_filter())[0].is_failure
        # Devices may read their inbox and the announcements, not someone else's inbox.
        assert not alice.subscribe(topics.device_inbox("alice"))[0].is_failure
        assert not alice.subscribe(topics.task_announcements_filter())[0].is_failure
        assert not bob.subscribe(topics.device_inbox("bob"))[0].is_failure
        assert not bob.subscribe(topics.task_announcements_filter())[0].is_failure
        # Mosquitto 2.0 may grant a subscription and filter at delivery: check delivery.
        for spying in (topics.device_inbox("bob"), "fedrt/v1/dev/+/in", "fedrt/v1/dev/+/up/+"):
            spy.subscribe(spying)

        # Alice's cohort topic is hers too (still under her up/); bob's is not.
        key = topics.cohort_key("mnist", 4, 1)
        assert not coord.subscribe(topics.cohort_up_filter(key))[0].is_failure
        alice.publish(topics.device_up_cohort("alice", key, UpChannel.UPDATE), b"masked")
        got = coord.expect()
        assert got.topic == topics.device_up_cohort("alice", key, UpChannel.UPDATE)
        alice.publish(topics.device_up_cohort("bob", key, UpChannel.UPDATE), b"forged")
        alice.publish(f"fedrt/v1/dev/alice/up/c/{key}/round/deeper", b"too deep")
        assert _nothing(coord)

        # Alice's own up-topic reaches the coordinator; posing as bob does not.
        alice.publish(topics.device_up("alice", UpChannel.ROUND), b"mine")
        got = coord.expect()
        assert (got.topic, got.payload) == (topics.device_up("alice", UpChannel.ROUND), b"mine")
        alice.publish(topics.device_up("bob", UpChannel.ROUND), b"forged")
        alice.publish(topics.device_inbox("bob"), b"forged")
        alice.publish(topics.task_announcement("mnist"), b"forged")
        assert _nothing(coord)
        assert _nothing(bob)
        bob.publish(topics.device_up("bob", UpChannel.CHECKIN), b"bob's own")
        assert coord.expect().payload == b"bob's own"

        # The coordinator reaches each inbox and announces to everyone.
        coord.publish(topics.device_inbox("bob"), b"plan")
        assert bob.expect().payload == b"plan"
        assert _nothing(alice)
        assert _nothing(spy)
        coord.publish(topics.device_inbox("alice"), b"hers")
        got = alice.expect()
        assert (got.topic, got.payload) == (topics.device_inbox("alice"), b"hers")
        coord.publish(topics.task_announcement("mnist"), b"open")
        assert alice.expect().topic == topics.task_announcement("mnist")
        assert bob.expect().topic == topics.task_announcement("mnist")
    finally:
        for c in (coord, alice, bob, spy):
            c.close()
