"""The MQTT topic layout, its QoS/retain rules and the broker ACL that confines each device.

Layout (``{d}`` a device id, which is also the device's MQTT username; ``{t}`` a task id)::

    fedrt/v1/coord/status           coordinator -> all   retained   "online <incarnation>" / will
    fedrt/v1/tasks/{t}              coordinator -> all   retained   task announcement
    fedrt/v1/dev/{d}/in             coordinator -> {d}   queued     plan, stage requests, acks
    fedrt/v1/dev/{d}/up/checkin     {d} -> coordinator   queued     check-in
    fedrt/v1/dev/{d}/up/round       {d} -> coordinator   queued     small stage replies, abandon
    fedrt/v1/dev/{d}/up/update      {d} -> coordinator   queued     masked / quantized update
    fedrt/v1/dev/{d}/up/status      {d} -> coordinator   live       online / will "offline"
    fedrt/v1/dev/{d}/up/c/{k}/round   {d} -> owner of cohort {k}   queued   as up/round
    fedrt/v1/dev/{d}/up/c/{k}/update  {d} -> owner of cohort {k}   queued   as up/update

Why this shape: everything a device may write sits under ``fedrt/v1/dev/{d}/up/`` and
everything only it may read is ``fedrt/v1/dev/{d}/in``, so two Mosquitto ``pattern`` lines
with ``%u`` confine every device without per-device rules; the sender's identity is the
topic, which the broker authenticated, not a field a device could forge. Announcements are
public and retained so that a device coming online learns the current tasks at once. Bulk
updates get their own channel so the coordinator can meter and size-check them separately.
Device topics are never retained: a departed device must not leave payloads in the broker.

Cohort topics (``up/c/{k}/...``): a SecAgg+ round's plan gives each device whose check-in
announced ``FEATURE_COHORT_TOPICS`` its cohort's key ``{k}``, and the device sends that
round's replies there, so a coordinator instance subscribes to the cohorts it owns
(``cohort_up_filter``) instead of reading every device. The key is opaque and public (a
digest of task, round and cohort index): it routes, it does not authenticate. The sender
is still the topic's device id, and the round checks that the device belongs to that
cohort. Older SDKs (no feature bit) get no key and keep using ``up/round`` and ``up/update``.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from fedrt.protocol.round_errors import InvalidTopic, MalformedMessage

PREFIX = "fedrt/v1"
# The device id doubles as the MQTT username and a topic level: it must hold no MQTT
# wildcard (+ #), no level separator (/), no $ (reserved topics) and no whitespace.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A cohort key: one topic level with no dot either (NATS maps topic levels to subject
# tokens and dots inside a level to separators), short enough to keep topics small.
_COHORT_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# CheckIn.features bit (next to ``round_async.FEATURE_ASYNC``): the SDK sends a round's
# replies on the cohort topic its plan names.
FEATURE_COHORT_TOPICS = 2


class QoS(enum.IntEnum):
    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


class UpChannel(enum.Enum):
    """The sub-topics a device publishes on."""

    CHECKIN = "checkin"
    ROUND = "round"
    UPDATE = "update"
    STATUS = "status"


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicRule:
    """How a class of topic is used: who publishes, who reads, at which QoS, retained or not."""

    template: str
    publisher: str
    readers: str
    qos: QoS
    retain: bool
    carries: str


# QoS 1 everywhere that matters: with persistent sessions the broker queues these for an
# offline peer and redelivers after a reconnect; duplicates are removed by message ids.
# Presence is QoS 1 too so that a will is not lost on a congested link.
RULES: tuple[TopicRule, ...] = (
    TopicRule(
        template=f"{PREFIX}/coord/status",
        publisher="coordinator",
        readers="everyone",
        qos=QoS.AT_LEAST_ONCE,
        retain=True,
        carries="b'online <incarnation>' / will b'offline' (coordinator_presence)",
    ),
    TopicRule(
        template=f"{PREFIX}/tasks/{{task_id}}",
        publisher="coordinator",
        readers="every device",
        qos=QoS.AT_LEAST_ONCE,
        retain=True,
        carries="TaskAnnouncement (empty payload clears it)",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/in",
        publisher="coordinator",
        readers="that device only",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="Plan, StageRequest, Ack, ReconnectWindow",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/up/checkin",
        publisher="that device only",
        readers="coordinator",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="CheckIn",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/up/round",
        publisher="that device only",
        readers="coordinator",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="StageResponse (key stages), Abandon, EvalReport",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/up/update",
        publisher="that device only",
        readers="coordinator",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="StageResponse (masked input / plain update)",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/up/c/{{cohort_key}}/round",
        publisher="that device only",
        readers="the coordinator instance owning the cohort",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="as up/round, for a round whose plan named the cohort key",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/up/c/{{cohort_key}}/update",
        publisher="that device only",
        readers="the coordinator instance owning the cohort",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="as up/update, for a round whose plan named the cohort key",
    ),
    TopicRule(
        template=f"{PREFIX}/dev/{{device_id}}/up/status",
        publisher="that device only",
        readers="coordinator",
        qos=QoS.AT_LEAST_ONCE,
        retain=False,
        carries="b'online' / will b'offline'",
    ),
)


def check_id(value: str, what: str = "device id") -> str:
    """Return ``value`` if it is usable as a topic level / MQTT username, else raise."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidTopic(f"{what} {value!r} must match {_ID.pattern}")
    return value


