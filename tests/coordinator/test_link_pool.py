"""The coordinator publishing through several MQTT connections (a NATS cluster)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from fedrt.coordinator.broker.link import LinkSettings, MqttLink
from fedrt.coordinator.broker.link_pool import LinkPool
from fedrt.coordinator.broker.settings import NATS_PUBLISH_CONNECTIONS, BrokerConfig
from fedrt.coordinator.errors import ConfigError
from fedrt.protocol.topics import PREFIX, coordinator_status, device_inbox
from tests.support.nats import COORDINATOR, needs_nats, running_cluster

DEVICES = [f"dev-pool-{i}" for i in range(8)]
PER_DEVICE = 40
_WAIT_S = 60.0


async def _ignore(topic: str, payload: bytes) -> None:
    return None


def _settings(host: str = "127.0.0.1", port: int = 1883, **more: object) -> LinkSettings:
    return LinkSettings(host=host, port=port, identifier=COORDINATOR, max_qos=1, **more)  # type: ignore[arg-type]


def test_each_topic_has_one_link_and_retained_messages_take_the_reading_one() -> None:
    pool = LinkPool(_settings(status_topic=coordinator_status()), _ignore, connections=4)
    assert len(pool.links) == 4
    # The publishers neither read nor announce presence, and log in under ids of their own.
    assert [link.settings.subscriptions for link in pool.publishers] == [()] * 3
    assert all(link.settings.status_topic is None for link in pool.publishers)
    ids = [link.settings.identifier for link in pool.links]
    assert len(set(ids)) == 4
    chosen = {pool.link_for(device_inbox(d)) for d in DEVICES}
    assert len(chosen) > 1  # the inboxes spread over the connections
    for d in DEVICES:
        assert pool.link_for(device_inbox(d)) is pool.link_for(device_inbox(d))
        assert pool.link_for(device_inbox(d), retain=True) is pool.primary
    # Each connection starts at another listener of the cluster, and knows them all.
    spread = LinkPool(_settings(fallbacks=(("127.0.0.2", 1883), ("127.0.0.3", 1883))), _ignore,
                      connections=4)  # fmt: skip
    firsts = [link.settings.addresses[0][0] for link in spread.links]
    assert firsts == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
    assert all(len(set(link.settings.addresses)) == 3 for link in spread.links)
    single = LinkPool(_settings(), _ignore)
    assert single.link_for(device_inbox(DEVICES[0])) is single.primary


@pytest.mark.parametrize("connections", [0, 65])
def test_a_pool_size_out_of_range_is_a_config_error(connections: int) -> None:
    with pytest.raises(ConfigError, match=r"1\.\.64"):
        LinkPool(_settings(), _ignore, connections=connections)


def test_publish_connections_setting(tmp_path: Path) -> None:
    nats = {"url": "mqtt://127.0.0.1:4883", "nats_auth_file": tmp_path / "auth.conf",
            "password": "pw"}  # fmt: skip
    assert BrokerConfig(**nats).connections == NATS_PUBLISH_CONNECTIONS  # type: ignore[arg-type]
    assert BrokerConfig(**nats, publish_connections=2).connections == 2  # type: ignore[arg-type]
    assert BrokerConfig(url="mqtt://127.0.0.1:1883").connections == 1
    # Mosquitto may tie the client id to the username: one connection only.
    with pytest.raises(ConfigError, match="needs a NATS cluster"):
        BrokerConfig(url="mqtt://127.0.0.1:1883", publish_connections=2)
    with pytest.raises(ConfigError, match=r"1\.\.64"):
        BrokerConfig(**nats, publish_connections=0)  # type: ignore[arg-type]


@needs_nats
def test_every_message_arrives_in_order_per_topic_through_a_nats_cluster(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path) as nc:
        (host, port), *others = nc.cluster.mqtt_addresses
        password = nc.passwords[COORDINATOR]
        asyncio.run(_exercise(host, port, others, password))


async def _exercise(host: str, port: int, others: list[tuple[str, int]], password: str) -> None:
    got: dict[str, list[bytes]] = defaultdict(list)
    total = len(DEVICES) * PER_DEVICE
    done = asyncio.Event()

    async def on_message(topic: str, payload: bytes) -> None:
        got[topic].append(payload)
        if sum(map(len, got.values())) >= total:
            done.set()

    # A reader on another node, as a device's inbox would be read there.
    reader = MqttLink(
        LinkSettings(host=others[0][0], port=others[0][1], identifier=f"{COORDINATOR}-reader",
                     username=COORDINATOR, password=password, max_qos=1,
                     subscriptions=(f"{PREFIX}/dev/+/in",)),
        on_message,
    )  # fmt: skip
    pool = LinkPool(
        LinkSettings(host=host, port=port, identifier=COORDINATOR, username=COORDINATOR,
                     password=password, max_qos=1, fallbacks=tuple(others)),
        _ignore,
        connections=4,
    )  # fmt: skip
    await reader.start(timeout=30.0)
    await pool.start(timeout=30.0)
    try:
        assert all(link.connected for link in pool.links)
        assert pool.connects == 1  # the reading link's count, as simulate's chaos reads it
        assert pool.last_error is None
        for n in range(PER_DEVICE):
            for d in DEVICES:
                pool.enqueue(device_inbox(d), f"{n}".encode(), 1)
        assert await pool.flush(_WAIT_S)
        await asyncio.wait_for(done.wait(), _WAIT_S)
        # Each inbox got every message once, in the order it was sent.
        expected = [f"{n}".encode() for n in range(PER_DEVICE)]
        assert {t: got[t] for t in got} == {device_inbox(d): expected for d in DEVICES}
    finally:
        await pool.stop()
        await reader.stop()
