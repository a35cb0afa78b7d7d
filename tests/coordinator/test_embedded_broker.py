"""The embedded broker's ACL mirrors the Mosquitto patterns of fedrt.protocol.topics."""

from __future__ import annotations

import pytest

from fedrt.coordinator.broker.embedded import EmbeddedAuth, topic_matches
from fedrt.protocol.topics import UpChannel, coordinator_status, device_inbox, device_up


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),  # MQTT: "sport/#" also matches "sport"
        ("a/+", "a/b/c", False),
        ("a/b", "a/b", True),
        ("a/+/c", "a/+/c", True),
        ("a/b/c", "a/b", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_device_and_coordinator_grants() -> None:
    auth = EmbeddedAuth(verify=lambda u, p: True, coordinator_username="coord")
    mine, other = "dev-a", "dev-b"
    assert auth.allowed(mine, device_up(mine, UpChannel.UPDATE), "publish")
    assert not auth.allowed(mine, device_up(other, UpChannel.UPDATE), "publish")
    assert not auth.allowed(mine, device_inbox(mine), "publish")
    assert auth.allowed(mine, device_inbox(mine), "subscribe")
    assert auth.allowed(mine, device_inbox(mine), "receive")
    assert not auth.allowed(mine, device_inbox(other), "subscribe")
    assert not auth.allowed(mine, "fedrt/v1/dev/+/in", "subscribe")
    assert not auth.allowed(mine, "#", "subscribe")
    assert auth.allowed(mine, coordinator_status(), "subscribe")
    assert auth.allowed(mine, "fedrt/v1/tasks/+", "subscribe")
    assert auth.allowed("coord", "fedrt/v1/dev/+/up/+", "subscribe")
    assert not auth.allowed("coord", "elsewhere/x", "publish")
