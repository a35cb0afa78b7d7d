"""The coordinator's MQTT link against a real broker: presence, outbox, reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fedrt.coordinator.broker.embedded import EmbeddedBroker
from fedrt.coordinator.broker.link import Lane, LinkSettings, MqttLink, lane_of
from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker
from fedrt.coordinator.errors import BrokerError, ConfigError
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import encode_message
from tests.support.cutting_proxy import CuttingProxy
from tests.support.mqtt import Received, TestClient


async def until(condition: Callable[[], bool], seconds: float, poll: float = 0.02) -> None:
    """Wait until ``condition()`` holds or ``seconds`` pass (the caller asserts after)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(poll)


def test_outbox_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    broker.start()
    received: list[tuple[str, bytes]] = []
    watcher = TestClient(broker.host, broker.port, client_id="watcher")

    async def on_message(topic: str, payload: bytes) -> None:
        received.append((topic, payload))

    async def scenario() -> None:
        link = MqttLink(
            LinkSettings(
                host=broker.host, port=broker.port, subscriptions=("in/#",), status_topic="st"
            ),
            on_message,
        )
        await link.start()
        link.enqueue("out/1", b"first")
        assert await link.flush(5)
        broker.stop()
        await asyncio.sleep(0.3)
        # Retained, so a client connecting later can check that it reached the broker.
        link.enqueue("out/2", b"queued while the broker was down", 1, True)
        broker.start()
        await until(lambda: link.connects >= 2, 15, poll=0.05)
        assert link.connects == 2
        assert await link.flush(5)
        await link.stop()

    try:
        watcher.connect()
        watcher.subscribe("out/#")
        asyncio.run(scenario())
        assert watcher.expect().payload == b"first"
    finally:
        watcher.close()
        broker.stop()
    check = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    check.start()
    try:
        late = TestClient(check.host, check.port)
        late.connect()
        late.subscribe("st")
        assert late.expect().payload == b"offline"  # retained presence after a clean stop
        late.subscribe("out/2")
        assert late.expect().payload == b"queued while the broker was down"
        late.close()
    finally:
        check.stop()


def test_unreachable_broker_is_a_broker_error() -> None:
    async def scenario() -> None:
        link = MqttLink(LinkSettings(host="127.0.0.1", port=1), lambda t, p: asyncio.sleep(0))
        with pytest.raises(BrokerError, match="cannot connect"):
            await link.start(timeout=1.0)

    asyncio.run(scenario())


def test_embedded_broker_is_loopback_only() -> None:
    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedBroker(host="0.0.0.0")

    async def twice() -> None:
        broker = EmbeddedBroker()
        await broker.start()
        try:
            with pytest.raises(BrokerError, match="already"):
                await broker.start()
        finally:
            await broker.stop()
        assert not broker.running

    asyncio.run(twice())


