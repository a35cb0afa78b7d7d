"""Federated simulations on one machine: real broker, real coordinator, many real devices."""

__all__: list[str] = []
