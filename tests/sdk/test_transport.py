"""The Transport conformance suite: PahoTransport on a real Mosquitto, and the in-memory twin."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fedrt.sdk.errors import NotConnected, SdkConfigError, TransportError
from fedrt.sdk.memory_transport import MemoryBroker, MemoryTransport
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.transport import MqttConfig, PahoTransport, ReconnectBackoff, Transport
from tests.sdk.transport_support import TIMEOUT, Inbox, eventually

if TYPE_CHECKING:
    from fedrt.coordinator.broker.embedded import EmbeddedBroker


@dataclass
class Net:
    """Makes transports on one broker and restarts that broker."""

    make: Callable[[str], Transport]
    restart: Callable[[], None]
    started: list[Transport]
    carries_ids: bool = True  # MQTT 3.1.1 has no user properties for message ids

    def client(self, client_id: str, *, start: bool = True) -> Transport:
        t = self.make(client_id)
        self.started.append(t)
        if start:
            t.start()
            assert t.wait_connected(TIMEOUT)
        return t


def fast(host: str, port: int, client_id: str, **kw: object) -> MqttConfig:
    return MqttConfig(
        host=host,
        port=port,
        client_id=client_id,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["memory", "mosquitto", "mosquitto-v311", "mosquitto-shared-loop"])
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    started: list[Transport] = []
    loop: NetworkLoop | None = None
    if request.param == "memory":
        broker = MemoryBroker()

        def restart_memory() -> None:
            broker.stop()
            broker.start()

        yield Net(lambda cid: MemoryTransport(broker, cid), restart_memory, started)
    else:
        mosq = request.getfixturevalue("mosquitto")

        def restart_mosquitto() -> None:
            mosq.stop()
            mosq.start()

        protocol = 4 if request.param.endswith("v311") else 5
        if request.param.endswith("shared-loop"):
            # Many links on one thread, as simulated fleets run them.
            loop = NetworkLoop()
            loop.start()
        yield Net(
            lambda cid: PahoTransport(
                fast(mosq.host, mosq.port, cid, protocol=protocol),
                rng=random.Random(1),
                loop=loop,
            ),
            restart_mosquitto,
            started,
            carries_ids=protocol == 5,
        )
    for t in started:
        t.close()
    if loop is not None:
        loop.stop()


def test_publish_reaches_a_subscriber_with_its_id(net: Net) -> None:
    inbox = Inbox()
    sub = net.client("sub")
    sub.subscribe("a/b", inbox)
    pub = net.client("pub")
    # The subscription may still be in flight: publish until it lands (QoS 1, same topic).
    assert eventually(lambda: _probe(pub, sub, "a/b", inbox))
    pub.publish("a/b", b"\x00payload\xff", msg_id="m-1")
    got = inbox.get()
    assert (got.topic, got.payload) == ("a/b", b"\x00payload\xff")
    assert got.msg_id == ("m-1" if net.carries_ids else None)
    pub.publish("a/b", b"plain")
    assert inbox.get().msg_id is None


def _probe(pub: Transport, sub: Transport, topic: str, inbox: Inbox) -> bool:
    """Publish probes until one arrives (the subscription is in place), then drain the rest."""
    pub.publish(topic, b"probe")
    try:
        while inbox.get(0.2).payload != b"probe":
            pass
    except Exception:
        return False
    while not inbox.empty_for(0.2):
        pass
    return True


def test_wildcards_and_unsubscribe(net: Net) -> None:
    plus, hash_ = Inbox(), Inbox()
    sub = net.client("sub")
    sub.subscribe("dev/+/up", plus)
    sub.subscribe("dev/#", hash_)
    pub = net.client("pub")
    assert eventually(lambda: _probe(pub, sub, "dev/x/up", plus))
    while not hash_.empty_for(0.3):
        pass
    pub.publish("dev/d1/up", b"1")
    pub.publish("dev/d1/up/deeper", b"2")
    assert plus.get().payload == b"1"
    assert {hash_.get().payload, hash_.get().payload} == {b"1", b"2"}
    assert plus.empty_for(0.3)  # "+" matched one level only
    sub.unsubscribe("dev/#")
    assert eventually(lambda: _probe(pub, sub, "dev/y/up", plus))
    while not hash_.empty_for(0.3):
        pass
    pub.publish("dev/z/other", b"3")
    assert hash_.empty_for(0.5)


def test_publish_while_disconnected_raises(net: Net) -> None:
    t = net.client("lonely", start=False)
    with pytest.raises(NotConnected):
        t.publish("a", b"x")


def test_bad_topics_are_refused(net: Net) -> None:
    t = net.client("picky")
    for topic in ("", "a/+/b", "a/#"):
        with pytest.raises(TransportError):
            t.publish(topic, b"x")
    with pytest.raises(TransportError):
        t.subscribe("a/#/b", Inbox())
    with pytest.raises(TransportError):
        t.publish("a", b"x", qos=2)


def test_persistent_session_queues_while_offline(net: Net) -> None:
    inbox = Inbox()
    first = net.client("device-1", start=False)
    first.subscribe("plans/device-1", inbox)
    first.start()
    assert first.wait_connected(TIMEOUT)
    pub = net.client("coordinator")
    assert eventually(lambda: _probe(pub, first, "plans/device-1", inbox))
    first.close()
    pub.publish("plans/device-1", b"while you were away", msg_id="p1")
    pub.publish("plans/device-1", b"and this", msg_id="p2")
    again_inbox = Inbox()
    again = net.client("device-1", start=False)
    again.subscribe("plans/device-1", again_inbox)
    sessions: list[bool] = []
    again.add_connect_listener(sessions.append)
    again.start()
    got = [again_inbox.get(), again_inbox.get()]
    assert [m.payload for m in got] == [b"while you were away", b"and this"]
    if net.carries_ids:
        assert [m.msg_id for m in got] == ["p1", "p2"]
    assert eventually(lambda: sessions == [True])


def _linked(net: Net, topic: str) -> tuple[Transport, Transport, Inbox, list[bool]]:
    """A subscriber to ``topic`` (its connect events recorded) and a publisher it hears."""
    inbox = Inbox()
    sub = net.client("sub", start=False)
    sub.subscribe(topic, inbox)
    connects: list[bool] = []
    sub.add_connect_listener(connects.append)
    sub.start()
    assert sub.wait_connected(TIMEOUT)
    pub = net.client("pub")
    assert eventually(lambda: _probe(pub, sub, topic, inbox))
    return sub, pub, inbox, connects


def test_reconnects_after_a_broker_restart(net: Net) -> None:
    sub, pub, inbox, connects = _linked(net, "after/restart")
    net.restart()
    assert eventually(lambda: len(connects) >= 2)
    assert eventually(lambda: pub.connected and sub.connected)
    assert eventually(lambda: _probe(pub, sub, "after/restart", inbox))


def test_a_lost_network_cuts_the_link_until_it_is_back(net: Net) -> None:
    sub, pub, inbox, connects = _linked(net, "net/x")
    sub.network_changed(False)
    assert not sub.connected
    with pytest.raises(NotConnected):
        sub.publish("net/y", b"from nowhere")
    # The broker notices the cut (keep-alive or a reset) and queues for the session.
    pub.publish("net/x", b"while away", msg_id="away")
    # Several back-off periods (0.05-0.5 s here) pass without a connection.
    assert not sub.wait_connected(1.5)
    assert len(connects) == 1
    sub.network_changed(True)
    assert sub.wait_connected(TIMEOUT)
    assert eventually(lambda: inbox.get().payload == b"while away")
    assert eventually(lambda: _probe(pub, sub, "net/x", inbox))


def test_retained_messages_reach_later_subscribers(net: Net) -> None:
    pub = net.client("pub")
    pub.publish("tasks/t1", b"announcement", retain=True)
    inbox = Inbox()
    late = net.client("late")
    late.subscribe("tasks/+", inbox)
    got = inbox.get()
    assert (got.payload, got.retained) == (b"announcement", True)


def test_a_failing_handler_does_not_stop_delivery(net: Net) -> None:
    inbox = Inbox()

    def boom(message: object) -> None:
        raise RuntimeError("app bug")

    sub = net.client("sub")
    sub.subscribe("x/bad", boom)
    sub.subscribe("x/good", inbox)
    pub = net.client("pub")
    assert eventually(lambda: _probe(pub, sub, "x/good", inbox))
    pub.publish("x/bad", b"1")
    pub.publish("x/good", b"2")
    assert inbox.get().payload == b"2"


# -- PahoTransport specifics -------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered() -> None:
    backoff = ReconnectBackoff(1.0, 30.0, random.Random(7))
    delays = [backoff.delay(n) for n in range(8)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    for d, c in zip(delays, ceilings, strict=True):
        assert c / 2 <= d <= c
    again = ReconnectBackoff(1.0, 30.0, random.Random(7))
    assert [again.delay(n) for n in range(8)] == delays  # reproducible from the seed
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) > 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"client_id": ""},
        {"port": 0},
        {"password": "x"},
        {"keepalive_s": 1},
        {"ca_file": Path("/nonexistent/ca.pem")},
        {"backoff_initial_s": 0},
        {"backoff_initial_s": 10, "backoff_max_s": 1},
    ],
)
def test_bad_mqtt_config_is_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"host": "127.0.0.1", "client_id": "d"}
    with pytest.raises(SdkConfigError):
        MqttConfig(**(base | kwargs))  # type: ignore[arg-type]


def test_password_is_not_in_the_config_repr() -> None:
    cfg = MqttConfig(host="h", client_id="d", username="u", password="s3cret-pw")
    assert "s3cret-pw" not in repr(cfg)


@pytest.fixture(params=["own-thread", "shared-loop"])
def loop(request: pytest.FixtureRequest) -> Iterator[NetworkLoop | None]:
    """None: paho's own network thread per link; else one loop running every link."""
    if request.param == "own-thread":
        yield None
        return
    shared = NetworkLoop()
    shared.start()
    yield shared
    shared.stop()


