"""The embedded broker's ACL mirrors the Mosquitto patterns of fedrt.protocol.topics."""

from __future__ import annotations

import itertools
import queue

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.coordinator.broker.embedded import EmbeddedAuth, filter_within
from fedrt.protocol.topics import (
    UpChannel,
    coordinator_status,
    device_inbox,
    device_up,
    task_announcements_filter,
)
from tests.support.brokers import running_embedded

# The levels filters and grants are made of, and "z", which they never name. Filters have at
# most 3 levels, so a topic at most one level deeper (4) over these shows any difference.
_LEVELS = ("a", "b", "$s", "")
_TOPICS = tuple(
    "/".join(levels)
    for depth in range(1, 5)
    for levels in itertools.product((*_LEVELS, "z"), repeat=depth)
    if levels != ("",)  # the empty topic name is not one
)
filters = st.builds(
    lambda levels, multi: "/".join([*levels, "#"] if multi else levels),
    st.lists(st.sampled_from((*_LEVELS, "+")), max_size=2),
    st.booleans(),
).filter(bool)


def _matched(topic_filter: str) -> frozenset[str]:
    return frozenset(t for t in _TOPICS if mqtt.topic_matches_sub(topic_filter, t))


@given(filters, filters)
def test_filter_within_is_inclusion_of_the_topics_matched(topic_filter: str, grant: str) -> None:
    assert filter_within(topic_filter, grant) is (_matched(topic_filter) <= _matched(grant))


@pytest.mark.parametrize(
    ("topic_filter", "grant", "expected"),
    [
        ("fedrt/v1/tasks/+", "fedrt/v1/tasks/+", True),
        ("fedrt/v1/tasks/t1", "fedrt/v1/tasks/+", True),
        ("fedrt/v1/tasks/#", "fedrt/v1/tasks/+", False),
        ("fedrt/v1/tasks", "fedrt/v1/tasks/#", True),  # "x/#" matches "x" too
        ("fedrt/v1/+/in", "fedrt/v1/dev/in", False),
        ("#", "+/#", True),
        ("$SYS/x", "#", False),  # no wildcard matches a first level starting with $
        ("a/#/b", "#", False),  # not a filter
        ("a+", "#", False),
        ("", "#", False),
    ],
)
def test_filter_within_examples(topic_filter: str, grant: str, expected: bool) -> None:
    assert filter_within(topic_filter, grant) is expected


def test_device_and_coordinator_grants() -> None:
    auth = EmbeddedAuth(verify=lambda u, p: True, coordinator_username="coord")
    mine, other = "dev-a", "dev-b"
    assert auth.allowed(mine, device_up(mine, UpChannel.UPDATE), "publish")
    assert not auth.allowed(mine, device_up(other, UpChannel.UPDATE), "publish")
    assert not auth.allowed(mine, device_inbox(mine), "publish")
    assert not auth.allowed(mine, "fedrt/v1/dev/dev-a/up/+", "publish")  # a filter
    assert auth.allowed(mine, device_inbox(mine), "subscribe")
    assert auth.allowed(mine, device_inbox(mine), "receive")
    assert not auth.allowed(mine, device_inbox(other), "subscribe")
    assert not auth.allowed(mine, device_inbox(other), "receive")
    assert not auth.allowed(mine, "fedrt/v1/dev/+/in", "subscribe")
    assert not auth.allowed(mine, "#", "subscribe")
    assert auth.allowed(mine, coordinator_status(), "subscribe")
    assert auth.allowed(mine, "fedrt/v1/tasks/+", "subscribe")
    assert auth.allowed(mine, "fedrt/v1/tasks/t1", "subscribe")
    assert not auth.allowed(mine, "fedrt/v1/tasks/#", "subscribe")
    assert not auth.allowed(mine, device_inbox(mine), "unknown action")
    assert auth.allowed("coord", "fedrt/v1/dev/+/up/+", "subscribe")
    assert auth.allowed("coord", "fedrt/v1/#", "subscribe")
    assert not auth.allowed("coord", "#", "subscribe")
    assert not auth.allowed("coord", "elsewhere/x", "publish")


def test_a_subscription_wider_than_the_grants_gets_a_failing_suback() -> None:
    """On the real broker: each filter of one SUBSCRIBE gets its own answer."""
    auth = EmbeddedAuth(verify=lambda u, p: p == "pw", coordinator_username="coord")
    asked = [
        task_announcements_filter(),  # granted as is
        "fedrt/v1/tasks/#",  # wider than fedrt/v1/tasks/+
        device_inbox("dev-a"),
        "fedrt/v1/dev/+/in",  # every device's inbox
    ]
    subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
    connacks: queue.Queue[ReasonCode] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-a", protocol=mqtt.MQTTv311)
    client.username_pw_set("dev-a", "pw")
    client.on_connect = lambda c, u, f, rc, p: connacks.put(rc)
    client.on_subscribe = lambda c, u, mid, rcs, p: subacks.put(rcs)
    with running_embedded(auth) as broker:
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert not connacks.get(timeout=10).is_failure
            client.subscribe([(f, 1) for f in asked])
            answers = subacks.get(timeout=10)
        finally:
            client.disconnect()
            client.loop_stop()
            client.reinitialise()  # closes paho's sockets now, not at a later gc
    assert [rc.is_failure for rc in answers] == [False, True, False, True]
