"""``fedrt device run|add-examples``: a Linux device (a Raspberry Pi, say) taking part.

Both read a device.toml (``fedrt.sdk.device_file``; every key in docs/guide-raspberry-pi.md)::

    [device]
    data_dir = "/var/lib/fedrt"
    coordinator_url = "https://coordinator.example:8080"
    enrollment_token = "..."          # first start only; or FEDRT_ENROLLMENT_TOKEN

    [data]
    manifest = "/etc/fedrt/manifest.json"   # x/y dtypes and shapes from the train signature

``run`` enrolls (first time) and takes part in rounds until SIGTERM or Ctrl-C: logs go to
stderr, a JSON status line to stdout every ``--status-every`` seconds. ``add-examples`` appends
the x and y arrays of .npz files to the device's example store, also while ``run`` is running
(the store is SQLite in WAL mode; all the files are checked, then appended in one
transaction).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from fedrt.sdk.device_file import DeviceFile
from fedrt.sdk.errors import SdkConfigError

__all__ = ["build_device", "import_once", "load_config", "open_device", "register"]

# The sha256 of the last import_npz file appended, so a restart does not append it again.
_IMPORTED = "imported-npz.sha256"


def load_config(path: Path) -> dict[str, Any]:
    """The TOML of ``path``, every key checked (``DeviceFile.load`` gives it typed)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SdkConfigError(f"cannot read {path}: {exc}") from None
    DeviceFile.parse(data, str(path))
    return data


def build_device(data: dict[str, Any]) -> Any:
    """The ``Device`` a configuration's TOML describes (not started, maybe not enrolled)."""
    return open_device(DeviceFile.parse(data))


def import_once(file: DeviceFile, store: Any) -> int:
    """Append ``[data] import_npz`` unless this very content was appended before; the count."""
    from fedrt.sdk.example_schema import read_npz

    if file.import_npz is None:
        return 0
    try:
        digest = hashlib.sha256(file.import_npz.read_bytes()).hexdigest()
    except OSError as exc:
        raise SdkConfigError(f"[data] import_npz: cannot read {file.import_npz}: {exc}") from None
    marker = file.config.data_dir / _IMPORTED
    if marker.exists() and marker.read_text().strip() == digest:
        return 0
    x, y = read_npz(file.import_npz, file.schema)
    store.extend(list(x), list(y))
    marker.write_text(digest + "\n")
    return len(x)


def open_device(file: DeviceFile) -> Any:
    """The ``Device`` of a device.toml, its example store open (and import_npz appended)."""
    from fedrt.sdk.device import Device

    # Opened once the configuration is known good, so that a bad one leaves nothing open.
    store = file.open_store()
    try:
        import_once(file, store)
        return Device(file.config, store=store, device_state=file.device_state())
    except BaseException:
        store.close()
        raise


def run_device(args: argparse.Namespace) -> int:
    from fedrt.sdk.process_memory import limit_malloc_arenas

    # This process is the device: one malloc arena keeps the peak RSS down (docs/sdk.md).
    limit_malloc_arenas()
    file = DeviceFile.load(args.config)
    device = open_device(file)
    try:
        token = file.enrollment_token or os.environ.get("FEDRT_ENROLLMENT_TOKEN")
        device_id = device.enroll(token)
    except BaseException:
        device.store.close()
        raise
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    device.start()
    started = {"event": "started", "device_id": device_id, "examples": len(device.store),
               "schema": file.schema.describe()}  # fmt: skip
    print(json.dumps(started), flush=True)
    try:
        while not stop.wait(args.status_every):
            status = dataclasses.asdict(device.status())
            status["examples"] = len(device.store)
            print(json.dumps({"event": "status", "at": time.time(), **status}), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
        device.store.close()
    print(json.dumps({"event": "stopped", "device_id": device_id}), flush=True)
    return 0


def add_examples(args: argparse.Namespace) -> int:
    from fedrt.sdk.example_schema import read_npz

    file = DeviceFile.load(args.config)
    # Every file is read and checked first, then all are appended in one transaction: a bad
    # file, or a bad value in one, adds nothing.
    arrays = [(path, *read_npz(path, file.schema)) for path in args.files]
    with file.open_store() as store:
        store.extend([e for _, x, _ in arrays for e in x], [e for _, _, y in arrays for e in y])
        stored = len(store)
    for path, x, _ in arrays:
        print(json.dumps({"event": "added", "file": str(path), "examples": len(x)}), flush=True)
    print(json.dumps({"event": "stored", "examples": stored}), flush=True)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86400:  # a day: Event.wait refuses infinite timeouts
        raise argparse.ArgumentTypeError(f"must be seconds in (0, 86400], got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("device", help="run this machine as a federated device")
    sub = parser.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="enroll (first time) and take part in rounds until stopped")
    run.add_argument("--config", type=Path, required=True, help="device.toml")
    run.add_argument("--status-every", type=_seconds, default=30.0, help="seconds between status")
    run.set_defaults(run=run_device)
    add = sub.add_parser(
        "add-examples", help="append .npz examples (arrays x, y) to the device's example store"
    )
    add.add_argument("--config", type=Path, required=True, help="device.toml")
    add.add_argument("files", type=Path, nargs="+", metavar="FILE.npz")
    add.set_defaults(run=add_examples)
