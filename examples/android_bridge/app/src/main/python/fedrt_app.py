"""The app's Python side: runs fedrt.sdk's Device inside the Android app (Chaquopy).

Called from Kotlin (FedrtWorker, MainActivity). The model runs in the app's Kotlin
LiteRtTrainer (Java LiteRT), reached through fedrt.sdk.android_trainer; the device state comes
from the app's Context through fedrt.sdk.android_state. Everything fedrt keeps (identity key,
credentials, outbox, examples, downloaded models) lives in the app's private files/fedrt.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

from java import jclass

from fedrt.model_export.manifest import Manifest
from fedrt.sdk.android_state import AndroidDeviceState
from fedrt.sdk.android_trainer import java_trainer_factory
from fedrt.sdk.device import Device, DeviceConfig, DeviceEvent
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.example_store import ExampleStore

_stop = threading.Event()
# A session ends when the round it took part in ends, or when the device gave up on it.
_SESSION_OVER = {DeviceEvent.ROUND_ENDED, DeviceEvent.ABANDONED}


def _data_dir(files_dir: str) -> Path:
    return Path(files_dir) / "fedrt"


def _store(files_dir: str, manifest: Manifest) -> ExampleStore:
    train = manifest.signature("train")
    x, y = train.input("x"), train.input("y")
    if x is None or y is None:
        raise ValueError("the model's train signature has no x or y input")
    _data_dir(files_dir).mkdir(parents=True, exist_ok=True)
    return ExampleStore.for_model(
        _data_dir(files_dir) / "examples.sqlite",
        x_spec_shape=x.shape,
        x_dtype=x.dtype,
        y_spec_shape=y.shape,
        y_dtype=y.dtype,
    )


def add_examples(files_dir: str, manifest_json: str, xs: Any, ys: Any) -> int:
    """Store the app's own training examples (flat float[] rows, int[] labels); returns the
    number stored. The examples never leave the phone: only clipped, masked updates do."""
    import numpy as np

    manifest = Manifest.from_json(manifest_json)
    store = _store(files_dir, manifest)
    x_shape = manifest.signature("train").input("x").shape[1:]  # type: ignore[union-attr]
    x = np.frombuffer(xs, dtype=np.float32).reshape((-1, *x_shape))
    y = np.frombuffer(ys, dtype=np.int32)
    store.extend(list(x), [int(v) for v in y])
    return len(store)


def describe_state(context: Any) -> str:
    """The current snapshot and the default policy's decision, for the app's screen."""
    now = time.time()
    snapshot = AndroidDeviceState.from_context(context).snapshot(now)
    decision = EligibilityPolicy().decide(snapshot, now)
    fields = {k: v for k, v in dataclasses.asdict(snapshot).items() if k != "notes"}
    return f"{decision}\n\n{fields}\n\nnotes: {', '.join(snapshot.notes) or '-'}"


def request_stop() -> None:
    """WorkManager stopped the worker: end the session at the next check (within 1 s)."""
    _stop.set()


def run_session(
    context: Any, files_dir: str, enrollment_json: str, manifest_json: str, max_seconds: float
) -> str:
    """Enroll once, then take part until a round ends, the window closes or we are stopped."""
    _stop.clear()
    enrollment = json.loads(enrollment_json)
    manifest = Manifest.from_json(manifest_json)
    config = DeviceConfig(
        data_dir=_data_dir(files_dir),
        coordinator_url=enrollment["coordinator_url"],
        task_id=enrollment.get("task_id"),
        labels=dict(enrollment.get("labels") or {}),
    )
    over = threading.Event()

    def on_event(event: DeviceEvent, info: dict[str, Any]) -> None:
        if event in _SESSION_OVER:
            over.set()

    device = Device(
        config,
        store=_store(files_dir, manifest),
        device_state=AndroidDeviceState.from_context(context),
        on_event=on_event,
        trainer_factory=java_trainer_factory(jclass("org.fedrt.bridge.LiteRtTrainer")),
    )
    # The token is used once; the credentials it buys are kept in files/fedrt.
    device.enroll(enrollment.get("enrollment_token"))
    device.start()
    try:
        deadline = time.monotonic() + max_seconds
        while not (_stop.is_set() or over.is_set()) and time.monotonic() < deadline:
            _stop.wait(1.0)
    finally:
        device.stop()
    return json.dumps(dataclasses.asdict(device.status()), default=str)
