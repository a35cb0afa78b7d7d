"""An in-memory broker and `Transport` twin with the same observable behaviour as MQTT v5.

Persistent sessions (messages queued for an offline client), QoS 1 delivery on a per-client
network thread, retained messages, wildcard filters, and broker restarts (with or without
persistence) — for unit tests and single-process simulations of many devices.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from fedrt.sdk.errors import NotConnected, TransportError
from fedrt.sdk.transport_base import (
    Handler,
    Message,
    Transport,
    check_qos,
    check_topic,
)

__all__ = ["MemoryBroker", "MemoryTransport"]

log = logging.getLogger("fedrt.sdk.transport")


@dataclass(slots=True)
class _Session:
    subscriptions: set[str] = field(default_factory=set)
    queued: list[Message] = field(default_factory=list)
    online: MemoryTransport | None = None


class MemoryBroker:
    """Routes messages between `MemoryTransport`s; ``stop``/``start`` simulate a restart."""

    def __init__(self, *, persistence: bool = True) -> None:
        self.persistence = persistence
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, Message] = {}
        self._attached: list[MemoryTransport] = []
        self.running = True

    def stop(self) -> None:
        """Drop every connection; without persistence, forget sessions and retained messages."""
        with self._lock:
            self.running = False
            clients = [s.online for s in self._sessions.values() if s.online is not None]
            for s in self._sessions.values():
                s.online = None
            if not self.persistence:
                self._sessions.clear()
                self._retained.clear()
        for client in clients:
            client._lost()

    def start(self) -> None:
        with self._lock:
            self.running = True
            waiting = [t for t in self._attached if t._wants_connection()]
        for transport in waiting:
            transport._try_connect()

    def _attach(self, transport: MemoryTransport) -> None:
        with self._lock:
            if transport not in self._attached:
                self._attached.append(transport)

    def _connect(
        self, transport: MemoryTransport, subscriptions: set[str]
    ) -> tuple[bool, list[Message]]:
        """Open ``transport``'s session: (session_present, queued messages). Raises if down."""
        with self._lock:
            if not self.running:
                raise NotConnected("broker is down")
            session = self._sessions.get(transport.client_id)
            present = session is not None
            if session is None:
                session = self._sessions[transport.client_id] = _Session()
            elif session.online is not None and session.online is not transport:
                session.online._lost()  # session takeover, as MQTT does
            session.online = transport
            session.subscriptions |= subscriptions
            backlog, session.queued = session.queued, []
        return present, backlog

    def _disconnect(self, transport: MemoryTransport) -> None:
        with self._lock:
            session = self._sessions.get(transport.client_id)
            if session is not None and session.online is transport:
                session.online = None

    def _subscribe(self, transport: MemoryTransport, topic_filter: str) -> None:
        with self._lock:
            session = self._sessions.get(transport.client_id)
            if session is None or session.online is not transport:
                return
            session.subscriptions.add(topic_filter)
            retained = [
                m for t, m in self._retained.items() if mqtt.topic_matches_sub(topic_filter, t)
            ]
        for message in retained:
            transport._deliver(message)

    def _unsubscribe(self, transport: MemoryTransport, topic_filter: str) -> None:
        with self._lock:
            session = self._sessions.get(transport.client_id)
            if session is not None:
                session.subscriptions.discard(topic_filter)

    def _publish(self, sender: MemoryTransport, message: Message, retain: bool) -> None:
        deliveries: list[tuple[MemoryTransport, Message]] = []
        with self._lock:
            if not self.running:
                raise NotConnected("broker is down")
            if retain:
                if message.payload:
                    self._retained[message.topic] = Message(
                        topic=message.topic,
                        payload=message.payload,
                        msg_id=message.msg_id,
                        retained=True,
                    )
                else:
                    self._retained.pop(message.topic, None)
            for session in self._sessions.values():
                if not any(mqtt.topic_matches_sub(f, message.topic) for f in session.subscriptions):
                    continue
                if session.online is not None:
                    deliveries.append((session.online, message))
                else:
                    session.queued.append(message)
        for transport, msg in deliveries:
            transport._deliver(msg)


_STOP = object()


class MemoryTransport(Transport):
    """A client of a `MemoryBroker`; delivers on its own thread, like paho's network thread."""

    def __init__(self, broker: MemoryBroker, client_id: str) -> None:
        if not client_id:
            raise TransportError("client_id must not be empty")
        super().__init__()
        self.client_id = client_id
        self._broker = broker
        self._handlers: dict[str, Handler] = {}
        self._started = False
        self._inbox: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise TransportError("transport already started")
            self._started = True
        self._thread = threading.Thread(
            target=self._network, name=f"fedrt-memmqtt-{self.client_id}", daemon=True
        )
        self._thread.start()
        self._broker._attach(self)
        self._try_connect()

    def close(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._connected.clear()
        self._broker._disconnect(self)
        self._inbox.put(_STOP)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _wants_connection(self) -> bool:
        return self._started and not self._connected.is_set() and self._network_up

    def _network_lost(self) -> None:
        self._broker._disconnect(self)

    def _network_back(self) -> None:
        if self._wants_connection():
            self._try_connect()

    def _try_connect(self) -> None:
        with self._lock:
            if not self._network_up:
                return
            subs = set(self._handlers)
        try:
            present, backlog = self._broker._connect(self, subs)
        except NotConnected:
            return  # the broker's start() reconnects us
        self._connects += 1
        self._connected.set()
        self._inbox.put(("connected", present))
        for message in backlog:
            self._deliver(message)
        # Re-subscribing on connect (as PahoTransport does) makes the broker resend retained
        # messages, exactly as Mosquitto does after a reconnect.
        for topic_filter in sorted(subs):
            self._broker._subscribe(self, topic_filter)

    def _lost(self) -> None:
        self._connected.clear()

    # -- network thread ----------------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        self._inbox.put(message)

    def _network(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            if isinstance(item, Message):
                with self._lock:
                    handlers = [
                        h
                        for f, h in self._handlers.items()
                        if mqtt.topic_matches_sub(f, item.topic)
                    ]
                for handler in handlers:
                    try:
                        handler(item)
                    except Exception:
                        log.exception("handler for %s failed", item.topic)
            elif isinstance(item, tuple):
                with self._lock:
                    listeners = list(self._listeners)
                for listener in listeners:
                    try:
                        listener(bool(item[1]))
                    except Exception:
                        log.exception("connect listener failed")

    # -- publish / subscribe -----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        check_topic(topic, wildcards=False)
        check_qos(qos)
        if not self.connected:
            raise NotConnected(f"{self.client_id} is not connected")
        self._broker._publish(
            self, Message(topic=topic, payload=bytes(payload), msg_id=msg_id), retain
        )

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        check_topic(topic_filter, wildcards=True)
        check_qos(qos)
        with self._lock:
            self._handlers[topic_filter] = handler
        if self.connected:
            self._broker._subscribe(self, topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._handlers.pop(topic_filter, None)
        self._broker._unsubscribe(self, topic_filter)