def test_keeps_retrying_while_the_broker_is_away(
    mosquitto: object, loop: NetworkLoop | None
) -> None:
    broker = mosquitto
    broker.stop()  # type: ignore[attr-defined]
    t = PahoTransport(fast(broker.host, broker.port, "patient"), loop=loop)  # type: ignore[attr-defined]
    t.start()
    try:
        assert not t.wait_connected(0.5)
        assert t.last_error is not None
        broker.start()  # type: ignore[attr-defined]
        assert t.wait_connected(TIMEOUT)
        assert t.last_error is None
    finally:
        t.close()


# paho keeps the wake-up socket pair of a client that never connected until exit.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_and_credentials_on_a_secured_broker(
    mosquitto_secure: object, loop: NetworkLoop | None
) -> None:
    secure = mosquitto_secure
    ca = secure.tls.ca_cert  # type: ignore[attr-defined]
    pw = secure.passwords  # type: ignore[attr-defined]
    port = secure.tls_port  # type: ignore[attr-defined]
    alice = PahoTransport(
        fast("127.0.0.1", port, "alice", username="alice", password=pw["alice"], ca_file=ca),
        loop=loop,
    )
    bob = PahoTransport(
        fast("127.0.0.1", port, "bob", username="bob", password=pw["bob"], ca_file=ca),
        loop=loop,
    )
    intruder = PahoTransport(
        fast("127.0.0.1", port, "mallory", username="alice", password="wrong", ca_file=ca),
        loop=loop,
    )
    try:
        mine, snooped = Inbox(), Inbox()
        alice.subscribe("devices/alice/#", mine)
        bob.subscribe("devices/alice/#", snooped)  # the ACL lets bob read only his own prefix
        for t in (alice, bob, intruder):
            t.start()
        assert alice.wait_connected(TIMEOUT)
        assert bob.wait_connected(TIMEOUT)
        assert eventually(lambda: _probe(alice, alice, "devices/alice/x", mine))
        alice.publish("devices/alice/update", b"secret update", msg_id="u1")
        assert mine.get().msg_id == "u1"
        assert snooped.empty_for(0.5)
        assert not intruder.wait_connected(1.0)
        assert intruder.last_error is not None
    finally:
        for t in (alice, bob, intruder):
            t.close()


