"""The port a round driver plugs into (``base``): ``RoundDriver``, what it may use
(``DriverContext``) and where it reports round events (``RoundObserver``).

May import: the layers below it (``store``, ``selection``, ``devices``, ``models``,
``tasks`` and the floor). Implementations live above it (``rounds.driver``). Coordinator
modules import ``driver.base`` by path; this facade is for callers outside the coordinator.
"""

from fedrt.coordinator.driver.base import (
    DriverContext,
    DriverFactory,
    PublishFn,
    RoundDriver,
    RoundObserver,
)

__all__ = ["DriverContext", "DriverFactory", "PublishFn", "RoundDriver", "RoundObserver"]
