"""``fedrt device run --config device.toml``: a Linux device (a Raspberry Pi, say) taking part.

The configuration file::

    [device]
    data_dir = "/var/lib/fedrt"            # credentials, outbox, models, examples
    coordinator_url = "https://coordinator.example:8080"
    task_id = "task-1234"                   # optional: else the first announced task
    enrollment_token = "..."                # first start only; or FEDRT_ENROLLMENT_TOKEN
    ca_file = "/etc/fedrt/ca.crt"           # optional: the CA that signs the coordinator's
                                            # HTTPS and the broker's mqtts certificates
    mqtt_tls = true                         # optional: else as enrollment reported
    state = "linux"                         # or "always" (always eligible: bench rigs)
    poll_s = 15.0

    [data]                                  # the example store's schema
    x_shape = [8, 8, 1]
    import_npz = "examples.npz"             # optional: arrays x and y appended on start

    [policy]                                # EligibilityPolicy fields, all optional
    min_battery = 30.0
    require_charging = true

``coordinator_url`` must be https, or plain http to a loopback address: the enrollment token
and the device password never cross a network in clear text. The first enrollment verifies
the coordinator with ``ca_file`` (else the system trust store); the CA the coordinator hands
out then is kept with the credentials and trusted for every later HTTPS call.

Logs go to stderr, one line each; a JSON status line goes to stdout
every ``--status-every`` seconds. SIGTERM or Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from fedrt.sdk.errors import SdkConfigError

_DEVICE_KEYS = {"data_dir", "coordinator_url", "task_id", "enrollment_token", "ca_file",
                "state", "poll_s", "mqtt_host", "mqtt_port", "mqtt_protocol",
                "mqtt_tls"}  # fmt: skip


def load_config(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SdkConfigError(f"cannot read {path}: {exc}") from None
    device = data.get("device")
    if not isinstance(device, dict):
        raise SdkConfigError(f"{path}: a [device] table is required")
    unknown = sorted(set(device) - _DEVICE_KEYS)
    if unknown:
        raise SdkConfigError(f"{path}: unknown [device] key(s): {', '.join(unknown)}")
    for key in ("data_dir", "coordinator_url"):
        if not isinstance(device.get(key), str):
            raise SdkConfigError(f"{path}: [device] {key} is required")
    if not isinstance(device.get("mqtt_tls", False), bool):
        raise SdkConfigError(f"{path}: [device] mqtt_tls must be true or false")
    return data


def _policy(table: dict[str, Any]) -> Any:
    from fedrt.sdk.eligibility import EligibilityPolicy

    names = {f.name for f in dataclasses.fields(EligibilityPolicy)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise SdkConfigError(f"unknown [policy] key(s): {', '.join(unknown)}")
    return EligibilityPolicy(**table)


def build_device(data: dict[str, Any]) -> Any:
    """The ``Device`` a configuration describes (not started, maybe not enrolled)."""
    import numpy as np

    from fedrt.sdk.device import Device, DeviceConfig
    from fedrt.sdk.example_store import ExampleStore
    from fedrt.sdk.linux_state import LinuxDeviceState
    from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in

    d = data["device"]
    data_dir = Path(d["data_dir"])
    shape = data.get("data", {}).get("x_shape")
    if not isinstance(shape, list) or not all(isinstance(v, int) for v in shape):
        raise SdkConfigError("[data] x_shape (a list of integers) is required")
    kind = d.get("state", "linux")
    if kind == "linux":
        state: Any = LinuxDeviceState()
    elif kind == "always":
        state = ScriptedDeviceState([(0.0, idle_plugged_in())])
    else:
        raise SdkConfigError(f"[device] state must be linux or always, got {kind!r}")
    config = DeviceConfig(
        data_dir=data_dir,
        coordinator_url=d["coordinator_url"],
        task_id=d.get("task_id"),
        ca_file=Path(d["ca_file"]) if d.get("ca_file") else None,
        mqtt_host=d.get("mqtt_host"),
        mqtt_port=d.get("mqtt_port"),
        mqtt_tls=d.get("mqtt_tls"),
        mqtt_protocol=int(d.get("mqtt_protocol", 5)),
        policy=_policy(data.get("policy", {})),
        poll_s=float(d.get("poll_s", 15.0)),
    )
    # Opened once the configuration is known good, so that a bad one leaves nothing open.
    data_dir.mkdir(parents=True, exist_ok=True)
    store = ExampleStore(data_dir / "examples.sqlite3", x_shape=tuple(shape), x_dtype=np.float32)
    npz = data.get("data", {}).get("import_npz")
    if npz:
        with np.load(npz) as arrays:
            store.extend(list(arrays["x"].astype(np.float32)), list(arrays["y"]))
    return Device(config, store=store, device_state=state)


def run_device(args: argparse.Namespace) -> int:
    from fedrt.sdk.process_memory import limit_malloc_arenas

    # This process is the device: one malloc arena keeps the peak RSS down (see the module).
    limit_malloc_arenas()
    data = load_config(args.config)
    device = build_device(data)
    token = data["device"].get("enrollment_token") or os.environ.get("FEDRT_ENROLLMENT_TOKEN")
    device_id = device.enroll(token)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    device.start()
    print(json.dumps({"event": "started", "device_id": device_id}), flush=True)
    try:
        while not stop.wait(args.status_every):
            status = dataclasses.asdict(device.status())
            print(json.dumps({"event": "status", "at": time.time(), **status}), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
        device.store.close()
    print(json.dumps({"event": "stopped", "device_id": device_id}), flush=True)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("device", help="run this machine as a federated device")
    sub = parser.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="enroll (first time) and take part in rounds until stopped")
    run.add_argument("--config", type=Path, required=True, help="device.toml")
    run.add_argument("--status-every", type=float, default=30.0, help="seconds between status")
    run.set_defaults(run=run_device)
