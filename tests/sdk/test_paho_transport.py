"""PahoTransport beyond the conformance suite: back-off, config checks, TLS and credentials,
retrying while the broker is away, MQTT 3.1.1 with the embedded amqtt broker."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fedrt.protocol.topics import device_inbox
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.transport import MqttConfig, PahoTransport, ReconnectBackoff
from tests.sdk.transport_support import TIMEOUT, Inbox, eventually, fast, probe
from tests.support.nats import needs_nats, running_cluster

if TYPE_CHECKING:
    from fedrt.coordinator.broker.embedded import EmbeddedBroker


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
        assert eventually(lambda: probe(alice, alice, "devices/alice/x", mine))
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
        assert eventually(lambda: probe(pub, sub, "fedrt/v1/dev/dev-1/in", inbox))
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


@needs_nats
def test_a_refused_subscription_is_asked_for_again(
    tmp_path: Path, loop: NetworkLoop | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A SUBACK failure (a NATS node whose JetStream timed out creating the inbox's consumer
    answers the same 0x80 as a permission refusal) must not leave the device connected and
    deaf: it subscribes again after a back-off, on the same connection."""
    with running_cluster(tmp_path, devices=("dev-deaf", "dev-other")) as nc:
        host, port = nc.cluster.mqtt_addresses[0]
        t = PahoTransport(
            fast(host, port, "dev-deaf", username="dev-deaf", password=nc.passwords["dev-deaf"],
                 protocol=4),
            loop=loop,
        )  # fmt: skip
        inbox = Inbox()
        t.subscribe(device_inbox("dev-deaf"), inbox)
        t.subscribe(device_inbox("dev-other"), inbox)  # not its own: refused every time
        t.start()
        try:
            assert eventually(lambda: t.subscription_refusals >= 3)
            assert t.connection_count == 1
            said = [
                r.getMessage()
                for r in caplog.records
                if "refused the subscription" in r.getMessage()
            ]
            assert len(said) >= 3
            assert all(device_inbox("dev-other") in m and "asking again" in m for m in said)
        finally:
            t.close()
