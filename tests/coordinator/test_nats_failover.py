"""A NATS node dies under the coordinator and a device: both move on, and messages flow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fedrt.coordinator.broker.link import LinkSettings, MqttLink
from fedrt.coordinator.broker.nats_auth import NatsAuth
from fedrt.coordinator.errors import BrokerError
from fedrt.coordinator.security.credentials import bcrypt_hash
from fedrt.protocol.topics import UpChannel, device_inbox, device_up, device_up_filter
from fedrt.sdk.errors import BrokerRefused as SdkBrokerRefused
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.transport import MqttConfig, PahoTransport
from tests.sdk.transport_support import Inbox
from tests.support.mqtt import TestClient
from tests.support.nats import COORDINATOR, SecuredCluster, needs_nats, running_cluster

DEV = "dev-failover"
_WAIT_S = 60.0  # JetStream elects new leaders for the dead node's streams within seconds


@needs_nats
@pytest.mark.parametrize("shared_loop", [False, True], ids=["own-thread", "network-loop"])
def test_coordinator_and_device_move_to_another_node(tmp_path: Path, shared_loop: bool) -> None:
    with running_cluster(tmp_path, devices=(DEV,)) as nc:
        first, *others = nc.cluster.mqtt_addresses
        loop = NetworkLoop(name="test-net") if shared_loop else None
        if loop is not None:
            loop.start()
        device = PahoTransport(
            MqttConfig(
                host=first[0],
                port=first[1],
                client_id=DEV,
                username=DEV,
                password=nc.passwords[DEV],
                protocol=4,
                fallbacks=tuple(others),
                backoff_initial_s=0.2,
                backoff_max_s=1.0,
            ),
            loop=loop,
        )
        inbox = Inbox()
        device.subscribe(device_inbox(DEV), inbox)
        try:
            asyncio.run(_exercise(nc.passwords[COORDINATOR], first, others, device, inbox, nc))
        finally:
            device.close()
            if loop is not None:
                loop.stop()


async def _exercise(
    password: str,
    first: tuple[str, int],
    others: list[tuple[str, int]],
    device: PahoTransport,
    inbox: Inbox,
    nc: SecuredCluster,
) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_message(topic: str, payload: bytes) -> None:
        await received.put((topic, payload))

    link = MqttLink(
        LinkSettings(
            host=first[0],
            port=first[1],
            username=COORDINATOR,
            password=password,
            identifier=COORDINATOR,
            subscriptions=(device_up_filter(),),
            fallbacks=tuple(others),
            max_qos=1,
        ),
        on_message,
    )
    await link.start(timeout=30.0)
    try:
        device.start()
        assert await asyncio.to_thread(device.wait_connected, 30.0)
        device.publish(device_up(DEV, UpChannel.CHECKIN), b"before")
        assert await asyncio.wait_for(received.get(), 30.0) == (
            device_up(DEV, UpChannel.CHECKIN),
            b"before",
        )
        connects = device.connection_count
        nc.cluster.kill_node(0)  # the first listener of both
        # Both reconnect elsewhere (bounded waits), and the persistent sessions carry on.
        deadline = time.monotonic() + _WAIT_S
        while not (link.connected and link.connects >= 2):
            assert time.monotonic() < deadline, f"link: {link.last_error}"
            await asyncio.sleep(0.1)
        while not (device.connected and device.connection_count > connects):
            assert time.monotonic() < deadline, f"device: {device.last_error}"
            await asyncio.sleep(0.1)
        assert device.address != first
        link.enqueue(device_inbox(DEV), b"after", 1)
        message = await asyncio.to_thread(inbox.get, _WAIT_S)
        assert message.payload == b"after"
        device.publish(device_up(DEV, UpChannel.ROUND), b"after")
        while True:
            topic, payload = await asyncio.wait_for(received.get(), _WAIT_S)
            if topic == device_up(DEV, UpChannel.ROUND):  # a resent "before" may come first
                assert payload == b"after"
                break
    finally:
        await link.stop()


def _connects(nc: SecuredCluster, user: str, node: int) -> bool:
    """Whether ``user`` gets a successful CONNACK from ``node``, within a few tries (a reload
    is asynchronous)."""
    for _ in range(30):
        client = TestClient(
            *nc.mqtt(node), username=user, password=nc.passwords[user], client_id=user,
            protocol=4,
        )  # fmt: skip
        try:
            if not client.connect().is_failure:
                return True
        except TimeoutError:
            pass  # a node re-electing JetStream leaders answers only once they are up
        finally:
            client.close()
        time.sleep(0.2)
    return False


def _by_pid_files(nc: SecuredCluster) -> NatsAuth:
    """The coordinator's way of reloading: SIGHUP by pid file (``broker.nats_pid_files``)."""
    return NatsAuth(
        auth_file=nc.cluster.auth_path,
        coordinator_username=COORDINATOR,
        coordinator_password_hash=bcrypt_hash(nc.passwords[COORDINATOR]),
        reload=NatsAuth.reload_from_pid_files(nc.cluster.pid_files),
    )


@needs_nats
def test_an_enrolled_device_is_let_in_by_every_node(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as nc:
        nc.auth = _by_pid_files(nc)
        nc.enroll(DEV)  # rewrites auth.conf, SIGHUPs the three nodes
        assert all(_connects(nc, DEV, node) for node in range(3))


# 30-60 s: the killed node's JetStream leaders are elected again before the others answer.
@needs_nats
@pytest.mark.slow
def test_enrollment_reaches_every_node_even_with_one_down(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as nc:
        nc.cluster.kill_node(2)
        assert not nc.cluster.nodes[2].pid_file.exists()  # no stale pid to signal
        nc.auth = _by_pid_files(nc)
        nc.enroll(DEV)  # rewrites auth.conf, SIGHUPs the two running nodes
        assert _connects(nc, DEV, 0)
        assert _connects(nc, DEV, 1)
        nc.cluster.restart_node(2)  # it reads the file as it starts
        assert _connects(nc, DEV, 2)
        for node in nc.cluster.nodes:
            node.kill()
        with pytest.raises(BrokerError, match="cannot signal any NATS node"):
            nc.enroll("dev-late")


@needs_nats
def test_a_device_refused_by_every_node_holds_a_typed_refusal(tmp_path: Path) -> None:
    with running_cluster(tmp_path, devices=(DEV,)) as nc:
        first, *others = nc.cluster.mqtt_addresses
        device = PahoTransport(
            MqttConfig(
                host=first[0],
                port=first[1],
                client_id=DEV,
                username=DEV,
                password="not-" + nc.passwords[DEV],
                protocol=4,
                fallbacks=tuple(others),
                backoff_initial_s=0.2,
                backoff_max_s=0.5,
            )
        )
        try:
            device.start()
            seen: set[tuple[str, int]] = set()
            for _ in range(300):  # bounded: ~0.3 s a try, three nodes
                if device.refusal is not None:
                    assert "refused the connection" in str(device.refusal)
                    seen.add(device.address)
                if len(seen) == 3:
                    break
                time.sleep(0.05)
            assert isinstance(device.refusal, SdkBrokerRefused)
            assert "authoriz" in str(device.refusal).lower()
            assert not device.connected
            assert len(seen) >= 2  # it moved on from the node that refused it
        finally:
            device.close()
