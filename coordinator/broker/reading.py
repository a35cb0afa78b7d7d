"""How a coordinator instance reads device traffic: one reader, or a split over instances.

One instance (the one-machine default, any embedded broker) subscribes to every device
up-topic, as it always has. Several instances on one store read the stateless device
topics (check-ins, status, plain round replies) through ONE subscription they share, so
each message reaches one of them (``rounds.relay`` forwards it to the task's owner when
that is another instance):

- NATS cluster: NATS 2.9's MQTT has no ``$share``, but core-NATS subscribers in one queue
  group split the MQTT publishes evenly; each instance opens a core-NATS connection as the
  coordinator user (``broker.nats_queue``), which is allowed that connection type while
  device users stay MQTT-only (``broker.nats_auth``).
- Mosquitto: an MQTT 5 shared subscription ``$share/fedrt/...``; the link speaks MQTT 5.

Each instance also reads its own relay topic (``protocol.relay_topics``): on NATS as a core
subject beside the queue group (a forwarded message is then as at-most-once as the queue
group's delivery was, and costs no JetStream write), on Mosquitto through its QoS 1
session. SecAgg+ stage replies travel on per-cohort topics that only the cohort's owner
subscribes to, outside this plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrt.coordinator.broker.link import MQTT_V5, MQTT_V311
from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.protocol.relay_topics import relay_filter
from fedrt.protocol.topics import device_up_filter

__all__ = ["QUEUE_GROUP", "ReadingPlan", "nats_subject", "reading_plan"]

# The queue group (NATS) and share name (MQTT 5) every instance reads the device topics in.
QUEUE_GROUP = "fedrt"


def nats_subject(topic_filter: str) -> str:
    """The core-NATS subject of a single-level MQTT filter (``+`` is ``*``, ``/`` is ``.``)."""
    return ".".join("*" if level == "+" else level for level in topic_filter.split("/"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingPlan:
    """How one instance reads device traffic: its MQTT subscriptions and protocol, and the
    NATS queue subscription beside them (None: none)."""

    subscriptions: tuple[str, ...]
    protocol: int
    why: str
    queue_subject: str | None = None
    # NATS: the instance's relay topic as a core subject it reads directly, and to which
    # receivers forward over core NATS (no JetStream write per forwarded message).
    relay_subject: str | None = None
    # Messages split over instances: the receiver forwards what it does not own.
    split: bool = False


def reading_plan(
    broker: BrokerConfig, *, shared_store: bool, instance_id: str, runs_rounds: bool = True
) -> ReadingPlan:
    """Today's single reader on one machine; a split over instances on a shared store, in
    which an instance that runs no rounds (one serving only the API) reads no device topic:
    it would take its share of the check-ins and have nobody to hand them to."""
    every = device_up_filter()
    if not shared_store or broker.embedded:
        why = "one instance: it reads every device topic"
        return ReadingPlan(subscriptions=(every,), protocol=MQTT_V311, why=why)
    if not runs_rounds:
        why = "no round driver: it reads no device topic"
        return ReadingPlan(subscriptions=(), protocol=MQTT_V311, why=why)
    own = relay_filter(instance_id)
    if broker.nats and not broker.nats_urls:
        why = "NATS without broker.nats_urls: every instance reads every device topic"
        return ReadingPlan(subscriptions=(every,), protocol=MQTT_V311, why=why)
    if broker.nats:
        subject = nats_subject(every)
        why = f"NATS queue group {QUEUE_GROUP!r} on {subject}"
        return ReadingPlan(subscriptions=(), protocol=MQTT_V311, queue_subject=subject,
                           relay_subject=nats_subject(own), split=True, why=why)  # fmt: skip
    shared = device_up_filter(group=QUEUE_GROUP)
    why = f"MQTT 5 shared subscription {shared}"
    return ReadingPlan(subscriptions=(own, shared), protocol=MQTT_V5, split=True, why=why)
