"""A NATS node dies under the coordinator and a device: both move on, and messages flow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fedrt.coordinator.broker.link import LinkSettings, MqttLink
from fedrt.protocol.topics import UpChannel, device_inbox, device_up, device_up_filter
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.transport import MqttConfig, PahoTransport
from tests.sdk.transport_support import Inbox
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
