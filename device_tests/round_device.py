"""``python -m device_tests.round_device``: one device process through real rounds, measured.

Enrolls with a coordinator, takes part in ``--rounds`` rounds with ``fedrt.sdk.Device``
(eligibility forced on) and writes a JSON report: this process's peak RSS (``VmHWM``:
interpreter, imports, model, SecAgg+), bytes up and down, and the wall time. Its examples
are the mlp fixture's (default) or random ones of ``--input-shape``/``--dtype``/``--classes``.

``--record FILE`` saves, per round, the vector this device handed to SecAgg+ (its clipped,
weighted, quantized update: exactly what the coordinator's unmasked sum adds up) with the
delta it came from and the update spec, so a test can check the coordinator's sum across
processes of different architectures. It observes ``round_update.encode`` without changing
its result. Used by ``tests/device_tests/test_mixed_round.py`` (an emulated aarch64 device
among host devices) and ``fedrt bench device`` (``fedrt.benchmarks.device_round``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_tests.fixture_specs import FIXTURES, MLP
from fedrt.benchmarks.rss import peak_rss_mib


def _examples(args: argparse.Namespace) -> tuple[npt.NDArray[Any], npt.NDArray[np.int32]]:
    if args.input_shape is None:
        kat = np.load(FIXTURES / "mlp" / "kat.npz")
        return kat["x"].reshape(-1, *MLP.input_shape), kat["y"].reshape(-1).astype(np.int32)
    # Made with the protocol's PRG, not numpy.random: an app's examples come from its own
    # data, and loading numpy.random here (1.9 MiB) would count against the device's RSS.
    from fedrt.protocol.prg import expand

    shape = (args.examples, *args.input_shape)
    size = int(np.prod(shape))
    words = expand(hashlib.sha256(b"round_device/%d" % args.seed).digest(), size + args.examples)
    if args.dtype == "int32":
        x: npt.NDArray[Any] = (words[:size] % args.classes).astype(np.int32).reshape(shape)
    else:  # uniform on [-1, 1)
        x = (words[:size] / np.float32(2**31) - 1).astype(np.float32).reshape(shape)
    return x, (words[size:] % args.classes).astype(np.int32)


def _record_updates(path: Path, records: list[dict[str, Any]]) -> None:
    """Save every SecAgg+ input vector this process encodes (see the module docstring)."""
    from fedrt.protocol import round_update

    encode = round_update.encode

    def recording(
        delta: Any, n_examples: int, spec: Any, rng: Any, *, weighted: bool = True
    ) -> Any:
        vector = encode(delta, n_examples, spec, rng, weighted=weighted)
        fields = {**dataclasses.asdict(spec), "rotation_seed": spec.rotation_seed.hex()}
        records.append({"vector": np.asarray(vector).copy(), "delta": np.asarray(delta).copy(),
                        "n_examples": n_examples, "weighted": weighted,
                        "spec": json.dumps(fields)})  # fmt: skip
        arrays = {f"{k}_{i}": r[k] for i, r in enumerate(records) for k in r}
        np.savez(path, rounds=len(records), **arrays)
        return vector

    round_update.encode = recording


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fedrt.sdk.device import Device, DeviceConfig
    from fedrt.sdk.example_store import ExampleStore, Retention
    from fedrt.sdk.process_memory import limit_malloc_arenas
    from fedrt.sdk.scheduler import SchedulerConfig
    from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
    from fedrt.simulation.timings import PARTICIPANT_TIMINGS  # retry in seconds, not minutes

    limit_malloc_arenas()  # as ``fedrt device run`` does: this process is a device
    records: list[dict[str, Any]] = []
    if args.record:
        _record_updates(args.record, records)
    rss_imported = peak_rss_mib()
    with tempfile.TemporaryDirectory(prefix="fedrt-round-device-") as tmp:
        data_dir = Path(tmp)
        x, y = _examples(args)
        store = ExampleStore(data_dir / "examples.sqlite3", x_shape=x.shape[1:], x_dtype=x.dtype,
                             retention=Retention(max_examples=max(1000, len(x))))  # fmt: skip
        store.extend(list(x), list(y))
        config = DeviceConfig(
            data_dir=data_dir,
            coordinator_url=args.coordinator,
            task_id=args.task,
            poll_s=0.5,
            scheduler=SchedulerConfig(wait_poll_s=0.5),
            participant=dict(PARTICIPANT_TIMINGS),
        )
        state = ScriptedDeviceState([(0.0, idle_plugged_in())])
        device = Device(config, store=store, device_state=state)
        start = time.monotonic()
        device_id = device.enroll(args.token)
        device.start()
        if args.ready:
            args.ready.write_text(device_id)
        try:
            deadline = start + args.timeout
            status = device.status()
            while status.rounds_completed < args.rounds and time.monotonic() < deadline:
                time.sleep(0.2)
                status = device.status()
        finally:
            device.stop()
            store.close()
            # The versions it holds: a file is kept only once it hashed to its signed sha256
            # (its name), whether it was downloaded whole or rebuilt from graph and deltas.
            held = sorted(p.stem for p in (data_dir / "models").glob("*.tflite"))
    return {
        "device_id": device_id,
        "machine": _machine(),
        "rounds_completed": status.rounds_completed,
        "bytes_up": status.bytes_up,
        "bytes_down": status.bytes_down,
        "bytes_down_by_kind": status.bytes_down_by_kind or {},
        "models_held": held,
        "seconds": round(time.monotonic() - start, 2),
        "peak_rss_mib_after_import": round(rss_imported, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "updates_recorded": len(records),
        "last_detail": status.last_detail,
    }


def _machine() -> str:
    import platform

    return platform.machine()


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m device_tests.round_device",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--coordinator", required=True, metavar="URL")
    parser.add_argument("--token", required=True)
    parser.add_argument("--task", help="task id (default: the first task announced)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--json", type=Path, metavar="REPORT", help="write the report here")
    parser.add_argument("--record", type=Path, metavar="NPZ", help="record SecAgg+ inputs")
    parser.add_argument("--ready", type=Path, metavar="FILE", help="write the device id here "
                        "once enrolled and started")  # fmt: skip
    parser.add_argument("--input-shape", type=_shape, help="random examples of this shape")
    parser.add_argument("--dtype", choices=("float32", "int32"), default="float32")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-level", default="WARNING")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    report = run(args)
    text = json.dumps(report, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n")
    print(text, flush=True)
    return 0 if report["rounds_completed"] >= args.rounds else 1


if __name__ == "__main__":
    raise SystemExit(main())
