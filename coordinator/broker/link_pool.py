"""The coordinator's MQTT link, with more connections that only publish (a NATS cluster).

NATS 2.9's MQTT listener stores each QoS 1 PUBLISH in JetStream (a replicated stream) before
it answers PUBACK, and it does so inside the connection's read loop: one connection's QoS 1
publishes are stored one after another, however many are in flight. Measured on the 2-core
build machine with a quiet 3-node cluster, one connection took 226-307 QoS 1 publishes a
second (with 20 or 200 in flight) and four connections 1,132-1,277. A round sends every
device several messages (plan, acknowledgements, stage requests); at 1,000 devices through
one connection on a loaded machine, they reached the devices after the stage deadlines
(issue 17, benchmark 2). Mosquitto answers from memory: one connection is enough there.

The first link is the coordinator's usual one: it reads, subscribes, and publishes the
retained presence and announcements. Every other message goes through the link its topic
hashes to, so the messages on one topic (a device's inbox) keep their order, as they do on
one connection. Across topics a cluster promises no order anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import zlib
from collections.abc import Sequence

from fedrt.coordinator.broker.link import Lane, LinkSettings, MqttLink, OnMessage
from fedrt.coordinator.broker.settings import MAX_PUBLISH_CONNECTIONS
from fedrt.coordinator.errors import BrokerError, ConfigError

__all__ = ["LinkPool"]


class LinkPool:
    """``connections`` MQTT links to one broker: the first reads and publishes, the rest
    only publish (see the module docstring)."""

    def __init__(self, settings: LinkSettings, on_message: OnMessage, *, connections: int = 1):
        if not 1 <= connections <= MAX_PUBLISH_CONNECTIONS:
            raise ConfigError(
                f"MQTT connections must be 1..{MAX_PUBLISH_CONNECTIONS}, not {connections}"
            )
        self.primary = MqttLink(settings, on_message)
        self.publishers = [
            MqttLink(_publisher_settings(settings, k), _refuse_messages)
            for k in range(1, connections)
        ]

    @property
    def links(self) -> list[MqttLink]:
        return [self.primary, *self.publishers]

    @property
    def connected(self) -> bool:
        return self.primary.connected

    # The reading link's counters: what a caller watching "the coordinator's link" means.
    @property
    def connects(self) -> int:
        return self.primary.connects

    @property
    def last_error(self) -> BrokerError | None:
        return self.primary.last_error

    @property
    def outbox_size(self) -> int:
        return sum(link.outbox_size for link in self.links)

    def link_for(self, topic: str, retain: bool = False) -> MqttLink:
        """The link that publishes on ``topic``: the same one for every message on it."""
        if retain or not self.publishers:
            return self.primary
        links = self.links
        return links[zlib.crc32(topic.encode()) % len(links)]

    def enqueue(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        lane: Lane | None = None,
    ) -> None:
        self.link_for(topic, retain).enqueue(topic, payload, qos, retain, lane=lane)

    def follow(self, filters: Sequence[str], on: bool = True) -> None:
        self.primary.follow(filters, on)

    def following(self) -> list[str]:
        return self.primary.following()

    def set_incarnation(self, incarnation: str) -> None:
        self.primary.set_incarnation(incarnation)

    async def flush(self, timeout: float) -> bool:
        done = await asyncio.gather(*(link.flush(timeout) for link in self.links))
        return all(done)

    async def start(self, timeout: float = 10.0) -> None:
        """The reading link first (its errors are the ones to report), then the others."""
        await self.primary.start(timeout)
        try:
            await asyncio.gather(*(link.start(timeout) for link in self.publishers))
        except BrokerError:
            await self.stop()
            raise

    async def stop(self, *, offline: bool = True) -> None:
        for link in self.publishers:
            with contextlib.suppress(BrokerError):
                await link.stop(offline=False)
        await self.primary.stop(offline=offline)


def _publisher_settings(settings: LinkSettings, k: int) -> LinkSettings:
    """Publisher ``k``: no reading, no presence, an id of its own, and the cluster's
    listeners taken from the ``k``-th on, so that the connections spread over the nodes."""
    addresses = settings.addresses
    first = k % len(addresses)
    (host, port), *fallbacks = addresses[first:] + addresses[:first]
    return dataclasses.replace(
        settings,
        host=host,
        port=port,
        fallbacks=tuple(fallbacks),
        identifier=f"{settings.identifier}-p{k}",
        subscriptions=(),
        status_topic=None,
        incarnation=None,
        followed_file=None,
    )


async def _refuse_messages(topic: str, _: bytes) -> None:
    # A publisher subscribes to nothing; a message here means the broker replayed an old
    # session's subscription, which the reading link already serves.
    return None
