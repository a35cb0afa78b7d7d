"""The receiver's side of device traffic split over coordinator instances.

With several instances on one store each stateless device message (check-in, status, plain
round reply) reaches ONE instance (``broker.reading``). ``DeviceRelay.route`` decides what
that instance, the receiver, does with it:

- its driver takes it: the receiver owns the task, or nobody does (the driver may claim
  the task), or it is presence (last-seen goes to the shared store whoever reads it);
- the receiver answers alone: a check-in while the owner's round is past its check-in
  stage gets the owner's answer, an ack and a paced reconnect window, without the owner;
- else it forwards the message unchanged to the owner on its relay topic
  (``protocol.relay_topics``), which only coordinators can publish to, so the device id the
  forwarded topic carries is the one the broker authenticated. A forwarded message is never
  forwarded again: an owner that lost the task meanwhile drops it, and the device's
  check-in timeout sends it again.

Who owns what comes from the task leases, and whether the owner recruits from its running
round's row, both cached for ``_CACHE_S``: a stale view costs a device one retry (a forward
to an owner that just lost the task) or an early window, never a wrong answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from fedrt.coordinator.errors import CoordinatorError, NotFoundError
from fedrt.coordinator.records import RoundRecord, RoundStatus
from fedrt.coordinator.rounds.outbox import no_round_replies
from fedrt.coordinator.selection.pace import PaceConfig, PaceSteering
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.tasks.ownership import LEASE_PREFIX
from fedrt.errors import FedrtError
from fedrt.protocol import round_messages as rm
from fedrt.protocol.relay_topics import instance_level, relay_topic
from fedrt.protocol.round_codec import decode_from_device, encode_message
from fedrt.protocol.topics import UpChannel, device_inbox

log = logging.getLogger(__name__)

__all__ = ["DeviceRelay"]

# How old the receiver's view of leases and rounds may be: one store read a second at most.
_CACHE_S = 1.0
# The receiver's own replies use message ids of a range no owner reaches (an owner's grow
# by 2**32 per restart from 1), one slice per instance, so a device never takes the
# receiver's answer for a duplicate of the owner's (it drops repeated (round, msg_id) pairs).
_ID_BASE = 1 << 62
_ID_SLICE = 1 << 36
# Round stages in which the owner still takes check-ins: those are forwarded.
_RECRUITING = frozenset({"created", "check_in"})


class DeviceRelay:
    """The receiver's part (module docstring); runs on the service's state thread."""

    def __init__(
        self,
        store: Store,
        instance_id: str,
        publish: Callable[[str, bytes, int, bool], None],
        pace: PaceConfig,
        *,
        clock: Callable[[], float],
        forward: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.store, self.instance_id, self.publish = store, instance_id, publish
        # How a message goes to its owner: ``publish`` (QoS 1) unless given (core NATS).
        self.forward = forward
        self._pace_config = pace
        self._pace: dict[str, PaceSteering] = {}
        self._clock = clock
        self._holders: dict[str, tuple[str, float]] = {}
        self._holders_at = -math.inf
        self._rounds: dict[str, tuple[float, RoundRecord | None]] = {}
        level = int(instance_level(instance_id)[:6], 16)
        self._next_id = _ID_BASE + level * _ID_SLICE
        self.forwarded = 0
        self.answered = 0

    def route(self, device_id: str, channel: UpChannel, payload: bytes, now: float) -> str | None:
        """None: this instance's driver takes the message; else what was done with it."""
        if channel is UpChannel.STATUS:
            return None  # presence: last-seen in the shared store, whoever reads it
        if not self._others_own():
            return None  # every running task is ours (one instance): no need to decode
        try:
            msg = decode_from_device(payload)
        except FedrtError:
            return None  # the driver rejects it and says why
        owner = self._owner(msg.task_id)
        if owner is None or owner == self.instance_id:
            return None
        if isinstance(msg, rm.CheckIn) and not self._recruiting(msg.task_id):
            self._send_away(device_id, msg, now)
            self.answered += 1
            return "answered"
        topic = relay_topic(owner, device_id, channel)
        if self.forward is not None:
            self.forward(topic, payload)
        else:
            self.publish(topic, payload, 1, False)
        self.forwarded += 1
        return "forwarded"

    def _others_own(self) -> bool:
        """Whether another live instance holds any task lease."""
        at = self._refresh_holders()
        return any(o != self.instance_id and exp > at for o, exp in self._holders.values())

    def _owner(self, task_id: str) -> str | None:
        """The live holder of the task's lease, as of at most ``_CACHE_S`` ago."""
        at = self._refresh_holders()
        held = self._holders.get(task_id)
        if held is None or held[1] <= at:
            return None  # nobody lives there: the driver may claim it
        return held[0]

    def _refresh_holders(self) -> float:
        at = self._clock()
        if at - self._holders_at >= _CACHE_S:
            self._holders = {
                lease.name[len(LEASE_PREFIX) :]: (lease.owner, lease.expires_at)
                for lease in self.store.list_leases()
                if lease.name.startswith(LEASE_PREFIX)
            }
            self._holders_at = at
        return at

    def _recruiting(self, task_id: str) -> bool:
        """Whether the owner may take a check-in now: no round running (the next opens with
        a check-in), or the running one still in its check-in stage."""
        at = self._clock()
        cached = self._rounds.get(task_id)
        if cached is None or at - cached[0] >= _CACHE_S:
            try:
                rounds = self.store.list_rounds(task_id)
            except NotFoundError:
                rounds = []
            cached = (at, max(rounds, key=lambda r: r.round_no, default=None))
            self._rounds[task_id] = cached
        latest = cached[1]
        if latest is None or latest.status is not RoundStatus.RUNNING:
            return True
        return latest.stage in _RECRUITING

    def _send_away(self, device_id: str, msg: rm.DeviceMessage, now: float) -> None:
        pace = self._pace.setdefault(msg.task_id, PaceSteering(self._pace_config))
        replies = no_round_replies(
            task_id=msg.task_id,
            device_id=device_id,
            message=msg,
            pace=pace,
            now=now,
            first_msg_id=self._next_id,
        )
        self._next_id += len(replies)
        for reply in replies:
            try:
                self.publish(device_inbox(device_id), encode_message(reply.message), 1, False)
            except CoordinatorError as exc:
                log.error("cannot answer %s: %s", device_id, exc)
