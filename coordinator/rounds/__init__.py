"""Federated rounds, in two halves.

Sans I/O (``states``, ``machine``, ``commands``, ``aggregation``, ``outbox``, ``roster``):
one round of one task as a state machine that takes events and returns commands; no
store, clock, socket or global random generator, and no import of ``store``, ``records``,
``driver``, ``models`` or ``tasks``. Driver side (``driver`` and its helpers ``plan``,
``dp``, ``versions``, ``journal``, ``runs``): ``FederatedDriver``, the ``RoundDriver`` that
feeds each running task's machine and carries out its commands against the store, the
model catalog and the broker.

May import: every layer up to ``driver`` (the sans-I/O half: no ``store``, ``records``, ``driver``,
``models``, ``tasks``); never ``api``, ``broker`` or ``telemetry``. Modules import each
other by path (``fedrt.coordinator.rounds.machine``).
"""
