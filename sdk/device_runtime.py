"""A ``Device``'s event thread: its moves on each event, and the participant commands it runs."""

from __future__ import annotations

import enum
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import decode_from_coordinator, encode_message
from fedrt.protocol.topics import (
    device_up,
    device_up_cohort,
    parse_coordinator_presence,
    parse_task_announcement,
)
from fedrt.sdk.control_variate import VariateStore, variate_dir
from fedrt.sdk.credentials import Credentials, basic_auth, load_or_create_identity
from fedrt.sdk.device_config import DeviceConfig
from fedrt.sdk.device_hub import DeviceHub
from fedrt.sdk.device_state import DeviceState
from fedrt.sdk.eligibility import EligibilityDecision
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.jitter import Jitter, SystemJitter
from fedrt.sdk.outbox import Outbox, ReliableSender
from fedrt.sdk.participant import Participant
from fedrt.sdk.participant_commands import (
    CancelTraining,
    Command,
    Evaluate,
    Forget,
    ParticipantConfig,
    Publish,
    RoundEnded,
    ScheduleCheckIn,
    Train,
)
from fedrt.sdk.round_facts import RoundFacts, load_state, save_state
from fedrt.sdk.round_work import RoundWork, TrainerFactory, WorkResult, default_scheduler_factory
from fedrt.sdk.transport import Message, MqttConfig, PahoTransport, Transport

__all__ = ["DeviceEvent", "DeviceRuntime"]

# The logger of the module that held this code first: what operators filter by.
log = logging.getLogger("fedrt.sdk.device")


class DeviceEvent(enum.Enum):
    CHECKED_IN = "checked_in"
    TRAINING_STARTED = "training_started"
    UPDATE_SENT = "update_sent"
    ROUND_ENDED = "round_ended"
    ABANDONED = "abandoned"


