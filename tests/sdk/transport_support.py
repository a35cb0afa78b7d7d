"""Helpers for transport tests: a handler that queues what it receives, and polling."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from fedrt.sdk.transport import Message

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
