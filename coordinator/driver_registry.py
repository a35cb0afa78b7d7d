"""Which round driver ``fedrt coordinator serve`` runs: the one place to plug it in."""

from __future__ import annotations

from fedrt.coordinator.driver.base import DriverContext, DriverFactory, RoundDriver


def default_driver_factory() -> DriverFactory | None:
    """The driver factory the CLI passes to the service: the federated round driver."""

    def make(ctx: DriverContext) -> RoundDriver:
        from fedrt.coordinator.rounds.driver import FederatedDriver

        return FederatedDriver(ctx)

    return make


__all__ = ["default_driver_factory"]
