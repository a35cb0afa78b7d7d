"""A core-NATS queue-group reader: each device message on a subject reaches one instance.

NATS 2.9's MQTT listener has no shared subscriptions, but an MQTT publish is a core-NATS
message too (``/`` becomes ``.``), and core subscribers in one queue group get each message
once between them. Every coordinator instance of a shared store opens one of these as the
coordinator user (``broker.reading``).

Delivery is at most once: a message in flight when its instance dies is lost, and the
device's check-in timeout sends it again (what it does for any unanswered check-in). The
handler runs one message at a time; messages wait in the client (``_PENDING_MSGS``) while
it is busy, and beyond that the client drops them (a slow consumer, logged), which again
costs the devices one retry, never the coordinator its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedrt.coordinator.errors import BrokerError, BrokerRefused

log = logging.getLogger(__name__)

__all__ = ["NatsQueueReader", "QueueSettings"]

OnMessage = Callable[[str, bytes], Awaitable[None]]
# Each reconnect try waits this long; the client cycles through every node it knows.
_RECONNECT_WAIT_S = 1.0
_CONNECT_TIMEOUT_S = 10.0
# Held while the handler is busy: a 1,000-device check-in burst with room to spare; a
# check-in is ~100 bytes, a plain update ~100 KB (the byte limit binds first for those).
_PENDING_MSGS = 65_536
_PENDING_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    servers: Sequence[str]
    subject: str
    queue: str
    # Read besides, by this instance alone (no queue group): its relay subject.
    direct: Sequence[str] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = None
    name: str = "fedrt-coordinator"

    def __post_init__(self) -> None:
        if not self.servers:
            raise BrokerError("a NATS queue reader needs at least one server URL")


class NatsQueueReader:
    """One core-NATS connection with one queue subscription feeding ``on_message``."""

    def __init__(self, settings: QueueSettings, on_message: OnMessage) -> None:
        self.settings = settings
        self._on_message = on_message
        self._nc: Any = None
        self._publishing: set[asyncio.Future[None]] = set()
        self.handled = 0
        self.failures = 0
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def start(self, timeout: float = _CONNECT_TIMEOUT_S) -> None:
        import nats
        from nats.errors import Error as NatsError
        from nats.errors import NoServersError, SlowConsumerError

        s = self.settings

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError):
                self.dropped += 1
                log.warning("NATS queue reader: a device message was dropped (handler busy)")
            else:
                log.warning("NATS queue reader: %s", exc)

        try:
            self._nc = await nats.connect(
                servers=list(s.servers),
                name=s.name,
                user=s.username,
                password=s.password,
                tls=s.tls,
                connect_timeout=timeout,
                reconnect_time_wait=_RECONNECT_WAIT_S,
                max_reconnect_attempts=-1,  # as the MQTT link: a broker outage is waited out
                allow_reconnect=True,
                error_cb=on_error,
            )
        except NoServersError as exc:
            where = ", ".join(s.servers)
            raise BrokerError(f"cannot connect to NATS {where}: {exc}") from None
        except (TimeoutError, NatsError, OSError) as exc:
            text = str(exc)
            if "authorization" in text.lower():
                raise BrokerRefused(f"NATS refused the coordinator: {text}") from None
            raise BrokerError(f"cannot connect to NATS: {text}") from None
        await self._nc.subscribe(
            s.subject,
            queue=s.queue,
            cb=self._deliver,
            pending_msgs_limit=_PENDING_MSGS,
            pending_bytes_limit=_PENDING_BYTES,
        )
        for subject in s.direct:
            await self._nc.subscribe(
                subject,
                cb=self._deliver,
                pending_msgs_limit=_PENDING_MSGS,
                pending_bytes_limit=_PENDING_BYTES,
            )
        # A refused subscription comes back asynchronously: a round trip makes it show.
        try:
            await self._nc.flush(timeout)
        except (TimeoutError, NatsError) as exc:
            await self.stop()
            raise BrokerError(
                f"NATS did not confirm the subscription to {s.subject}: {exc}"
            ) from None
        log.info("NATS queue group %s reads %s", s.queue, s.subject)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish on core NATS (at most once): ``topic``'s subject, ``/`` as ``.``."""
        from nats.errors import Error as NatsError

        nc = self._nc
        if nc is None:
            raise BrokerError("the NATS queue reader is not connected")
        try:
            await nc.publish(topic.replace("/", "."), payload)
        except NatsError as exc:
            raise BrokerError(f"cannot publish on {topic} over core NATS: {exc}") from None

    def publish_soon(self, topic: str, payload: bytes) -> None:
        """``publish`` from the reader's loop without waiting; a failure is logged (the
        message is as lost as one the queue group dropped: the device sends it again)."""
        task = asyncio.ensure_future(self.publish(topic, payload))
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Future[None]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("NATS queue reader: %s", task.exception())

    async def _deliver(self, msg: Any) -> None:
        topic = str(msg.subject).replace(".", "/")
        try:
            await self._on_message(topic, bytes(msg.data))
            self.handled += 1
        except Exception:
            # One message's bug must not stop every other device's messages being read.
            self.failures += 1
            log.exception("handling a message on %s failed", topic)

    async def stop(self) -> None:
        from nats.errors import Error as NatsError

        nc, self._nc = self._nc, None
        if nc is not None:
            # Drain: messages already received are handled, then the connection closes.
            with contextlib.suppress(NatsError, asyncio.TimeoutError):
                await nc.drain()
