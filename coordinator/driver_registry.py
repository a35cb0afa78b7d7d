"""Which round driver ``fedrt coordinator serve`` runs: the one place to plug it in."""

from __future__ import annotations

from fedrt.coordinator.driver import DriverFactory


def default_driver_factory() -> DriverFactory | None:
    """The driver factory the CLI passes to the service.

    None until the round machine's asyncio adapter is wired here; without a driver the
    service still enrolls devices, serves models and the API, and counts device messages
    as ``no_driver``.
    """
    return None


__all__ = ["default_driver_factory"]