def coordinator_status() -> str:
    return f"{PREFIX}/coord/status"


# The coordinator's presence. The incarnation is new at every coordinator start: a device
# that sees it change knows the rounds it was in are gone (the coordinator keeps no round
# state across a restart), while a reconnect or a broker restart repeats the same one.
# Plain ``online`` (a coordinator before incarnations) stays readable.
_ONLINE, _OFFLINE = b"online", b"offline"
_INCARNATION = re.compile(r"[0-9a-f]{8,32}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorPresence:
    """What ``fedrt/v1/coord/status`` says: online (with which incarnation) or offline."""

    online: bool
    # None: offline, or a coordinator that names no incarnation.
    incarnation: str | None = None


def coordinator_presence(incarnation: str | None, *, online: bool = True) -> bytes:
    """The status payload: ``b"online <incarnation>"``, ``b"online"`` or ``b"offline"``."""
    if not online:
        return _OFFLINE
    if incarnation is None:
        return _ONLINE
    return _ONLINE + b" " + check_incarnation(incarnation).encode()


def check_incarnation(value: str) -> str:
    """Return ``value`` if it is a coordinator incarnation (8-32 lowercase hex), else raise."""
    if not isinstance(value, str) or not _INCARNATION.fullmatch(value):
        raise InvalidTopic(f"incarnation {value!r} must match {_INCARNATION.pattern}")
    return value


def parse_coordinator_presence(payload: bytes) -> CoordinatorPresence:
    """The presence in a status payload, or ``MalformedMessage``."""
    if payload == _OFFLINE:
        return CoordinatorPresence(online=False)
    if payload == _ONLINE:
        return CoordinatorPresence(online=True)
    if len(payload) <= 64:
        word, space, rest = bytes(payload).partition(b" ")
        text = rest.decode("ascii", "replace")
        if word == _ONLINE and space and _INCARNATION.fullmatch(text):
            return CoordinatorPresence(online=True, incarnation=text)
    raise MalformedMessage(f"not a coordinator status: {bytes(payload[:40])!r}")


def task_announcement(task_id: str) -> str:
    return f"{PREFIX}/tasks/{check_id(task_id, 'task id')}"


def task_announcements_filter() -> str:
    """What a device subscribes to for every announcement."""
    return f"{PREFIX}/tasks/+"


def device_inbox(device_id: str) -> str:
    return f"{PREFIX}/dev/{check_id(device_id)}/in"


def device_up(device_id: str, channel: UpChannel) -> str:
    return f"{PREFIX}/dev/{check_id(device_id)}/up/{channel.value}"


def check_cohort_key(value: str) -> str:
    """Return ``value`` if it is a cohort key (``cohort_key``'s form), else raise."""
    if not isinstance(value, str) or not _COHORT_KEY.fullmatch(value):
        raise InvalidTopic(f"cohort key {value!r} must match {_COHORT_KEY.pattern}")
    return value


def cohort_key(task_id: str, round_id: int, index: int) -> str:
    """The topic key of cohort ``index`` of a task's round: the same on every instance
    (so any of them can subscribe for it), distinct across tasks and rounds."""
    digest = hashlib.sha256(f"{check_id(task_id, 'task id')}\n{round_id}".encode()).hexdigest()
    return f"{digest[:12]}-{index}"


# Only a round's replies travel on a cohort topic: check-ins precede the cohort, and a
# device's presence is not a round's.
COHORT_CHANNELS = (UpChannel.ROUND, UpChannel.UPDATE)


def device_up_cohort(device_id: str, key: str, channel: UpChannel) -> str:
    """Where a device sends ``channel`` for the round whose plan named cohort ``key``."""
    if channel not in COHORT_CHANNELS:
        raise InvalidTopic(f"{channel.value} is not sent on a cohort topic")
    return f"{PREFIX}/dev/{check_id(device_id)}/up/c/{check_cohort_key(key)}/{channel.value}"


def cohort_up_filter(key: str) -> str:
    """What the instance owning cohort ``key`` subscribes to: every member's replies."""
    return f"{PREFIX}/dev/+/up/c/{check_cohort_key(key)}/+"


def device_up_filter(group: str | None = None) -> str:
    """What the coordinator subscribes to; with ``group``, an MQTT 5 shared subscription so
    several coordinator instances split the devices' traffic."""
    topic = f"{PREFIX}/dev/+/up/+"
    return topic if group is None else f"$share/{check_id(group, 'share group')}/{topic}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpTopic:
    """A device up-topic, parsed: who sent it (the broker authenticated that), on which
    channel, and the cohort key it was sent under (None: a plain ``up/<channel>``)."""

    device_id: str
    channel: UpChannel
    cohort: str | None = None


def parse_up_topic(topic: str) -> UpTopic:
    """Either up-topic form (plain or cohort), or ``InvalidTopic``."""
    parts = topic.split("/")
    if len(parts) not in (6, 8) or "/".join(parts[:3]) != f"{PREFIX}/dev" or parts[4] != "up":
        raise InvalidTopic(f"not a device up-topic: {topic!r}")
    if len(parts) == 8 and parts[5] != "c":
        raise InvalidTopic(f"not a device up-topic: {topic!r}")
    try:
        channel = UpChannel(parts[-1])
    except ValueError:
        raise InvalidTopic(f"unknown up-channel in {topic!r}") from None
    device_id = check_id(parts[3])
    if len(parts) == 6:
        return UpTopic(device_id=device_id, channel=channel)
    if channel not in COHORT_CHANNELS:
        raise InvalidTopic(f"{channel.value} is not sent on a cohort topic: {topic!r}")
    return UpTopic(device_id=device_id, channel=channel, cohort=check_cohort_key(parts[6]))


def parse_device_up(topic: str) -> tuple[str, UpChannel]:
    """(device id, channel) of a plain up-topic, or ``InvalidTopic`` (a cohort topic too:
    ``parse_up_topic`` reads both)."""
    up = parse_up_topic(topic)
    if up.cohort is not None:
        raise InvalidTopic(f"a cohort topic, not a plain up-topic: {topic!r}")
    return up.device_id, up.channel


def parse_task_announcement(topic: str) -> str:
    """The task id of an announcement topic, or ``InvalidTopic``."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:3]) != f"{PREFIX}/tasks":
        raise InvalidTopic(f"not a task announcement topic: {topic!r}")
    return check_id(parts[3], "task id")


def rule_for(topic: str) -> TopicRule:
    """The rule (QoS, retain) governing a concrete topic."""
    for rule in RULES:
        pattern = re.escape(rule.template)
        for name in ("task_id", "device_id", "cohort_key"):
            pattern = pattern.replace(r"\{" + name + r"\}", "[^/]+")
        if re.fullmatch(pattern, topic):
            return rule
    raise InvalidTopic(f"topic outside the fedrt layout: {topic!r}")


# ---------------------------------------------------------------------------------------------
# Broker ACL. Mosquitto checks "user" rules, then "pattern" rules with %u replaced by the
# client's username; anything not granted is refused (the publish is dropped silently and a
# subscription gets a failure return code).

Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AclEntry:
    """One Mosquitto ACL line; ``pattern`` lines apply to every user with %u substituted."""

    access: Access
    topic: str
    pattern: bool = False

    def render(self) -> str:
        return f"{'pattern' if self.pattern else 'topic'} {self.access} {self.topic}"


def device_acl_patterns() -> tuple[AclEntry, ...]:
    """The pattern lines that confine EVERY device (username = device id) to its own topics."""
    return (
        AclEntry(access="read", topic=coordinator_status(), pattern=True),
        AclEntry(access="read", topic=task_announcements_filter(), pattern=True),
        AclEntry(access="read", topic=f"{PREFIX}/dev/%u/in", pattern=True),
        AclEntry(access="write", topic=f"{PREFIX}/dev/%u/up/+", pattern=True),
        # Cohort topics: still the device's own subtree; ``+`` matches one level only.
        AclEntry(access="write", topic=f"{PREFIX}/dev/%u/up/c/+/+", pattern=True),
    )


def device_acl(device_id: str) -> tuple[AclEntry, ...]:
    """The same grants spelled out for one device (for per-user ACL files or dynamic security)."""
    check_id(device_id)
    return tuple(
        AclEntry(access=e.access, topic=e.topic.replace("%u", device_id))
        for e in device_acl_patterns()
    )


def coordinator_acl() -> tuple[AclEntry, ...]:
    """The coordinator reads and writes the whole fedrt tree (and nothing outside it)."""
    return (AclEntry(access="readwrite", topic=f"{PREFIX}/#"),)


def render_acl_file(coordinator_username: str) -> str:
    """A complete Mosquitto ``acl_file``: the coordinator's grants, then the device patterns.

    Pattern lines also apply to the coordinator's own user, harmlessly: they grant it a
    subset of what its user rules already do.
    """
    check_id(coordinator_username, "coordinator username")
    lines = ["# fedrt ACL: written by the coordinator; devices use username = device id.", ""]
    lines += [e.render() for e in device_acl_patterns()]
    lines += ["", f"user {coordinator_username}"]
    lines += [e.render() for e in coordinator_acl()]
    return "\n".join(lines) + "\n"


__all__ = [
    "COHORT_CHANNELS",
    "FEATURE_COHORT_TOPICS",
    "PREFIX",
    "RULES",
    "AclEntry",
    "CoordinatorPresence",
    "QoS",
    "TopicRule",
    "UpChannel",
    "UpTopic",
    "check_cohort_key",
    "check_id",
    "check_incarnation",
    "cohort_key",
    "cohort_up_filter",
    "coordinator_acl",
    "coordinator_presence",
    "coordinator_status",
    "device_acl",
    "device_acl_patterns",
    "device_inbox",
    "device_up",
    "device_up_cohort",
    "device_up_filter",
    "parse_coordinator_presence",
    "parse_device_up",
    "parse_task_announcement",
    "parse_up_topic",
    "render_acl_file",
    "rule_for",
    "task_announcement",
    "task_announcements_filter",
]