def test_a_failing_message_does_not_stop_ingestion(caplog: pytest.LogCaptureFixture) -> None:
    got: list[bytes] = []

    async def on_message(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("bug in one message's path")
        got.append(payload)

    async def scenario() -> None:
        broker = EmbeddedBroker()
        await broker.start()
        link = MqttLink(
            LinkSettings(host=broker.host, port=broker.port, subscriptions=("t/#",)), on_message
        )
        try:
            await link.start()
            for payload in (b"boom", b"after"):
                link.enqueue("t/x", payload)
            await until(lambda: bool(got), 10)
            assert link.failures == 1
            assert link.connects == 1  # no reconnect was needed
        finally:
            await link.stop()
            await broker.stop()

    asyncio.run(scenario())
    assert got == [b"after"]
    assert "handling a message on t/x failed" in caplog.text


def test_unhandled_messages_wait_at_the_broker_and_survive_a_restart(tmp_path: Path) -> None:
    """Acknowledged only once handled: a stalled coordinator holds at most the broker's
    in-flight window, and what it never handled is delivered again after it reconnects."""
    window = 4
    broker = MosquittoBroker(
        BrokerConfig(directory=tmp_path / "m", extra=(f"max_inflight_messages {window}",))
    )
    broker.start()
    sent = [b"update-%d" % i for i in range(30)]
    got: list[bytes] = []
    device = TestClient(broker.host, broker.port, client_id="device")

    async def stalled(topic: str, payload: bytes) -> None:
        await asyncio.Event().wait()  # never handled

    async def handle(topic: str, payload: bytes) -> None:
        got.append(payload)

    def link(on_message: Callable[[str, bytes], Awaitable[None]]) -> MqttLink:
        settings = LinkSettings(
            host=broker.host, port=broker.port, identifier="coord", subscriptions=("in/#",)
        )
        return MqttLink(settings, on_message)

    async def scenario() -> None:
        first = link(stalled)
        await first.start()
        await asyncio.to_thread(lambda: [device.publish("in/x", p) for p in sent])
        await until(lambda: first.pending >= window - 1, 10)
        await asyncio.sleep(0.3)  # room for more to arrive, were the broker not holding them
        assert window - 1 <= first.pending <= window
        await first.stop()
        second = link(handle)
        await second.start()
        await until(lambda: len(got) >= len(sent), 15)
        await asyncio.sleep(0.2)
        assert second.handled == len(sent)
        await second.stop()

    try:
        device.connect()
        asyncio.run(scenario())
    finally:
        device.close()
        broker.stop()
    assert sorted(got) == sorted(sent)


def test_a_burst_beyond_mosquittos_default_queue_waits_for_a_stalled_coordinator(
    tmp_path: Path,
) -> None:
    """Mosquitto drops QoS 1 messages past 1000 queued per client by default; the managed
    broker's queue holds a round's burst while the coordinator is busy or away."""
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    broker.start()
    sent = [b"%d" % i for i in range(1500)]
    got: list[bytes] = []
    device = TestClient(broker.host, broker.port, client_id="device")
    settings = LinkSettings(
        host=broker.host, port=broker.port, identifier="coord", subscriptions=("in/#",)
    )

    async def handle(topic: str, payload: bytes) -> None:
        got.append(payload)

    async def scenario() -> None:
        first = MqttLink(settings, handle)
        await first.start()  # subscribes with a persistent session...
        await first.stop()  # ...and goes away while the burst arrives

        def burst() -> None:
            infos = [device.client.publish("in/x", p, qos=1) for p in sent]
            for info in infos:
                info.wait_for_publish(30)

        await asyncio.to_thread(burst)
        got.clear()
        second = MqttLink(settings, handle)
        await second.start()
        await until(lambda: len(got) >= len(sent), 30, poll=0.05)
        await second.stop()

    try:
        device.connect()
        asyncio.run(scenario())
    finally:
        device.close()
        broker.stop()
    assert sorted(got) == sorted(sent)


def test_a_slow_coordinator_holds_at_most_max_pending_messages(tmp_path: Path) -> None:
    """Many devices publishing while the coordinator works through a backlog: the link stops
    reading at ``max_pending`` (Mosquitto's own in-flight window overshoots by hundreds once
    acknowledgements flow), and every message is still handled exactly once."""
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    broker.start()
    devices = [TestClient(broker.host, broker.port, client_id=f"d{i}") for i in range(30)]
    sent = {b"%d-%d" % (i, j) for i in range(len(devices)) for j in range(10)}
    got: list[bytes] = []
    most = 0
    settings = LinkSettings(
        host=broker.host, port=broker.port, subscriptions=("in/#",), max_pending=8
    )

    async def scenario() -> None:
        nonlocal most
        link: MqttLink | None = None

        async def slow(topic: str, payload: bytes) -> None:
            nonlocal most
            assert link is not None
            most = max(most, link.pending)
            time.sleep(0.002)  # the handler's CPU work: the loop reads nothing meanwhile
            got.append(payload)

        link = MqttLink(settings, slow)
        await link.start()

        def burst() -> None:
            infos = [
                d.client.publish(f"in/{i}", b"%d-%d" % (i, j), qos=1)
                for j in range(10)
                for i, d in enumerate(devices)
            ]
            for info in infos:
                info.wait_for_publish(30)

        await asyncio.to_thread(burst)
        await until(lambda: len(got) >= len(sent), 30)
        await link.stop()

    try:
        for d in devices:
            d.connect()
        asyncio.run(scenario())
    finally:
        for d in devices:
            d.close()
        broker.stop()
    assert sorted(got) == sorted(sent)
    assert 0 < most <= settings.max_pending


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_cut_connection_shows_the_will_resends_and_keeps_the_session(
    tmp_path: Path, protocol: int
) -> None:
    """Cut mid-publish: the broker publishes the will, the link reconnects with back-off, says
    it is online again and resends what was cut; what devices send while it is stopped waits
    in its persistent session (MQTT 5: a session that does not expire at disconnect)."""
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    broker.start()
    proxy = CuttingProxy(broker.host, broker.port)
    watcher = TestClient(broker.host, broker.port, client_id="watcher")
    device = TestClient(broker.host, broker.port, client_id="device")
    got: list[bytes] = []
    seen: list[Received] = []
    settings = LinkSettings(
        host=proxy.host,
        port=proxy.port,
        identifier="coord",
        subscriptions=("in/#",),
        status_topic="st",
        incarnation="0123abcd",
        protocol=protocol,
    )

    async def handle(topic: str, payload: bytes) -> None:
        got.append(payload)

    def watch_until(payload: bytes) -> None:
        for _ in range(10):  # bounded: a few presence messages, then the payload
            seen.append(watcher.expect())
            if seen[-1].payload == payload:
                return

    async def scenario() -> None:
        link = MqttLink(settings, handle)
        await link.start()
        await asyncio.to_thread(watch_until, b"online 0123abcd")
        proxy.cut_upstream_after(5)  # the PUBLISH never reaches the broker whole
        link.enqueue("out/1", b"across the cut")
        await until(lambda: link.connects >= 2, 15, poll=0.05)
        assert link.connects == 2
        assert await link.flush(5)
        await asyncio.to_thread(watch_until, b"across the cut")
        await link.stop()
        await asyncio.to_thread(device.publish, "in/x", b"while stopped")
        again = MqttLink(settings, handle)
        await again.start()
        await until(lambda: bool(got), 10)
        await again.stop()

    try:
        for client in (watcher, device):
            client.connect()
        watcher.subscribe("st")
        watcher.subscribe("out/#")
        asyncio.run(scenario())
    finally:
        for client in (watcher, device):
            client.close()
        proxy.close()
        broker.stop()
    payloads = [m.payload for m in seen]
    assert proxy.cuts == 1
    assert b"offline" in payloads  # the will
    assert payloads.count(b"online 0123abcd") == 2  # after the first connect, then the second
    assert b"online 0123abcd" in payloads[payloads.index(b"offline") :]  # back online
    assert payloads.count(b"across the cut") == 1
    assert got == [b"while stopped"]


def test_link_settings_and_enqueue_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        LinkSettings(host="127.0.0.1", port=1883, protocol=3)
    with pytest.raises(ConfigError, match="max_pending"):
        LinkSettings(host="127.0.0.1", port=1883, max_pending=0)
    link = MqttLink(LinkSettings(host="127.0.0.1", port=1), lambda t, p: asyncio.sleep(0))
    for topic in ("", "a/+", "a/#"):
        with pytest.raises(BrokerError, match="MQTT topic name"):
            link.enqueue(topic, b"x")
    with pytest.raises(BrokerError, match="QoS"):
        link.enqueue("a", b"x", qos=3)


def test_round_traffic_leaves_ahead_of_queued_reconnect_windows(tmp_path: Path) -> None:
    """Windows queued first (here before the link connects) still leave after the round
    traffic queued behind them."""
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    broker.start()
    watcher = TestClient(broker.host, broker.port, client_id="watcher")
    window = encode_message(
        rm.ReconnectWindow(
            msg_id=1, task_id="t", round_id=1, earliest=1.0, latest=2.0,
            reason=rm.ReconnectReason.ROUND_FULL,
        )
    )  # fmt: skip
    assert lane_of(window) is Lane.PACE
    assert lane_of(b"plan bytes") is Lane.ROUND

    async def scenario() -> None:
        link = MqttLink(LinkSettings(host=broker.host, port=broker.port), _ignore)
        for i in range(40):
            link.enqueue(f"out/pace/{i}", window)
        for i in range(10):
            link.enqueue(f"out/round/{i}", b"round %d" % i)
        assert link.queued(Lane.PACE) == 40
        assert link.queued(Lane.ROUND) == 10
        await link.start()
        assert await link.flush(10)
        await link.stop()

    try:
        watcher.connect()
        watcher.subscribe("out/#")
        asyncio.run(scenario())
        topics = [watcher.expect().topic for _ in range(50)]
    finally:
        watcher.close()
        broker.stop()
    assert topics[:10] == [f"out/round/{i}" for i in range(10)]
    assert topics[10:] == [f"out/pace/{i}" for i in range(40)]


def test_a_full_outbox_counts_both_lanes() -> None:
    link = MqttLink(LinkSettings(host="127.0.0.1", port=1, max_outbox=3), _ignore)
    link.enqueue("a", b"x", lane=Lane.PACE)
    link.enqueue("a", b"x", lane=Lane.ROUND)
    link.enqueue("a", b"x", lane=Lane.PACE)
    with pytest.raises(BrokerError, match="outbox full"):
        link.enqueue("a", b"x", lane=Lane.ROUND)
    assert link.outbox_size == 3


async def _ignore(topic: str, payload: bytes) -> None:
    return None


@pytest.mark.parametrize("kept", [True, False], ids=["followed-file", "no-file"])
def test_a_restart_unsubscribes_what_the_crashed_process_followed(
    tmp_path: Path, kept: bool
) -> None:
    """The session is persistent: a cohort topic followed when the process died is still
    subscribed at the broker. With ``followed_file`` the next process unsubscribes it at its
    first connect (without, it keeps receiving a round it knows nothing of)."""
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path / "m"))
    broker.start()
    device = TestClient(broker.host, broker.port, client_id="device")
    got: list[tuple[str, bytes]] = []
    settings = LinkSettings(
        host=broker.host,
        port=broker.port,
        identifier="coord",
        subscriptions=("in/#",),
        followed_file=tmp_path / "followed.json" if kept else None,
    )

    async def handle(topic: str, payload: bytes) -> None:
        got.append((topic, payload))

    async def scenario() -> None:
        crashed = MqttLink(settings, handle)
        await crashed.start()
        crashed.follow(["cohort/old/#", "cohort/kept/#"])
        for _ in range(40):  # bounded: until the SUBSCRIBE has taken effect
            await asyncio.to_thread(device.publish, "cohort/old/1", b"before")
            await until(lambda: bool(got), 0.25)
            if got:
                break
        assert got[0] == ("cohort/old/1", b"before")
        await crashed.stop()  # as a crash would: nothing unfollowed
        got.clear()
        restarted = MqttLink(settings, handle)
        restarted.follow(["cohort/kept/#"])  # the new process follows this one again
        await restarted.start()
        for topic, payload in (("cohort/old/1", b"stale"), ("cohort/kept/1", b"kept"),
                               ("in/x", b"marker")):  # fmt: skip
            await asyncio.to_thread(device.publish, topic, payload)
        await until(lambda: ("in/x", b"marker") in got, 10)
        await restarted.stop()

    try:
        device.connect()
        asyncio.run(scenario())
    finally:
        device.close()
        broker.stop()
    assert ("in/x", b"marker") in got
    assert ("cohort/kept/1", b"kept") in got
    assert (("cohort/old/1", b"stale") in got) is not kept
