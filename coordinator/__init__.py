"""The coordinator service: rounds, selection, secure aggregation relay, model versions.

Laid out by subsystem, in layers (docs/architecture.md, "The coordinator's packages"):
the floor (``errors``, ``records``, ``validation``), then ``store``, ``security``,
``strategies``, ``selection``; ``privacy``, ``devices``, ``models``; ``tasks``; ``driver``;
``rounds``, ``api``, ``broker``, ``telemetry``; and the roof that wires them together
(``config``, ``service``, ``driver_registry``, ``cli``).
"""

__all__: list[str] = []
