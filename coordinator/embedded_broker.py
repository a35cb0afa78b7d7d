"""The embedded amqtt broker: single-machine deployments need no separate Mosquitto."""

from __future__ import annotations

import logging
import socket
from typing import Any

from fedrt.coordinator.errors import BrokerError

log = logging.getLogger(__name__)
# amqtt logs every state-machine step at INFO; keep the coordinator's log readable.
for _noisy in ("transitions", "amqtt"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

# Only anonymous auth is configured, so the listener must never leave the machine.
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class EmbeddedBroker:
    """An amqtt broker in the running asyncio loop, listening on a loopback port.

    It accepts anonymous clients, which is why it binds loopback only: on one machine the
    device processes and the coordinator share a trust boundary. Anything reachable from
    other machines should use Mosquitto with the password/ACL files enrollment writes.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in _LOOPBACK:
            raise BrokerError(f"the embedded broker binds loopback only, not {host!r}")
        self.host = host
        self.port = port or _free_port(host)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        # Imported here: amqtt is only needed when the embedded broker is actually used.
        from amqtt.broker import Broker

        if self._broker is not None:
            raise BrokerError("embedded broker already running")
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and OS errors; map them at the edge
            raise BrokerError(f"embedded broker failed on {self.host}:{self.port}: {exc}") from exc
        self._broker = broker
        log.info("embedded MQTT broker on %s", self.url)

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


__all__ = ["EmbeddedBroker"]
