"""The device message router (``rounds.routing``): each outcome, in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fedrt.coordinator.rounds.routing import (
    Admitted,
    DeviceRouter,
    Offered,
    Refused,
    Route,
    Routing,
)
from fedrt.protocol.relay_topics import offer_topic, relay_topic
from fedrt.protocol.topics import (
    UpChannel,
    UpTopic,
    cohort_key,
    device_up,
    device_up_cohort,
)

ME, OTHER = "coord-a", "coord-b"
MAX = 64
KEY = cohort_key("t1", 3, 0)


@dataclass
class Checks:
    """The router's two stateful checks, recorded: who was charged, who was looked up."""

    limited: set[str] = field(default_factory=set)
    enrolled: set[str] = field(default_factory=lambda: {"dev-1"})
    charged: list[str] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)

    def router(self) -> DeviceRouter:
        return DeviceRouter(
            instance_id=ME,
            max_message_bytes=MAX,
            over_rate=self._over_rate,
            enrolled=self._enrolled,
        )

    def _over_rate(self, device_id: str) -> bool:
        self.charged.append(device_id)
        return device_id in self.limited

    def _enrolled(self, device_id: str) -> bool:
        self.looked_up.append(device_id)
        return device_id in self.enrolled


def route(
    checks: Checks,
    topic: str,
    payload: bytes = b"x",
    *,
    relaying: bool = True,
    driving: bool = True,
) -> Routing:
    return checks.router().route(topic, payload, relaying=relaying, driving=driving)


def test_a_plain_message_of_an_enrolled_device_goes_through_the_relay_first() -> None:
    checks = Checks()
    got = route(checks, device_up("dev-1", UpChannel.CHECKIN))
    up = UpTopic(device_id="dev-1", channel=UpChannel.CHECKIN)
    assert got == Admitted(up=up, route=Route.RELAY)
    assert checks.charged == ["dev-1"]
    assert checks.looked_up == ["dev-1"]


def test_without_a_relay_it_goes_to_the_driver() -> None:
    got = route(Checks(), device_up("dev-1", UpChannel.ROUND), relaying=False)
    up = UpTopic(device_id="dev-1", channel=UpChannel.ROUND)
    assert got == Admitted(up=up, route=Route.DRIVER)


def test_a_cohort_message_skips_the_relay() -> None:
    checks = Checks()
    got = route(checks, device_up_cohort("dev-1", KEY, UpChannel.UPDATE))
    up = UpTopic(device_id="dev-1", channel=UpChannel.UPDATE, cohort=KEY)
    assert got == Admitted(up=up, route=Route.DRIVER)
    assert checks.charged == ["dev-1"]


def test_a_forwarded_message_skips_the_rate_limit_and_the_relay() -> None:
    checks = Checks(limited={"dev-1"})
    got = route(checks, relay_topic(ME, "dev-1", UpChannel.ROUND))
    up = UpTopic(device_id="dev-1", channel=UpChannel.ROUND)
    assert got == Admitted(up=up, route=Route.DRIVER)
    assert checks.charged == []  # the instance that forwarded it metered it
    assert checks.looked_up == ["dev-1"]


@pytest.mark.parametrize(
    ("instance", "relaying"),
    [(ME, False), (OTHER, True)],
    ids=["mine-without-a-relay", "another-instances"],
)
def test_a_relay_topic_not_for_this_relay_is_a_bad_topic(instance: str, relaying: bool) -> None:
    got = route(Checks(), relay_topic(instance, "dev-1", UpChannel.ROUND), relaying=relaying)
    assert isinstance(got, Refused)
    assert (got.channel, got.outcome) == ("invalid", "bad_topic")


@pytest.mark.parametrize(
    "topic",
    [
        "fedrt/v1/dev/dev-1/up/nope",
        "fedrt/v1/dev/dev-1/in",
        "fedrt/v1/dev/dev-1/up/c/" + KEY + "/checkin",  # a check-in has no cohort
        "elsewhere",
    ],
)
def test_a_bad_topic_is_refused_before_any_check(topic: str) -> None:
    checks = Checks()
    got = route(checks, topic)
    assert isinstance(got, Refused)
    assert (got.channel, got.outcome) == ("invalid", "bad_topic")
    assert checks.charged == []


def test_too_large_is_refused_before_it_spends_a_rate_token() -> None:
    checks = Checks()
    got = route(checks, device_up("dev-1", UpChannel.UPDATE), b"u" * (MAX + 1))
    assert got == Refused(channel="update", outcome="too_large", why=f"dev-1: {MAX + 1} B")
    assert checks.charged == []
    assert route(checks, device_up("dev-1", UpChannel.UPDATE), b"u" * MAX) == Admitted(
        up=UpTopic(device_id="dev-1", channel=UpChannel.UPDATE), route=Route.RELAY
    )


def test_rate_limited_is_refused_before_the_enrollment_lookup() -> None:
    checks = Checks(limited={"dev-1"})
    got = route(checks, device_up("dev-1", UpChannel.STATUS))
    assert got == Refused(channel="status", outcome="rate_limited", why="dev-1")
    assert checks.looked_up == []


def test_an_unknown_device_is_refused() -> None:
    checks = Checks()
    got = route(checks, device_up("ghost", UpChannel.CHECKIN))
    assert got == Refused(channel="checkin", outcome="unknown_device", why="ghost")
    assert checks.charged == ["ghost"]


def test_without_a_driver_an_enrolled_device_is_admitted_to_no_driver() -> None:
    got = route(Checks(), device_up("dev-1", UpChannel.CHECKIN), driving=False)
    up = UpTopic(device_id="dev-1", channel=UpChannel.CHECKIN)
    assert got == Admitted(up=up, route=Route.NO_DRIVER)


def test_an_offer_nudge_names_its_task() -> None:
    checks = Checks()
    assert route(checks, offer_topic(ME), b"task-7") == Offered(task_id="task-7")
    assert checks.charged == []


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"no/slash"])
def test_an_offer_nudge_that_names_no_task_is_invalid(payload: bytes) -> None:
    got = route(Checks(), offer_topic(ME), payload)
    assert isinstance(got, Refused)
    assert (got.channel, got.outcome) == ("offer", "invalid")


def test_an_offer_nudge_without_a_driver_is_a_bad_topic() -> None:
    got = route(Checks(), offer_topic(ME), b"task-7", driving=False)
    assert isinstance(got, Refused)
    assert (got.channel, got.outcome) == ("invalid", "bad_topic")
