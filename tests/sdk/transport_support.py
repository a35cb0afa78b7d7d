"""Helpers for transport tests: a handler that queues what it receives, polling, a quickly
reconnecting MQTT config and a probe that waits for a subscription to be in place."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from fedrt.sdk.transport import Message, MqttConfig, Transport

TIMEOUT = 10.0


class Inbox:
    """A handler collecting messages into a queue the test reads with timeouts."""

    def __init__(self) -> None:
        self.q: queue.Queue[Message] = queue.Queue()

    def __call__(self, message: Message) -> None:
        self.q.put(message)

    def get(self, timeout: float = TIMEOUT) -> Message:
        return self.q.get(timeout=timeout)

    def empty_for(self, seconds: float) -> bool:
        try:
            self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


def eventually(check: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def fast(host: str, port: int, client_id: str, **kw: object) -> MqttConfig:
    """An MQTT config that reconnects within half a second (tests restart brokers)."""
    return MqttConfig(
        host=host,
        port=port,
        client_id=client_id,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        **kw,  # type: ignore[arg-type]
    )


def probe(pub: Transport, sub: Transport, topic: str, inbox: Inbox) -> bool:
    """Publish probes until one arrives (the subscription is in place), then drain the rest."""
    pub.publish(topic, b"probe")
    try:
        while inbox.get(0.2).payload != b"probe":
            pass
    except Exception:
        return False
    while not inbox.empty_for(0.2):
        pass
    return True