@pytest.fixture
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    """The coordinator's embedded amqtt broker (MQTT 3.1.1 only) on its own event loop.

    With authentication, as the coordinator runs it: amqtt keeps no queue for anonymous
    sessions.
    """
    import asyncio
    import threading

    from fedrt.coordinator.broker.embedded import EmbeddedAuth, EmbeddedBroker

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    auth = EmbeddedAuth(
        verify=lambda user, password: password == "pw", coordinator_username="coord"
    )
    broker = EmbeddedBroker(auth=auth)
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(TIMEOUT)
    try:
        yield broker
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


# amqtt leaves the server-side transports of closed sessions open when it shuts down.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mqtt_311_mode_works_with_the_embedded_amqtt_broker(
    amqtt_broker: EmbeddedBroker,
) -> None:
    host, port = amqtt_broker.host, amqtt_broker.port
    inbox, later = Inbox(), Inbox()

    def client(user: str) -> PahoTransport:
        return PahoTransport(fast(host, port, user, protocol=4, username=user, password="pw"))

    sub, pub, again = client("dev-1"), client("coord"), client("dev-1")
    try:
        sub.subscribe("fedrt/v1/dev/dev-1/in", inbox)
        sub.start()
        pub.start()
        assert sub.wait_connected(TIMEOUT)
        assert pub.wait_connected(TIMEOUT)
        assert eventually(lambda: _probe(pub, sub, "fedrt/v1/dev/dev-1/in", inbox))
        pub.publish("fedrt/v1/dev/dev-1/in", b"plan", msg_id="ignored-in-3.1.1")
        got = inbox.get()
        assert (got.payload, got.msg_id) == (b"plan", None)
        sub.close()
        # Offline means the broker has processed the DISCONNECT: a message it delivers to a
        # connection that is still closing is lost to that connection (amqtt requeues none).
        assert eventually(lambda: not amqtt_broker.client_connected("dev-1"))
        pub.publish("fedrt/v1/dev/dev-1/in", b"queued while offline")
        again.subscribe("fedrt/v1/dev/dev-1/in", later)
        again.start()
        assert later.get().payload == b"queued while offline"
    finally:
        for t in (again, sub, pub):
            t.close()
