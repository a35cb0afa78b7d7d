"""A small ``fedrt simulate`` run in-process on a Mosquitto of its own (zoo:mlp, SecAgg+)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fedrt.simulation.runner import Report, SimConfig, Simulation
from fedrt.simulation.stack import mosquitto_available

# What the end-to-end simulate tests share; each names what it is about.
SMALL: dict[str, object] = {
    "devices": 4,
    "model": "zoo:mlp",
    "secagg": True,
    "broker": "mosquitto",
    "time_limit_s": 240,
}


def simulate_small(data_dir: Path, **options: object) -> Report:
    """Run a simulation of ``SMALL`` overridden by ``options``, data under ``data_dir``."""
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (apt-get install -y mosquitto)")
    config = SimConfig(**{**SMALL, "data_dir": data_dir, **options})  # type: ignore[arg-type]
    return Simulation(config, out=io.StringIO()).run()
