"""Coordinator-only topics (``protocol.relay_topics``): a round owner's offer nudge travels
under the receiving instance's relay filter and never reads as a forwarded device message."""

from __future__ import annotations

import pytest
from paho.mqtt.client import topic_matches_sub

from fedrt.coordinator.broker.reading import nats_subject
from fedrt.protocol.relay_topics import (
    is_offer_topic,
    offer_topic,
    parse_relay_topic,
    relay_filter,
    relay_topic,
)
from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import UpChannel


def test_the_offer_nudge_is_read_through_the_instances_relay_subscription() -> None:
    topic = offer_topic("inst-b")
    assert topic_matches_sub(relay_filter("inst-b"), topic)
    assert not topic_matches_sub(relay_filter("inst-a"), topic)
    # On NATS the relay subject's wildcards cover it level for level.
    subject, pattern = nats_subject(topic).split("."), nats_subject(relay_filter("inst-b"))
    assert len(subject) == len(pattern.split("."))
    assert all(p in ("*", s) for s, p in zip(subject, pattern.split("."), strict=True))


def test_the_offer_nudge_is_told_apart_from_a_forwarded_device_message() -> None:
    assert is_offer_topic(offer_topic("inst-b"), "inst-b")
    assert not is_offer_topic(offer_topic("inst-b"), "inst-a")
    forwarded = relay_topic("inst-b", "coord", UpChannel.CHECKIN)
    assert not is_offer_topic(forwarded, "inst-b")
    assert parse_relay_topic(forwarded, "inst-b") == ("coord", UpChannel.CHECKIN)
    with pytest.raises(InvalidTopic):  # why the service checks for the nudge first
        parse_relay_topic(offer_topic("inst-b"), "inst-b")
