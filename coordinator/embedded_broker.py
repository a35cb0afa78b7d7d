"""The embedded amqtt broker: single-machine deployments need no separate Mosquitto.

With ``EmbeddedAuth`` it enforces what Mosquitto's password and ACL files do: only enrolled,
non-revoked devices connect, each publishes under its own ``up/`` topics and reads only its
own inbox and the public announcements (``fedrt.protocol.topics``); the coordinator's own
user may use the whole ``fedrt/v1`` tree.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from fedrt.coordinator.errors import BrokerError
from fedrt.protocol.topics import PREFIX, coordinator_status, task_announcements_filter

log = logging.getLogger(__name__)
# amqtt logs every state-machine step at INFO; keep the coordinator's log readable.
for _noisy in ("transitions", "amqtt"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

# Accepting anonymous clients is only ever allowed on loopback.
_LOOPBACK = ("127.0.0.1", "::1", "localhost")

Verify = Callable[[str, str], bool]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest); a filter matches itself too."""
    if topic_filter == topic:
        return True
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


@dataclass(frozen=True, slots=True)
class EmbeddedAuth:
    """Who may connect (``verify``) and the coordinator's user name; the ACL is fixed."""

    verify: Verify
    coordinator_username: str

    def allowed(self, username: str, topic: str, action: str) -> bool:
        """``action`` is amqtt's ``publish``, ``subscribe`` (a filter) or ``receive``."""
        if username == self.coordinator_username:
            return topic_matches(f"{PREFIX}/#", topic)
        if action == "publish":
            return topic_matches(f"{PREFIX}/dev/{username}/up/+", topic)
        readable = (
            coordinator_status(),
            task_announcements_filter(),
            f"{PREFIX}/dev/{username}/in",
        )
        # A subscription must be one of the grants or a narrower concrete topic within one.
        return any(topic_matches(grant, topic) for grant in readable)


class FedrtAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no types
    """amqtt plugin: password check through ``EmbeddedAuth.verify``."""

    @dataclass
    class Config:
        auth: Any = None  # an EmbeddedAuth (Any: amqtt type-checks plugin configs)

    async def authenticate(self, *, session: Any) -> bool | None:
        auth = self.config.auth
        if not isinstance(auth, EmbeddedAuth) or session.username is None:
            return False
        return bool(auth.verify(str(session.username), str(session.password or "")))


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
        # Imported here: the broker core is only needed when the embedded broker runs.
        from amqtt.broker import Broker

        if self._broker is not None:
            raise BrokerError("embedded broker already running")
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
        broker = Broker(config)
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


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


__all__ = ["EmbeddedAuth", "EmbeddedBroker", "topic_matches"]
