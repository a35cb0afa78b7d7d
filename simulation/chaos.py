"""``--chaos EVENT@ROUND``: faults injected into a running simulation, and what they did.

An event fires once round ROUND is under way (when round ROUND-1 has ended, or right after
the task starts for round 1), after a short delay that lands it in the round's check-in or
training. Events:

- ``kill-broker-node``: SIGKILL the first running NATS node (``--broker nats-cluster``; the
  first is the one the coordinator and every device connect to first); it stays down.
  Clients must move to another node, where JetStream holds their sessions. A second kill
  in a 3-node cluster leaves no Raft majority: rounds then stop, as they would in production.
- ``kill-coordinator`` (``--coordinators`` > 1): SIGKILL the instance that owns the running
  round (its ``instance`` in the store); it stays down. Another instance takes the task over
  once the dead one's lease expires; ``failover_s`` is the time from the kill to the next
  committed round.
- ``restart-broker``: the broker goes down and comes back on the same ports and store:
  Mosquitto stops and starts again; a NATS cluster restarts its nodes one after another,
  each back and healthy before the next goes (a rolling restart).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedrt.errors import UsageError
from fedrt.simulation.stack import NATS_CLUSTER, LocalStack

__all__ = ["EVENTS", "ChaosEvent", "ChaosRunner", "parse_chaos"]

log = logging.getLogger(__name__)

EVENTS = ("kill-coordinator", "kill-broker-node", "restart-broker")
# Seconds after the round's start: inside its check-in or training on a local fleet.
_DELAY_S = 1.0
# How long an event's aftermath is watched: the coordinator's link and every device back.
_RECOVERY_S = 120.0
# When the run ends before an aftermath did (its last rounds committed meanwhile).
_FINISH_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosEvent:
    event: str
    round: int

    def __str__(self) -> str:
        return f"{self.event}@{self.round}"


def parse_chaos(spec: str) -> ChaosEvent:
    """``EVENT@ROUND`` (e.g. ``kill-broker-node@2``), or UsageError saying what is wrong."""
    event, sep, round_text = spec.partition("@")
    if not sep or not round_text.isdigit() or int(round_text) < 1:
        raise UsageError(f"--chaos {spec!r}: expected EVENT@ROUND, ROUND >= 1")
    if event not in EVENTS:
        raise UsageError(f"--chaos {spec!r}: EVENT is one of {', '.join(EVENTS)}")
    return ChaosEvent(event=event, round=int(round_text))


@dataclass(slots=True)
class ChaosRunner:
    """Fires each event when its round starts; ``results`` says what happened, per event."""

    stack: LocalStack
    events: list[ChaosEvent]
    rounds_ended: Callable[[], int]
    # (devices connected, devices) now; None before the fleet exists.
    devices_connected: Callable[[], tuple[int, int] | None] = lambda: None
    # Rounds committed so far (kill-coordinator: the failover ends with the next one).
    rounds_committed: Callable[[], int] = lambda: 0
    results: list[dict[str, Any]] = field(default_factory=list)
    # No more events (the run is ending); then stop watching aftermaths too.
    _ending: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _watchers: list[threading.Thread] = field(default_factory=list)

    def check(self, broker_kind: str) -> None:
        for e in self.events:
            if e.event == "kill-coordinator" and self.stack.coordinators < 2:
                raise UsageError(f"--chaos {e}: needs --coordinators 2 or more")
            if e.event == "kill-broker-node" and broker_kind != NATS_CLUSTER:
                raise UsageError(f"--chaos {e}: needs --broker {NATS_CLUSTER}")
            if e.event == "restart-broker" and broker_kind not in ("mosquitto", NATS_CLUSTER):
                raise UsageError(f"--chaos {e}: needs a broker this run starts ({broker_kind})")

    def start(self) -> None:
        if self.events:
            self._thread = threading.Thread(target=self._run, name="fedrt-chaos", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No more events; an aftermath still being watched gets a little time to end."""
        self._ending.set()
        if self._thread is not None:
            self._thread.join(120.0)
        deadline = time.monotonic() + _FINISH_S
        for watcher in self._watchers:
            watcher.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for watcher in self._watchers:
            watcher.join(10.0)

    def _run(self) -> None:
        t0 = time.monotonic()
        for event in sorted(self.events, key=lambda e: e.round):
            while self.rounds_ended() < event.round - 1:
                if self._ending.wait(0.2):
                    return
            if self._ending.wait(_DELAY_S):
                return
            service = self.stack.service
            link = service.link if service is not None else None
            connects = link.connects if link is not None else 0
            result: dict[str, Any] = {
                "event": event.event,
                "round": event.round,
                "rounds_ended_before": self.rounds_ended(),
                "at_s": round(time.monotonic() - t0, 2),
            }
            started = time.monotonic()
            committed = self.rounds_committed()
            try:
                result.update(ok=True, what=self._fire(event))
            except Exception as exc:  # reported, not raised: the run goes on and says so
                result.update(ok=False, what=f"failed: {exc!r}")
            result["took_s"] = round(time.monotonic() - started, 2)
            self.results.append(result)
            log.warning("chaos %s: %s", event, result["what"])
            watch = threading.Thread(
                target=self._watch,
                args=(result, started, connects, committed),
                name="fedrt-chaos-watch",
                daemon=True,
            )
            watch.start()
            self._watchers.append(watch)

    def _watch(self, result: dict[str, Any], since: float, connects: int, committed: int) -> None:
        if result["event"] == "kill-coordinator":
            result.update(self._failover(since, committed))
        else:
            result.update(self._recovery(since, connects))

    def _failover(self, since: float, committed: int) -> dict[str, Any]:
        """Seconds from the kill until a round committed (None: not within _RECOVERY_S)."""
        while time.monotonic() - since < _RECOVERY_S and not self._stop.is_set():
            if self.rounds_committed() > committed:
                return {"failover_s": round(time.monotonic() - since, 2)}
            self._stop.wait(0.2)
        return {"failover_s": None}

    def _recovery(self, since: float, connects: int) -> dict[str, Any]:
        """Seconds from the fault until the coordinator's link connected again, and until
        every device was connected after that (None: not within _RECOVERY_S)."""
        link_back = devices_back = None
        connected: tuple[int, int] | None = None
        while time.monotonic() - since < _RECOVERY_S and not self._stop.is_set():
            service = self.stack.service
            link = service.link if service is not None else None
            if link_back is None and link is not None and link.connects > connects:
                link_back = round(time.monotonic() - since, 2)
            connected = self.devices_connected()
            all_up = connected is not None and connected[0] == connected[1]
            if link_back is not None and devices_back is None and all_up:
                devices_back = round(time.monotonic() - since, 2)
                break
            self._stop.wait(0.2)
        return {
            "coordinator_back_s": link_back,
            "devices_back_s": devices_back,
            "devices_connected": list(connected) if connected is not None else None,
        }

    def _fire(self, event: ChaosEvent) -> str:
        if event.event == "kill-coordinator":
            return self._kill_owner()
        nats, mosquitto = self.stack.nats, self.stack.mosquitto
        if event.event == "kill-broker-node":
            assert nats is not None
            index = next((i for i, n in enumerate(nats.nodes) if n.running), None)
            if index is None:
                raise RuntimeError("no NATS node is running")
            node = nats.kill_node(index)
            return f"killed NATS node {node.name} (SIGKILL)"
        if nats is not None:
            for index in range(len(nats.nodes)):
                nats.nodes[index].stop()
                nats.restart_node(index)
            return f"restarted NATS nodes {', '.join(n.name for n in nats.nodes)} one by one"
        assert mosquitto is not None
        mosquitto.stop()
        mosquitto.start()
        return f"restarted Mosquitto on port {mosquitto.port}"

    def _kill_owner(self) -> str:
        instances = self.stack.instances
        if instances is None:
            raise RuntimeError("no coordinator instances of their own")
        found = None
        for _ in range(600):  # the round's row appears once its owner opened it (bounded)
            found = _running_round_owner(self.stack)
            if found is not None or self._ending.wait(0.1):
                break
        if found is None:
            raise RuntimeError("no running round to take from its coordinator")
        round_no, owner = found
        instances.kill(owner)
        return f"killed coordinator instance {owner} (SIGKILL), the owner of round {round_no}"


def _running_round_owner(stack: LocalStack) -> tuple[int, str] | None:
    """(round, instance) of the task's running round, if one runs."""
    svc = stack.service
    if svc is None:
        return None
    for task in svc.store.list_tasks():
        for rnd in reversed(svc.store.list_rounds(task.task_id)):
            owner = rnd.detail.get("instance")
            if rnd.status.value == "running" and isinstance(owner, str):
                return rnd.round_no, owner
    return None