class DeviceRuntime:
    """A device's state and event handling; ``Device`` (``fedrt.sdk.device``) adds the app API."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        store: ExampleStore,
        device_state: DeviceState,
        clock: Callable[[], float] = time.time,
        rng: Jitter | None = None,
        on_event: Callable[[DeviceEvent, dict[str, Any]], None] | None = None,
        transport_factory: Callable[[MqttConfig], Transport] | None = None,
        trainer_factory: TrainerFactory | None = None,
        hub: DeviceHub | None = None,
    ) -> None:
        self.config = config
        # None: this device has its own event thread; else the hub's thread serves it.
        self._hub = hub
        self._running = False
        self._network_up = True
        self.store = store
        self.device_state = device_state
        # None: LiteRT in this process; an app may run the model elsewhere (Android: Java).
        self._trainer_factory = trainer_factory
        self._clock = clock
        self._rng = rng if rng is not None else SystemJitter()
        self._on_event = on_event
        self._transport_factory = transport_factory or (lambda c: PahoTransport(c))
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = load_or_create_identity(config.data_dir)
        self.credentials = Credentials.load(config.data_dir)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._transport: Transport | None = None
        self._sender: ReliableSender | None = None
        self._outbox: Outbox | None = None
        self._participant: Participant | None = None
        self._task_id = config.task_id
        self._work: RoundWork | None = None
        self._check_in_at: float = 0.0
        # Whether this connection's first check-in was spread (``Participant.spread_check_in``).
        self._spread_done = False
        self._round_id: int | None = None
        self._rounds_completed = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._down_by_kind: dict[str, int] = {}  # model-forms
        self._last_detail = ""
        self._saved: str | None = None  # what this runtime last wrote to device-state.json
        self._last_decision: EligibilityDecision | None = None
        # The coordinator incarnation last heard, for a participant created after it came.
        self._incarnation: str | None = None
        self._ssl_context: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ callbacks (any thread)
    def _post(self, kind: str, value: Any) -> None:
        if self._hub is not None:
            self._hub.post(self, kind, value)
        else:
            self._events.put((kind, value))

    def _on_inbox(self, message: Message) -> None:
        self._post("inbox", message.payload)

    def _on_announcement(self, message: Message) -> None:
        self._post("announce", message)

    def _on_coordinator_status(self, message: Message) -> None:
        self._post("coordinator", message.payload)

    def _work_done(self, result: WorkResult) -> None:
        self._post("work", result)

    # ------------------------------------------------------------------ event thread
    def _loop(self) -> None:
        self._begin()
        while True:
            timeout = max(0.0, self._next_wake() - self._clock())
            try:
                kind, value = self._events.get(timeout=min(timeout, self.config.poll_s))
            except queue.Empty:
                kind, value = "tick", None
            if kind == "stop":
                self._end()
                return
            self._step(kind, value)

    # The event thread's three moves; a `DeviceHub` makes them for many devices on one thread.
    def _begin(self) -> None:
        if self._participant is None and self._task_id:
            self._participant = self._new_participant()

    def _step(self, kind: str, value: Any) -> None:
        if not self._running:
            # Stopping: its link and outbox close next, and a busy hub may still tick it
            # after ``stop`` gave up waiting for the hub to let it go. Each such tick used
            # to fail on the closed outbox and log a traceback; under load those tracebacks
            # were a third of a 390-device simulate's time and kept the hub behind.
            return
        try:
            self._handle(kind, value)
        except ProtocolError as exc:
            log.info("dropped a coordinator message: %s", exc)
        except Exception:  # the loop must survive anything one event does
            log.exception("device event %s failed", kind)

    def _end(self) -> None:
        self._save_state()

    def _wake_at(self) -> float:
        """When the event thread next looks at this device if nothing happens before."""
        return min(self._next_wake(), self._clock() + self.config.poll_s)

    def _handle(self, kind: str, value: Any) -> None:
        now = self._clock()
        p = self._participant
        if kind == "announce":
            self._announced(value)
        elif kind == "coordinator":
            self._coordinator_presence(value, now)
        elif kind == "inbox" and p is not None:
            msg = decode_from_coordinator(value)
            if isinstance(msg, rm.Ack) and self._sender is not None:
                # Whatever the verdict (accepted, duplicate, late, rejected), the coordinator
                # has seen the message: stop resending it, even if the round moved on.
                self._sender.acknowledge(str(msg.acked))
            self._act(p.receive(msg, now))
        elif kind == "work" and p is not None:
            self._work_result(p, value, now)
        p = self._participant
        if p is None:
            return
        deadline = p.next_deadline()
        if deadline is not None and deadline <= now:
            self._act(p.tick(now))
        if self._sender is not None:
            self._sender.resend_due()
        if self._transport is None or not self._transport.connected:
            self._spread_done = False  # the next connection spreads its first check-in
        if now >= self._check_in_at:
            # Look again after poll_s unless a reconnect window or an announcement says when:
            # a check-in time left in the past would wake this device without pause.
            self._check_in_at = now + self.config.poll_s
            if p.may_check_in(now) and len(self.store) > 0:
                decision = self.config.policy.decide(self.device_state.snapshot(now), now)
                self._last_decision = decision
                connected = self._transport is not None and self._transport.connected
                if connected and not self._spread_done:
                    # The first check-in on a connection is spread (``checkin_spread``).
                    self._spread_done = True
                    spread = p.spread_check_in(now)
                    if spread:
                        self._act(spread)
                        return
                if decision.eligible and connected:
                    # The count lets a task's min_examples filter before sampling; the
                    # coordinator learns it as it learns the labels at enrollment.
                    self._act(p.check_in(now, n_examples=len(self.store)))
                    self._emit(DeviceEvent.CHECKED_IN, {})

    def _announced(self, message: Message) -> None:
        task_id = parse_task_announcement(message.topic)
        if self._task_id is None:
            self._task_id = task_id
            self._participant = self._new_participant()
            log.info("following task %s", task_id)
            self._restart()
            if self._incarnation is not None:
                self._heard_coordinator(self._participant, self._clock())
        p = self._participant
        if task_id == self._task_id and p is not None:
            now = self._clock()
            try:
                self._act(p.receive_data(message.payload, now))
            except ProtocolError as exc:
                log.debug("announcement ignored: %s", exc)
                return
            # A round opened while this device waited only for one: look soon, not at the next
            # poll (the reconnect window still applies; the jitter spreads the fleet out).
            soon = now + float(self._rng.uniform(0.0, min(1.0, self.config.poll_s)))
            if p.may_check_in(now) and self._check_in_at > soon:
                self._check_in_at = soon

    def _coordinator_presence(self, payload: bytes, now: float) -> None:
        presence = parse_coordinator_presence(payload)
        if presence.incarnation is None:  # offline (its will), or a coordinator naming none
            return
        self._incarnation = presence.incarnation
        if self._participant is not None:
            self._heard_coordinator(self._participant, now)

    def _heard_coordinator(self, p: Participant, now: float) -> None:
        assert self._incarnation is not None
        before, state = p.incarnation, p.state.value
        commands = p.coordinator_online(self._incarnation, now)
        if before not in (None, p.incarnation):
            log.info("the coordinator restarted (%s -> %s) while this device was %s",
                     before, p.incarnation, state)  # fmt: skip
        self._act(commands)

    def _work_result(self, p: Participant, result: WorkResult, now: float) -> None:
        self._work = None
        self._bytes_down += result.bytes_down
        for kind, n in result.down_by_kind.items():  # model-forms
            self._down_by_kind[kind] = self._down_by_kind.get(kind, 0) + n
        if result.training is not None:
            out = result.training
            self._act(p.training_done(out.delta, out.n_examples, now))
            # The app may inspect its own update (it never leaves the device unmasked).
            detail = {"round_id": result.plan.round_id, "delta": out.delta,
                      "n_examples": out.n_examples, "mean_loss": out.mean_loss}  # fmt: skip
            self._emit(DeviceEvent.UPDATE_SENT, detail)
        elif result.eval_sums is not None:
            self._act(p.evaluation_done(result.eval_examples, result.eval_sums, now))
        else:
            reason = result.abandon or rm.AbandonReason.ERROR
            self._last_detail = result.detail
            self._act(p.training_abandoned(reason, now, result.detail))
            self._emit(DeviceEvent.ABANDONED, {"reason": reason.name, "detail": result.detail})

    def _act(self, commands: list[Command]) -> None:
        creds = self.credentials
        assert creds is not None
        # Saved before the outbox holds anything: a restart neither reuses a message id nor
        # misses a round it was in.
        self._save_state()
        for command in commands:
            if isinstance(command, Publish):
                payload = encode_message(command.message)
                self._bytes_up += len(payload)
                assert self._sender is not None
                topic = (
                    device_up_cohort(creds.device_id, command.cohort, command.channel)
                    if command.cohort
                    else device_up(creds.device_id, command.channel)
                )
                self._sender.send(
                    topic,
                    payload,
                    msg_id=str(command.message.msg_id),
                )
            elif isinstance(command, Forget):
                if self._sender is not None:
                    self._sender.acknowledge(str(command.msg_id))
            elif isinstance(command, Train | Evaluate):
                self._start_work(command.plan, command.deadline)
            elif isinstance(command, CancelTraining):
                if self._work is not None:
                    self._work.cancel()
                    self._work = None
            elif isinstance(command, ScheduleCheckIn):
                self._check_in_at = command.at
            elif isinstance(command, RoundEnded):
                self._round_ended(command)

    def _start_work(self, plan: rm.Plan, deadline: float) -> None:
        creds = self.credentials
        assert creds is not None
        self._round_id = plan.round_id
        work = RoundWork(
            plan=plan,
            deadline=deadline,
            store=self.store,
            scheduler_factory=default_scheduler_factory(
                device_state=self.device_state,
                policy=self.config.policy,
                config=self.config.scheduler,
            ),
            model_dir=self.config.data_dir / "models",
            personal_dir=self.config.data_dir / "personal",
            public_key=creds.coordinator_public_key,
            auth_headers=basic_auth(creds),
            # Beside the model the plan names: the coordinator instance running this round
            # (several share a fleet; the one this device enrolled with may be gone).
            meta_url=f"{plan.model.url.rstrip('/')}/meta",
            done=self._work_done,
            num_threads=self.config.num_threads,
            trainer_factory=self._trainer_factory,
            ssl_context=self._ssl_context,
            variate_dir=variate_dir(self.config.data_dir),
        )
        self._work = work
        work.start()
        self._emit(DeviceEvent.TRAINING_STARTED, {"round_id": plan.round_id})

    def _round_ended(self, ended: RoundEnded) -> None:
        if self._task_id is not None and ended.round_id is not None:
            # SCAFFOLD: the round's c_i+ replaces c_i only if the round committed.
            VariateStore(variate_dir(self.config.data_dir), self._task_id).settle(
                ended.round_id, committed=ended.reason is rm.ReconnectReason.ROUND_COMPLETE
            )
        if ended.reason is rm.ReconnectReason.ROUND_COMPLETE:
            self._rounds_completed += 1
        self._last_detail = ended.detail or (ended.reason.name if ended.reason else "")
        self._emit(
            DeviceEvent.ROUND_ENDED,
            {"round_id": ended.round_id, "reason": ended.reason.name if ended.reason else None},
        )

    def _next_wake(self) -> float:
        wake = self._check_in_at
        p = self._participant
        if p is not None and p.next_deadline() is not None:
            wake = min(wake, p.next_deadline() or wake)
        return wake

    def _emit(self, event: DeviceEvent, detail: dict[str, Any]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event, detail)
            except Exception:  # an app callback must not break the device
                log.exception("on_event callback failed")

    # ------------------------------------------------------------------ persistence
    def _new_participant(self) -> Participant:
        creds = self.credentials
        assert creds is not None
        assert self._task_id is not None
        state = load_state(self.config.data_dir)
        config = ParticipantConfig(device_id=creds.device_id, task_id=self._task_id)
        if self.config.participant:
            config = replace(config, **self.config.participant)  # type: ignore[arg-type]
        return Participant(
            config,
            identity=self.identity,
            rng=self._rng,
            first_msg_id=int(state.get("next_msg_id", 1)),
        )

    def _restart(self) -> None:
        """Resume or abandon the round a previous process was in (``Participant.restart``)."""
        p, state = self._participant, load_state(self.config.data_dir)
        if p is None or state.get("task_id") != self._task_id or "round" not in state:
            return
        try:
            facts = RoundFacts.from_json(state["round"])
        except SdkConfigError as exc:  # the coordinator withdraws it when it checks in again
            log.warning("saved round state ignored: %s", exc)
            return
        commands = p.restart(facts, self._clock())
        if facts.round_id is not None:
            self._round_id = facts.round_id
            log.info("restarted in round %d (%s): %s", facts.round_id, facts.state,
                     "abandoning it" if p.state.value == "idle" else "resuming")  # fmt: skip
        self._act(commands)

    def _save_state(self) -> None:
        p = self._participant
        if p is not None:
            self._saved = save_state(self.config.data_dir, next_msg_id=p.next_msg_id,
                                     task_id=self._task_id, facts=p.round_facts(),
                                     written=self._saved)  # fmt: skip
