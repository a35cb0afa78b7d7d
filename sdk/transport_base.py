"""The `Transport` interface every MQTT link implements, with its message, config and back-off."""

from __future__ import annotations

import math
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedrt.sdk.errors import SdkConfigError, TransportError

__all__ = [
    "DEFAULT_SESSION_EXPIRY_S",
    "MSG_ID_PROPERTY",
    "ConnectListener",
    "Handler",
    "Message",
    "MqttConfig",
    "ReconnectBackoff",
    "Transport",
    "check_qos",
    "check_topic",
]

# The user property naming a message for application-level acks and receiver-side dedupe.
MSG_ID_PROPERTY = "fedrt-msg-id"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    topic: str
    payload: bytes
    msg_id: str | None = None
    retained: bool = False


Handler = Callable[[Message], None]
ConnectListener = Callable[[bool], None]  # called with session_present on every connect


class Transport(ABC):
    """A publish/subscribe link that reconnects by itself.

    Handlers run on the transport's network thread: they must return quickly (hand work to
    another thread) and may publish. A handler that raises is logged and skipped.
    """

    @abstractmethod
    def start(self) -> None:
        """Begin connecting in the background (returns at once)."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect cleanly and stop reconnecting. The broker keeps the session."""

    def __init__(self) -> None:
        # Link state every implementation keeps the same way: set by its network thread.
        self._lock = threading.Lock()
        self._listeners: list[ConnectListener] = []
        self._connected = threading.Event()
        self._connects = 0
        self._network_up = True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connection_count(self) -> int:
        """Successful connects so far; it grows before ``connected`` turns true."""
        return self._connects

    def wait_connected(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for a connection; True once connected."""
        return self._connected.wait(timeout)

    @abstractmethod
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        """Hand a message to the link; raises `NotConnected` while the link is down."""

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        """Deliver matching messages to ``handler``; kept across reconnects."""

    @abstractmethod
    def unsubscribe(self, topic_filter: str) -> None: ...

    def network_changed(self, available: bool) -> None:
        """The device's network went away (False) or came back (True), as the OS reports it
        (Android: a ConnectivityManager callback). Gone: the link is cut now and no
        connection is tried until it is back. Back: reconnect now, not when the back-off ends.
        """
        with self._lock:
            if self._network_up == available:
                return
            self._network_up = available
        if available:
            self._network_back()
        else:
            self._connected.clear()
            self._network_lost()

    @property
    def network_up(self) -> bool:
        return self._network_up

    @abstractmethod
    def _network_lost(self) -> None:
        """Cut the link abruptly, as a lost network does (no DISCONNECT)."""

    @abstractmethod
    def _network_back(self) -> None:
        """Connect again without waiting for the back-off."""

    def add_connect_listener(self, listener: ConnectListener) -> None:
        """Call ``listener(session_present)`` after every successful (re)connect."""
        with self._lock:
            self._listeners.append(listener)


def check_topic(topic: str, *, wildcards: bool) -> None:
    if not topic or len(topic.encode()) > 65535 or "\x00" in topic:
        raise TransportError(f"invalid topic {topic!r}")
    if not wildcards and ("+" in topic or "#" in topic):
        raise TransportError(f"cannot publish to a wildcard topic {topic!r}")
    if wildcards and "#" in topic and not (topic == "#" or topic.endswith("/#")):
        raise TransportError(f"'#' must be the last level of {topic!r}")


def check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise TransportError(f"qos must be 0 or 1 (QoS 2 is not used), got {qos}")


class ReconnectBackoff:
    """Exponential backoff with "equal jitter": attempt n waits in [d/2, d], d = min(cap, b·2^n).

    Jitter spreads a fleet's reconnects after a broker restart; the random source is injected
    so a schedule is reproducible in tests.
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not (0 < initial_s <= max_s and math.isfinite(max_s)):
            raise SdkConfigError(f"need 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (timing jitter)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 62))
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)


# A week covers a phone left off its charger over a long weekend; the broker then drops the
# session (and the messages queued for it).
DEFAULT_SESSION_EXPIRY_S = 7 * 86400


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    """Where and how to connect; ``ca_file`` turns TLS on (the coordinator's CA)."""

    host: str
    client_id: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = field(default=None, repr=False)
    keepalive_s: int = 30
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 120.0
    connect_timeout_s: float = 10.0
    will_topic: str | None = None
    will_payload: bytes = b"offline"
    # 5: MQTT v5 (session expiry, message ids as user properties). 4: MQTT 3.1.1 for brokers
    # without v5, such as the coordinator's embedded amqtt; the session then never expires
    # and message ids travel only inside payloads.
    protocol: int = 5
    # More listeners of the same broker cluster (host, port): after a lost connection or a
    # failed try the transport moves to the next (sessions live in the cluster, not a node).
    fallbacks: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.host:
            raise SdkConfigError("host must not be empty")
        if not self.client_id or len(self.client_id.encode()) > 65535:
            raise SdkConfigError("client_id must be a non-empty string")
        if not 0 < self.port < 65536:
            raise SdkConfigError(f"port out of range: {self.port}")
        for host, port in self.fallbacks:
            if not host or not 0 < port < 65536:
                raise SdkConfigError(f"bad fallback broker address {host!r}:{port!r}")
        if self.password is not None and self.username is None:
            raise SdkConfigError("a password needs a username")
        if (self.client_cert is None) != (self.client_key is None):
            raise SdkConfigError("client_cert and client_key go together")
        if self.protocol not in (4, 5):
            raise SdkConfigError(f"protocol must be 5 (MQTT v5) or 4 (3.1.1), got {self.protocol}")
        if self.keepalive_s < 5 or self.session_expiry_s < 0 or self.connect_timeout_s <= 0:
            raise SdkConfigError("keepalive_s >= 5, session_expiry_s >= 0, connect_timeout_s > 0")
        for path in (self.ca_file, self.client_cert, self.client_key):
            if path is not None and not Path(path).is_file():
                raise SdkConfigError(f"TLS file {path} does not exist")
        ReconnectBackoff(self.backoff_initial_s, self.backoff_max_s)
