"""Which way one device MQTT message goes: the service's checks, in order, without I/O.

``DeviceRouter.route`` reads a message's topic and size and answers with what the service
does: count and log a refusal (``Refused``), pass an offer nudge to the driver
(``Offered``), or hand the message on (``Admitted``): to the driver, after the relay
(``rounds.relay``) had its say where several instances split the traffic. The topic
carries the device id, which the broker tied to the MQTT user, so a device cannot speak
for another. The two checks that read state, the per-device rate limiter and enrollment,
are functions the router is given; it calls them in this order and only once the earlier
checks passed, so a refused message never spends a rate token.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from fedrt.protocol.relay_topics import is_offer_topic, parse_relay_topic
from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import UpTopic, check_id, parse_up_topic

__all__ = ["Admitted", "DeviceRouter", "Offered", "Refused", "Route", "Routing"]


class Route(enum.Enum):
    """Where an admitted message goes from an enrolled device."""

    DRIVER = "driver"
    # ``DeviceRelay.route`` first: it forwards the message to its task's owner, answers it,
    # or leaves it to this instance's driver.
    RELAY = "relay"
    # No driver runs here: the device was seen, nothing takes the message.
    NO_DRIVER = "no_driver"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """Counted under the metric labels ``channel`` and ``outcome``, changing nothing;
    ``why`` goes to the log (None: nothing is logged)."""

    channel: str
    outcome: str
    why: object = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Offered:
    """Another instance's nudge: cohorts of ``task_id`` were offered here
    (``rounds.cohort_spread``)."""

    task_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Admitted:
    """A message of an enrolled device that passed the checks (a forwarded one reads as
    a plain up-topic: relay topics carry no cohort)."""

    up: UpTopic
    route: Route


Routing = Refused | Offered | Admitted


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRouter:
    """The checks of one instance. ``over_rate(device_id)`` charges the device's rate limit
    and says whether the message is over it; ``enrolled(device_id)``: enrolled, not revoked."""

    instance_id: str
    max_message_bytes: int
    over_rate: Callable[[str], bool]
    enrolled: Callable[[str], bool]

    def route(self, topic: str, payload: bytes, *, relaying: bool, driving: bool) -> Routing:
        """``relaying``: a relay splits the traffic with other instances (it reads their
        forwards); ``driving``: a driver runs here."""
        if driving and is_offer_topic(topic, self.instance_id):
            try:
                return Offered(task_id=check_id(payload.decode("ascii"), "task id"))
            except (UnicodeDecodeError, InvalidTopic) as exc:
                return Refused(channel="offer", outcome="invalid", why=exc)
        try:
            forwarded = parse_relay_topic(topic, self.instance_id) if relaying else None
            if forwarded is None:
                up = parse_up_topic(topic)
            else:
                up = UpTopic(device_id=forwarded[0], channel=forwarded[1])
        except InvalidTopic as exc:
            return Refused(channel="invalid", outcome="bad_topic", why=exc)
        device_id, channel = up.device_id, up.channel.value
        relayed = forwarded is not None
        if len(payload) > self.max_message_bytes:
            why = f"{device_id}: {len(payload)} B"
            return Refused(channel=channel, outcome="too_large", why=why)
        if not relayed and self.over_rate(device_id):
            return Refused(channel=channel, outcome="rate_limited", why=device_id)
        if not self.enrolled(device_id):
            return Refused(channel=channel, outcome="unknown_device", why=device_id)
        if not driving:
            route = Route.NO_DRIVER
        elif relaying and not relayed and up.cohort is None:
            route = Route.RELAY
        else:
            route = Route.DRIVER
        return Admitted(up=up, route=route)
