"""The Transport conformance suite: PahoTransport on a real Mosquitto, and the in-memory twin."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from fedrt.sdk.errors import NotConnected, TransportError
from fedrt.sdk.memory_transport import MemoryBroker, MemoryTransport
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.transport import PahoTransport, Transport
from tests.sdk.transport_support import TIMEOUT, Inbox, eventually, fast, probe

if TYPE_CHECKING:
    pass


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
    assert eventually(lambda: probe(pub, sub, "a/b", inbox))
    pub.publish("a/b", b"\x00payload\xff", msg_id="m-1")
    got = inbox.get()
    assert (got.topic, got.payload) == ("a/b", b"\x00payload\xff")
    assert got.msg_id == ("m-1" if net.carries_ids else None)
    pub.publish("a/b", b"plain")
    assert inbox.get().msg_id is None


def test_wildcards_and_unsubscribe(net: Net) -> None:
    plus, hash_ = Inbox(), Inbox()
    sub = net.client("sub")
    sub.subscribe("dev/+/up", plus)
    sub.subscribe("dev/#", hash_)
    pub = net.client("pub")
    assert eventually(lambda: probe(pub, sub, "dev/x/up", plus))
    while not hash_.empty_for(0.3):
        pass
    pub.publish("dev/d1/up", b"1")
    pub.publish("dev/d1/up/deeper", b"2")
    assert plus.get().payload == b"1"
    assert {hash_.get().payload, hash_.get().payload} == {b"1", b"2"}
    assert plus.empty_for(0.3)  # "+" matched one level only
    sub.unsubscribe("dev/#")
    assert eventually(lambda: probe(pub, sub, "dev/y/up", plus))
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
    assert eventually(lambda: probe(pub, first, "plans/device-1", inbox))
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
    assert eventually(lambda: probe(pub, sub, topic, inbox))
    return sub, pub, inbox, connects


def test_reconnects_after_a_broker_restart(net: Net) -> None:
    sub, pub, inbox, connects = _linked(net, "after/restart")
    net.restart()
    assert eventually(lambda: len(connects) >= 2)
    assert eventually(lambda: pub.connected and sub.connected)
    assert eventually(lambda: probe(pub, sub, "after/restart", inbox))


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
    assert eventually(lambda: probe(pub, sub, "net/x", inbox))


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
    assert eventually(lambda: probe(pub, sub, "x/good", inbox))
    pub.publish("x/bad", b"1")
    pub.publish("x/good", b"2")
    assert inbox.get().payload == b"2"
