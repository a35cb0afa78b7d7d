"""The embedded amqtt broker: single-machine deployments need no separate Mosquitto.

With ``EmbeddedAuth`` it enforces what Mosquitto's password and ACL files do: only enrolled,
non-revoked devices connect, each publishes under its own ``up/`` topics and reads only its
own inbox and the public announcements (``fedrt.protocol.topics``); the coordinator's own
user may use the whole ``fedrt/v1`` tree. And, as Mosquitto's ``use_username_as_clientid``,
each client's id is its user name, so no client can reach another's connection or session.
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter
from amqtt.broker import Broker
from amqtt.codecs_amqtt import read_or_raise
from amqtt.errors import AMQTTError, CodecError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import CONNECT
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from paho.mqtt.client import topic_matches_sub

from fedrt.coordinator.errors import BrokerError
from fedrt.protocol.round_errors import InvalidTopic
from fedrt.protocol.topics import (
    PREFIX,
    coordinator_status,
    device_acl,
    task_announcements_filter,
)

log = logging.getLogger(__name__)

# Accepting anonymous clients is only ever allowed on loopback.
_LOOPBACK = ("127.0.0.1", "::1", "localhost")

# The password check: a device's hash is in the store, so a coroutine (a plain function
# answering at once serves tests and fixed passwords).
Verify = Callable[[str, str], bool | Awaitable[bool]]


async def _verdict(verify: Verify, username: str, password: str) -> bool:
    answer = verify(username, password)
    return bool(await answer) if inspect.isawaitable(answer) else bool(answer)


# A CONNECT holds an id, a will, a user name and a password: a few KiB. Anything bigger is
# refused before it is buffered.
_MAX_CONNECT_BYTES = 64 * 1024
_MQTT_311 = 4  # amqtt's only protocol level; it refuses the others before touching sessions


def _valid_filter(topic_filter: str) -> bool:
    """An MQTT topic filter: not empty, ``#`` only as the whole last level, ``+`` whole levels."""
    levels = topic_filter.split("/")
    return (
        bool(topic_filter)
        and all(level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels)
        and "#" not in levels[:-1]
    )


def filter_within(topic_filter: str, grant: str) -> bool:
    """Whether every topic ``topic_filter`` matches is also matched by the filter ``grant``.

    Level by level: a ``#`` in the grant covers the rest; a ``#`` in the filter needs one in
    the grant at the same level or earlier (or a grant ending ``+/#`` where the filter's
    ``#`` has no parent topic); a ``+`` needs ``+`` or ``#``; a literal level needs itself
    or a wildcard, except that no wildcard matches a first level starting with ``$`` (MQTT
    4.7.2). An invalid filter is within nothing.
    """
    if not (_valid_filter(topic_filter) and _valid_filter(grant)):
        return False
    f_levels, g_levels = topic_filter.split("/"), grant.split("/")
    for i, level in enumerate(f_levels):
        if i == len(g_levels):
            return False
        granted = g_levels[i]
        if granted in ("+", "#") and i == 0 and level.startswith("$"):
            return False
        if granted == "#":
            return True
        if level == "#":
            # "x/#" matches "x" too, which "x/+/#" does not; "#" and "/#" have no such parent
            # (the empty topic is none), so "+/#" covers them from their "#" on.
            return not "/".join(f_levels[:i]) and g_levels[i:] == ["+", "#"]
        if level == "+" and granted != "+":
            return False
        if granted not in ("+", level):
            return False
    # The filter matches topics of exactly its own depth; "x/#" matches "x" too.
    depth = len(f_levels)
    return len(g_levels) == depth or (len(g_levels) == depth + 1 and g_levels[-1] == "#")


@dataclass(frozen=True, slots=True)
class EmbeddedAuth:
    """Who may connect (``verify``) and the coordinator's user name; the ACL is fixed."""

    verify: Verify
    coordinator_username: str

    def allowed(self, username: str, topic: str, action: str) -> bool:
        """``action`` is amqtt's ``publish``, ``subscribe`` or ``receive``.

        A subscription's filter must lie within a grant (a device asking for
        ``fedrt/v1/tasks/#`` under ``fedrt/v1/tasks/+`` is refused: SUBACK failure).
        """
        if action == "subscribe":
            return any(filter_within(topic, grant) for grant in self._reads(username))
        if action == "receive":
            return any(topic_matches_sub(grant, topic) for grant in self._reads(username))
        if action == "publish" and "+" not in topic and "#" not in topic:
            return any(topic_matches_sub(grant, topic) for grant in self._writes(username))
        return False

    def _reads(self, username: str) -> tuple[str, ...]:
        if username == self.coordinator_username:
            return (f"{PREFIX}/#",)
        return (coordinator_status(), task_announcements_filter(), f"{PREFIX}/dev/{username}/in")

    def _writes(self, username: str) -> tuple[str, ...]:
        if username == self.coordinator_username:
            return (f"{PREFIX}/#",)
        # The device ACL's write grants (its up-topics, cohort topics included); a name
        # that is no device id gets none.
        try:
            return tuple(e.topic for e in device_acl(username) if e.access != "read")
        except InvalidTopic:
            return ()


class FedrtAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no types
    """amqtt plugin: password check through ``EmbeddedAuth.verify``."""

    @dataclass
    class Config:
        auth: Any = None  # an EmbeddedAuth (Any: amqtt type-checks plugin configs)

    async def authenticate(self, *, session: Any) -> bool | None:
        auth = self.config.auth
        if not isinstance(auth, EmbeddedAuth) or session.username is None:
            return False
        return await _verdict(auth.verify, str(session.username), str(session.password or ""))


class FedrtTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no types
    """amqtt plugin: the per-device topic ACL through ``EmbeddedAuth.allowed``."""

    @dataclass
    class Config:
        auth: Any = None

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool | None:
        auth = self.config.auth
        if not isinstance(auth, EmbeddedAuth) or session is None or topic is None:
            return False
        return auth.allowed(str(session.username or ""), topic, str(getattr(action, "value", "")))


class _Replay(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no types
    """Reads ``head`` first, then the connection: amqtt re-reads the CONNECT checked here."""

    def __init__(self, head: bytes, rest: ReaderAdapter) -> None:
        self._head, self._rest = head, rest

    async def read(self, n: int = -1) -> bytes:
        if not self._head:
            return bytes(await self._rest.read(n))
        take = len(self._head) if n < 0 else min(n, len(self._head))
        out, self._head = self._head[:take], self._head[take:]
        if n < 0 or len(out) < n:
            out += await self._rest.read(n if n < 0 else n - len(out))
        return out

    def feed_eof(self) -> None:
        self._rest.feed_eof()


async def _read_packet(reader: ReaderAdapter) -> bytes:
    """One whole MQTT packet, as sent; MQTTError unless it is a CONNECT of sane size."""
    head = bytearray(await read_or_raise(reader, 1))
    length = 0
    for shift in range(0, 28, 7):  # the remaining length: at most 4 bytes of 7 bits
        byte = (await read_or_raise(reader, 1))[0]
        head.append(byte)
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise MQTTError("malformed remaining length")
    if head[0] >> 4 != CONNECT or length > _MAX_CONNECT_BYTES:
        raise MQTTError("the first packet must be a CONNECT of at most 64 KiB")
    return bytes(head) + bytes(await read_or_raise(reader, length))


class _IdentityBroker(Broker):  # type: ignore[misc]  # amqtt ships no types
    """amqtt's broker, with each CONNECT authenticated and its client id set to its user name.

    amqtt finds the session a CONNECT names by client id, closes that session's connection
    and, on a clean session, deletes it, all BEFORE it asks the auth plugin. So a plugin
    cannot stop a device from knocking another off or wiping its queued messages by using
    its id (a device id: not secret), nor even a client with a wrong password. This check
    runs first: a client needs a valid user name and password, and its id becomes that user
    name, so it can reach its own session only (what Mosquitto's use_username_as_clientid
    does). The auth plugin still checks the password again, as a second gate.
    """

    def __init__(self, config: dict[str, Any], auth: EmbeddedAuth) -> None:
        super().__init__(config)
        self._fedrt_auth = auth

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: Any, remote_address: str, remote_port: int
    ) -> Any:
        try:
            raw = await _read_packet(reader)
            connect = await ConnectPacket.from_stream(BufferReader(raw))
            proto_level = connect.proto_level
        except (AMQTTError, CodecError, MQTTError, NoDataError, ValueError) as exc:
            await writer.close()
            raise MQTTError(f"unreadable CONNECT from {remote_address}: {exc}") from exc
        if proto_level == _MQTT_311:
            username = connect.username
            if username is None or not await _verdict(
                self._fedrt_auth.verify, username, connect.password or ""
            ):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
                raise MQTTError(f"CONNECT from {remote_address} refused: bad credentials")
            if connect.client_id != username or connect.client_id_is_random:
                connect.client_id, connect.client_id_is_random = username, False
                raw = connect.to_bytes()
        return await super()._initialize_client_session(
            _Replay(raw, reader), writer, remote_address, remote_port
        )


class EmbeddedBroker:
    """An amqtt broker in the running asyncio loop, listening on a loopback port.

    Without ``auth`` it accepts anonymous clients (tests, demos); the coordinator passes
    an ``EmbeddedAuth`` so that devices need their enrolled credentials. Anything reachable
    from other machines should be Mosquitto, which is also about 3x faster (measured).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, auth: EmbeddedAuth | None = None
    ) -> None:
        if host not in _LOOPBACK:
            raise BrokerError(f"the embedded broker binds loopback only, not {host!r}")
        self.host = host
        self.port = port or _free_port(host)
        self.auth = auth
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        if self._broker is not None:
            raise BrokerError("embedded broker already running")
        if self.auth is not None and not hasattr(Broker, "_initialize_client_session"):
            # The hook _IdentityBroker overrides: without it any client could take over another's
            # session, so refuse to run rather than run open (tested with amqtt 0.12).
            raise BrokerError("this amqtt version lacks the CONNECT hook fedrt needs; use 0.12")
        plugins: dict[str, Any]
        if self.auth is None:
            plugins = {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            }
        else:
            plugins = {
                f"{__name__}.FedrtAuthPlugin": {"auth": self.auth},
                f"{__name__}.FedrtTopicPlugin": {"auth": self.auth},
            }
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": plugins,
        }
        broker = Broker(config) if self.auth is None else _IdentityBroker(config, self.auth)
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and OS errors; map them at the edge
            raise BrokerError(f"embedded broker failed on {self.host}:{self.port}: {exc}") from exc
        self._broker = broker
        log.info("embedded MQTT broker on %s (%s)", self.url,
                 "authenticated" if self.auth else "anonymous")  # fmt: skip

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    @property
    def running(self) -> bool:
        return self._broker is not None

    def client_connected(self, client_id: str) -> bool:
        """Whether the broker holds a live connection for ``client_id`` (False once it has
        processed the client's DISCONNECT; its persistent session may remain)."""
        if self._broker is None:
            return False
        entry = self._broker.sessions.get(client_id)
        return entry is not None and entry[0].transitions.state == "connected"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


__all__ = ["EmbeddedAuth", "EmbeddedBroker", "filter_within"]
