"""Coordinator-only topics: device messages one coordinator instance forwards to another.

    fedrt/v1/coord/inst/{i}/{d}/{channel}   coordinator -> instance {i}   queued
    fedrt/v1/coord/inst/{i}/coord/offer     coordinator -> instance {i}   queued

``{i}`` is a digest of the instance id (an id may hold '.', which NATS cannot carry in a
level), ``{d}`` the device id the broker authenticated when the device published, and
``{channel}`` the up-channel it published on. Devices can neither publish nor read there:
the Mosquitto ACL (``topics.device_acl_patterns``) and the NATS permissions
(``broker.nats_auth``) grant a device only its own ``dev/{d}/...`` topics and the public
announcements, so a forwarded message's device id is as trustworthy as a direct one's.
The second topic, under the same filter, is a round owner's nudge that it offered SecAgg+
cohorts of task {payload} to instance {i} (``rounds.cohort_spread``): its channel level is
no up-channel, so it never reads as a forwarded device message.
"""

from __future__ import annotations

import hashlib

from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import PREFIX, UpChannel, check_id

__all__ = [
    "instance_level", "is_offer_topic", "offer_topic", "parse_relay_topic", "relay_filter",
    "relay_topic",
]  # fmt: skip


def instance_level(instance_id: str) -> str:
    """The instance's topic level: a digest, since an instance id may hold '.', which NATS
    cannot carry in a level."""
    return hashlib.sha256(instance_id.encode()).hexdigest()[:16]


def relay_topic(instance_id: str, device_id: str, channel: UpChannel) -> str:
    """Where a receiver forwards ``device_id``'s message to the owner ``instance_id``."""
    level = instance_level(instance_id)
    return f"{PREFIX}/coord/inst/{level}/{check_id(device_id)}/{channel.value}"


def relay_filter(instance_id: str) -> str:
    """What the instance subscribes to for the messages forwarded to it."""
    return f"{PREFIX}/coord/inst/{instance_level(instance_id)}/+/+"


def offer_topic(instance_id: str) -> str:
    """Where a round's owner nudges ``instance_id`` to take the cohorts offered to it."""
    return f"{PREFIX}/coord/inst/{instance_level(instance_id)}/coord/offer"


def is_offer_topic(topic: str, instance_id: str) -> bool:
    """Whether ``topic`` is ``instance_id``'s offer nudge."""
    return topic == offer_topic(instance_id)


def parse_relay_topic(topic: str, instance_id: str) -> tuple[str, UpChannel] | None:
    """(device id, channel) of a message forwarded to ``instance_id``; None for a topic that
    is not a relay topic; ``InvalidTopic`` for a malformed one or another instance's."""
    head = f"{PREFIX}/coord/inst/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 3 or parts[0] != instance_level(instance_id):
        raise InvalidTopic(f"not a relay topic of this instance: {topic!r}")
    try:
        channel = UpChannel(parts[2])
    except ValueError:
        raise InvalidTopic(f"unknown up-channel in {topic!r}") from None
    return check_id(parts[1]), channel
