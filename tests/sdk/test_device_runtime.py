"""DeviceRuntime's event handling around stop: what arrives once it stops is dropped quietly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedrt.sdk.device_config import DeviceConfig
from fedrt.sdk.device_runtime import DeviceRuntime
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in


def test_events_reaching_a_stopped_runtime_are_dropped_without_failing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub may tick a device after ``stop`` gave up waiting for it (its link and outbox
    then closed): such events were handled, failed and logged a traceback each, which at a
    thousand devices kept the hub busy formatting tracebacks."""
    store = ExampleStore(tmp_path / "examples.sqlite3", x_shape=(2,), x_dtype=np.float32)
    runtime = DeviceRuntime(
        DeviceConfig(data_dir=tmp_path / "device", coordinator_url="http://127.0.0.1:9"),
        store=store,
        device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]),
    )
    handled: list[str] = []

    def closed_outbox(kind: str, value: object) -> None:  # what a stopped device's tick meets
        handled.append(kind)
        raise RuntimeError("outbox failure: Cannot operate on a closed database")

    monkeypatch.setattr(runtime, "_handle", closed_outbox)
    caplog.set_level(logging.INFO, logger="fedrt.sdk")
    runtime._step("tick", None)  # not running: never started, or stopped
    assert handled == []
    assert caplog.records == []
    runtime._running = True  # the same event while it runs is handled, and its failure logged
    runtime._step("tick", None)
    assert handled == ["tick"]
    assert [r.getMessage() for r in caplog.records] == ["device event tick failed"]
    store.close()
