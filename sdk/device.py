"""The ``Device`` facade: what an app embeds to take part in federated rounds.

One event thread owns the round ``Participant`` (sans-I/O) and acts on its commands:
publishing through the on-disk outbox, starting local work (download, then training or
evaluation in idle windows) on a worker thread, and waking for deadlines and scheduled
check-ins. MQTT callbacks and workers only put events on its queue, so the participant
is never touched from two threads. The app's own thread is never blocked.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedrt.protocol import round_messages as rm
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.round_codec import decode_from_coordinator, encode_message
from fedrt.protocol.topics import (
    coordinator_status,
    device_inbox,
    device_up,
    parse_coordinator_presence,
    parse_task_announcement,
    task_announcements_filter,
)
from fedrt.sdk.credentials import Credentials, basic_auth, enroll, load_or_create_identity
from fedrt.sdk.device_hub import DeviceHub
from fedrt.sdk.device_state import DeviceState
from fedrt.sdk.eligibility import EligibilityDecision, EligibilityPolicy
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.https_trust import check_url, trust_context
from fedrt.sdk.outbox import Outbox, ReliableSender
from fedrt.sdk.participant import Jitter, Participant, SystemJitter
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
from fedrt.sdk.round_facts import RoundFacts
from fedrt.sdk.round_work import (
    RoundWork,
    TrainerFactory,
    WorkResult,
    default_scheduler_factory,
)
from fedrt.sdk.scheduler import SchedulerConfig
from fedrt.sdk.transport import Message, MqttConfig, PahoTransport, Transport

__all__ = ["Device", "DeviceConfig", "DeviceEvent", "DeviceStatus"]

log = logging.getLogger(__name__)
_STATE_FILE = "device-state.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """How this device reaches its coordinator and when it may work."""

    data_dir: Path
    coordinator_url: str
    # The task to follow; None: the first task the coordinator announces.
    task_id: str | None = None
    # Override the broker address enrollment returned (e.g. behind NAT or a TLS proxy).
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    # None: mqtts exactly when enrollment said the broker speaks it.
    mqtt_tls: bool | None = None
    # The trust root for both HTTPS (enrollment, downloads) and mqtts: the CA (PEM) that
    # signs the coordinator's and the broker's certificates. None: the system store for
    # HTTPS. Once enrolled, the CA the coordinator handed out is trusted for HTTPS as well.
    ca_file: Path | None = None
    # MQTT 5 unless the broker speaks only 3.1.1 (the embedded amqtt broker).
    mqtt_protocol: int = 5
    policy: EligibilityPolicy = field(default_factory=EligibilityPolicy)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # While idle and not told when to come back, look at eligibility this often.
    poll_s: float = 15.0
    participant: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        # Plain http only to loopback: the token and the password would cross the network.
        check_url(self.coordinator_url, what="coordinator_url")
        if not self.poll_s > 0:
            raise SdkConfigError("poll_s must be > 0")


class DeviceEvent(enum.Enum):
    CHECKED_IN = "checked_in"
    TRAINING_STARTED = "training_started"
    UPDATE_SENT = "update_sent"
    ROUND_ENDED = "round_ended"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus:
    device_id: str | None
    task_id: str | None
    state: str
    connected: bool
    round_id: int | None
    rounds_completed: int
    pending_uploads: int
    eligibility: str
    bytes_up: int
    bytes_down: int
    last_detail: str = ""


class Device:
    """A device taking part in one task's rounds (see the module docstring)."""

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
        self._round_id: int | None = None
        self._rounds_completed = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._last_detail = ""
        self._last_decision: EligibilityDecision | None = None
        # The coordinator incarnation last heard, for a participant created after it came.
        self._incarnation: str | None = None
        self._ssl_context: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ app API
    def enroll(self, token: str | None = None) -> str:
        """Enroll once (idempotent): returns the device id."""
        if self.credentials is None:
            if not token:
                raise SdkConfigError("this device is not enrolled: an enrollment token is needed")
            self.credentials = enroll(
                self.config.coordinator_url,
                token,
                self.identity,
                labels=self.config.labels,
                ca_file=self.config.ca_file,
            )
            self.credentials.save(self.config.data_dir)
            log.info("enrolled as %s", self.credentials.device_id)
        return self.credentials.device_id

    def start(self) -> None:
        creds = self.credentials
        if creds is None:
            raise SdkConfigError("enroll() before start()")
        if self._running:
            raise SdkConfigError("device already started")
        self._ssl_context = trust_context(self.config.ca_file, creds.ca_pem)
        tls = creds.mqtt_tls if self.config.mqtt_tls is None else self.config.mqtt_tls
        if tls and self.config.ca_file is None:
            raise SdkConfigError("the broker speaks mqtts: set ca_file to the CA that signs it")
        mqtt = MqttConfig(
            host=self.config.mqtt_host or creds.mqtt_host,
            port=self.config.mqtt_port or creds.mqtt_port,
            client_id=creds.device_id,
            username=creds.mqtt_username,
            password=creds.mqtt_password,
            # MqttConfig turns TLS on with a CA file; ca_file also serves plain-MQTT + HTTPS.
            ca_file=self.config.ca_file if tls else None,
            protocol=self.config.mqtt_protocol,
        )
        self._transport = self._transport_factory(mqtt)
        if not self._network_up:
            self._transport.network_changed(False)
        self._outbox = Outbox(self.config.data_dir / "outbox.sqlite3")
        self._sender = ReliableSender(self._transport, self._outbox)
        self._transport.subscribe(device_inbox(creds.device_id), self._on_inbox)
        self._transport.subscribe(task_announcements_filter(), self._on_announcement)
        # Retained: a new incarnation says the coordinator restarted and lost its rounds.
        self._transport.subscribe(coordinator_status(), self._on_coordinator_status)
        if self._task_id is not None:
            # Before the link is up: stale answers leave the outbox before its first flush.
            self._participant = self._new_participant()
            self._restart()
        self._running = True
        if self._hub is not None:
            self._hub.add(self)
        else:
            self._thread = threading.Thread(target=self._loop, name="fedrt-device", daemon=True)
            self._thread.start()
        self._transport.start()

    def stop(self, timeout: float = 10.0) -> None:
        if not self._running:
            return
        self._running = False
        if self._hub is not None:
            self._hub.remove(self, timeout)
        elif self._thread is not None:
            self._events.put(("stop", None))
            self._thread.join(timeout)
            self._thread = None
        if self._work is not None:
            self._work.cancel()
            self._work.join(timeout)
        if self._transport is not None:
            self._transport.close()
        if self._outbox is not None:
            self._outbox.close()

    def network_changed(self, available: bool) -> None:
        """The OS reported the network gone (False) or back (True): the MQTT link is cut at
        once or reconnects at once (Android: from a ConnectivityManager.NetworkCallback)."""
        self._network_up = available
        if self._transport is not None:
            self._transport.network_changed(available)

    def status(self) -> DeviceStatus:
        p = self._participant
        decision = self._last_decision
        return DeviceStatus(
            device_id=self.credentials.device_id if self.credentials else None,
            task_id=self._task_id,
            state=p.state.value if p is not None else "idle",
            connected=bool(self._transport is not None and self._transport.connected),
            round_id=self._round_id,
            rounds_completed=self._rounds_completed,
            pending_uploads=self._sender.pending if self._sender is not None else 0,
            eligibility=str(decision) if decision is not None else "unknown",
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            last_detail=self._last_detail,
        )

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
        if now >= self._check_in_at:
            # Look again after poll_s unless a reconnect window or an announcement says when:
            # a check-in time left in the past would wake this device without pause.
            self._check_in_at = now + self.config.poll_s
            if p.may_check_in(now) and len(self.store) > 0:
                decision = self.config.policy.decide(self.device_state.snapshot(now), now)
                self._last_decision = decision
                connected = self._transport is not None and self._transport.connected
                if decision.eligible and connected:
                    self._act(p.check_in(now))
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
                self._sender.send(
                    device_up(creds.device_id, command.channel),
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
        base = self.config.coordinator_url.rstrip("/")
        work = RoundWork(
            plan=plan,
            deadline=deadline,
            store=self.store,
            scheduler_factory=default_scheduler_factory(
                store=self.store,
                device_state=self.device_state,
                policy=self.config.policy,
                config=self.config.scheduler,
            ),
            model_dir=self.config.data_dir / "models",
            public_key=creds.coordinator_public_key,
            auth_headers=basic_auth(creds),
            meta_url=f"{base}/v1/models/{plan.model.sha256}/meta",
            done=self._work_done,
            num_threads=self.config.num_threads,
            trainer_factory=self._trainer_factory,
            ssl_context=self._ssl_context,
        )
        self._work = work
        work.start()
        self._emit(DeviceEvent.TRAINING_STARTED, {"round_id": plan.round_id})

    def _round_ended(self, ended: RoundEnded) -> None:
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
        state = self._load_state()
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
        p, state = self._participant, self._load_state()
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

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.config.data_dir / _STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        p = self._participant
        if p is None:
            return
        path = self.config.data_dir / _STATE_FILE
        tmp = path.with_suffix(".tmp")
        state = {"next_msg_id": p.next_msg_id, "task_id": self._task_id,
                 "round": p.round_facts().to_json()}  # fmt: skip
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
