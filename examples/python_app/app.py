"""A small app that embeds a fedrt ``Device``: it records readings, and trains on them in rounds.

Run it against a coordinator with a task on ``device_tests/fixtures/mlp`` (README.md here):

    python examples/python_app/app.py --coordinator http://127.0.0.1:8080 --token TOKEN \
        --model device_tests/fixtures/mlp --data-dir app-data

It enrolls once (the token is needed only the first time), starts the device, feeds it one
reading every ``--every`` seconds from its own thread, prints the device's events and a status
line, and exits 0 after ``--rounds`` completed rounds or SIGTERM (1 on a timeout, 2 when
the SDK refuses, 130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.model_export.manifest import Manifest
from fedrt.sdk import (
    Device,
    DeviceConfig,
    DeviceEvent,
    ExampleSchema,
    ExampleStore,
    LinuxDeviceState,
    ScriptedDeviceState,
    SdkError,
    idle_plugged_in,
)


def show(kind: str, **fields: Any) -> None:
    print(json.dumps({"app": kind, **fields}, default=str), flush=True)


class Sensor:
    """Stands in for the app's real data: a reading of the model's input shape and its class.

    Each class has its own mean reading; a reading is that mean plus noise, so the model has
    something to learn."""

    def __init__(self, schema: ExampleSchema, classes: int, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._means = self._rng.normal(size=(classes, *schema.x_shape))
        self._classes = classes
        self._dtype = np.dtype(schema.x_dtype)

    def read(self) -> tuple[np.ndarray, int]:
        label = int(self._rng.integers(self._classes))
        x = self._means[label] + 0.3 * self._rng.normal(size=self._means.shape[1:])
        return x.astype(self._dtype), label


def feed(store: ExampleStore, sensor: Sensor, every: float, stop: threading.Event) -> None:
    """The app's own thread: ExampleStore.append is thread-safe, the device reads meanwhile."""
    while not stop.is_set():
        x, y = sensor.read()
        store.append(x, y)
        stop.wait(every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", required=True, help="the coordinator's URL")
    parser.add_argument("--token", help="enrollment token (first run only)")
    parser.add_argument("--model", type=Path, required=True, help="the model's export folder")
    parser.add_argument("--data-dir", type=Path, default=Path("app-data"))
    parser.add_argument("--task", help="task id (default: the first task announced)")
    parser.add_argument("--rounds", type=int, default=1, help="exit after this many rounds")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after seconds")
    parser.add_argument("--every", type=float, default=0.05, help="seconds between readings")
    parser.add_argument("--poll-s", type=float, default=15.0, help="DeviceConfig.poll_s")
    parser.add_argument("--status-every", type=float, default=2.0)
    parser.add_argument(
        "--mqtt-protocol", type=int, choices=(4, 5), default=5, help="4: the embedded broker"
    )
    parser.add_argument(
        "--eligibility",
        choices=("always", "linux"),
        default="always",
        help="always: train whenever asked (a demo); linux: only idle, on power, unmetered",
    )
    args = parser.parse_args(argv)

    # The model's manifest says what one example is (x float32[12], y int32[] here).
    manifest = Manifest.load(args.model)
    schema = ExampleSchema.from_manifest(manifest)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = schema.open_store(args.data_dir / "examples.sqlite3")

    events: queue.Queue[tuple[DeviceEvent, dict[str, Any]]] = queue.Queue()

    def on_event(event: DeviceEvent, detail: dict[str, Any]) -> None:
        # Called on the device's event thread: hand it over, never block or raise here.
        events.put((event, detail))

    state = (
        ScriptedDeviceState([(0.0, idle_plugged_in())])
        if args.eligibility == "always"
        else LinuxDeviceState()
    )
    config = DeviceConfig(
        data_dir=args.data_dir,
        coordinator_url=args.coordinator,
        task_id=args.task,
        poll_s=args.poll_s,
        mqtt_protocol=args.mqtt_protocol,
    )
    device = Device(config, store=store, device_state=state, on_event=on_event)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    feeder = threading.Thread(
        target=feed,
        args=(store, Sensor(schema, classes=manifest.output.shape[-1]), args.every, stop),
        daemon=True,
    )
    try:
        device_id = device.enroll(args.token)  # a no-op once enrolled
        show("enrolled", device_id=device_id, schema=schema.describe())
        feeder.start()
        device.start()
        return follow(device, events, args, stop)
    except SdkError as exc:
        show("error", error=type(exc).__name__, detail=str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        stop.set()
        device.stop()
        if feeder.is_alive():
            feeder.join()
        store.close()


def follow(
    device: Device,
    events: queue.Queue[tuple[DeviceEvent, dict[str, Any]]],
    args: argparse.Namespace,
    stop: threading.Event,
) -> int:
    """Print events and status until enough rounds completed, the timeout, or SIGTERM."""
    deadline = time.monotonic() + args.timeout
    next_status = 0.0
    while not stop.is_set():
        try:
            event, detail = events.get(timeout=0.1)
            detail.pop("delta", None)  # the app's own update: large, and not for printing
            show("event", event=event.value, **detail)
            continue
        except queue.Empty:
            pass
        status = device.status()  # cheap, from any thread
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + args.status_every
            show("status", examples=len(device.store), **dataclasses.asdict(status))
        if status.rounds_completed >= args.rounds:
            show("done", rounds_completed=status.rounds_completed, bytes_up=status.bytes_up)
            return 0
        if time.monotonic() > deadline:
            show("timeout", seconds=args.timeout, status=dataclasses.asdict(status))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
