"""Where a device's timing jitter and update key come from: `Jitter` and `SystemJitter`."""

from __future__ import annotations

import random as stdlib_random
from typing import Protocol

__all__ = ["Jitter", "SystemJitter"]


class Jitter(Protocol):
    """Where a device's timing jitter and its update key come from.

    ``numpy.random.Generator`` has this shape (simulations pass seeded ones); a device's
    default is `SystemJitter` (the OS's randomness), so a device never loads numpy.random
    (1.9 MiB of extension modules): its update draws from the protocol's AES-CTR PRG."""

    def uniform(self, low: float, high: float, /) -> float: ...

    def integers(self, low: int, /) -> int: ...


class SystemJitter:
    """`Jitter` from the operating system's randomness (``random.SystemRandom``)."""

    __slots__ = ("_random",)

    def __init__(self) -> None:
        self._random = stdlib_random.SystemRandom()

    def uniform(self, low: float, high: float, /) -> float:
        return self._random.uniform(low, high)

    def integers(self, low: int, /) -> int:
        """A uniform integer in [0, low), as ``Generator.integers(low)``."""
        return self._random.randrange(low)
