"""Monitoring: the service's Prometheus registry and counters (``registry``), the round
histograms the round driver feeds through ``DriverContext.observer`` (``series``) and the
gauges read from the store at scrape time (``gauges``).

Not floor-level: it implements the driver's ``RoundObserver`` port and reads the store, so it
sits beside ``rounds``, ``api`` and ``broker`` and only the service (the roof) builds it.
May import: every layer up to ``driver``; ``prometheus_client`` from outside. Coordinator
modules import the modules by path; this facade is for callers outside the coordinator.
"""

from fedrt.coordinator.telemetry.gauges import StoreGauges
from fedrt.coordinator.telemetry.registry import Telemetry
from fedrt.coordinator.telemetry.series import (
    DEVICE_BYTES,
    ROUND_SECONDS,
    STAGE_SECONDS,
    RoundSeries,
)

__all__ = [
    "DEVICE_BYTES",
    "ROUND_SECONDS",
    "STAGE_SECONDS",
    "RoundSeries",
    "StoreGauges",
    "Telemetry",
]
