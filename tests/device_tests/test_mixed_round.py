"""Mixed architectures aggregate exactly: an emulated aarch64 device and host devices, two rounds.

Every device is its own process (``python -m device_tests.round_device``): three on the host
and one on the emulated Raspberry Pi (``device_tests/emulate-pi``, qemu-aarch64). They enroll
with a real coordinator over a real Mosquitto on loopback and take part in the same SecAgg+
round. Each records the vector it handed to SecAgg+; the coordinator's unmasked sum must
equal the plain integer sum of those vectors, element for element, and each vector must be
its device's own clipped delta within one quantization step. In the second round every
device rebuilds the first round's version from the base it holds plus the version's
quantized delta (``protocol.weights_delta``), on both architectures, and keeps it only if
it hashes to the signed sha256. Slow (qemu): marked ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedrt.benchmarks.device_round import EMULATED_PI, HOST, device_logs, run_round
from fedrt.coordinator.tasks import TaskSpec
from fedrt.protocol import round_update
from fedrt.protocol.round_messages import UpdateSpec
from fedrt.simulation.stack import mosquitto_available
from tests.device_tests.test_emulate_pi import needs_emulation

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "device_tests" / "fixtures"
HOST_DEVICES = 3
# The emulated device starts Python, imports numpy/cryptography/LiteRT and runs SecAgg+
# under qemu; generous deadlines keep the round whole on a loaded machine.
ROUND_TIMEOUT_S = 600.0
ROUNDS = 2

pytestmark = [
    pytest.mark.slow,
    needs_emulation,
    pytest.mark.skipif(not mosquitto_available(), reason="needs mosquitto"),
]


def _records(path: Path) -> tuple[list[npt.NDArray[np.uint64]], list[dict[str, Any]]]:
    with np.load(path) as data:
        n = int(data["rounds"])
        rows = [{k: data[f"{k}_{i}"] for k in ("vector", "delta", "n_examples", "spec")}
                for i in range(n)]  # fmt: skip
    return [np.asarray(r["vector"], dtype=np.uint64) for r in rows], rows


def _spec(text: str) -> UpdateSpec:
    raw = json.loads(text)
    return UpdateSpec(**{**raw, "rotation_seed": bytes.fromhex(raw["rotation_seed"])})


@pytest.mark.timeout(1500)
def test_an_emulated_arm64_device_and_host_devices_sum_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The coordinator runs in this process: observe the sum it unmasks, unchanged.
    sums: list[npt.NDArray[np.uint64]] = []
    decode_sum = round_update.decode_sum

    def observed(total: Any, spec: UpdateSpec, n: int) -> Any:
        sums.append(np.asarray(total, dtype=np.uint64).copy())
        return decode_sum(total, spec, n)

    monkeypatch.setattr(round_update, "decode_sum", observed)
    n = HOST_DEVICES + 1
    spec = TaskSpec(goal_count=n, over_selection=1.0, min_reports=n, secagg=True,
                    checkin_deadline_s=120.0, training_deadline_s=300.0,
                    secagg_stage_deadline_s=180.0, batch_size=8, learning_rate=0.1,
                    clip_norm=10.0, eval_every=0, max_rounds=ROUNDS, download_bits=8)  # fmt: skip
    run = run_round(FIXTURES / "mlp", spec, [EMULATED_PI, *[HOST] * HOST_DEVICES], tmp_path,
                    device_args=["--rounds", str(ROUNDS)], record=True,
                    timeout_s=ROUND_TIMEOUT_S)  # fmt: skip
    outs = run.directories
    assert run.reports[0]["machine"] == "aarch64", device_logs(outs)
    assert all(r["machine"] != "aarch64" for r in run.reports[1:])
    assert len(run.committed) == ROUNDS, run.summaries
    assert all(c.metrics.included == n for c in run.committed)
    # Round 2 started from round 1's version: every device, aarch64 included, rebuilt it
    # from the base file it held and the version's delta (nothing else crossed the network
    # for it), and kept it: its file hashed to the signed sha256.
    version = run.committed[0].result_sha256
    assert version is not None
    for report in run.reports:
        kinds = report["bytes_down_by_kind"]
        assert kinds.get("delta", 0) > 0, report
        assert kinds.get("weights", 0) == 0, report
        assert kinds.get("graph", 0) == 0, report
        assert version in report["models_held"], report

    per_device = [_records(out / "updates.npz") for out in outs]
    assert len(sums) == ROUNDS
    for rnd, total in enumerate(list(sums)):
        vectors = [recorded[0][rnd] for recorded in per_device]
        rows = [recorded[1][rnd] for recorded in per_device]
        _check_round(total, vectors, rows, decode_sum)


def _check_round(
    total: npt.NDArray[np.uint64],
    vectors: list[npt.NDArray[np.uint64]],
    rows: list[dict[str, Any]],
    decode_sum: Any,
) -> None:
    plain = np.sum(vectors, axis=0, dtype=np.uint64)
    assert total.shape == plain.shape
    assert np.array_equal(total, plain)  # exact: the integer sum, no rounding anywhere
    # Each recorded vector is that device's own update: its clipped delta within one step.
    update = _spec(str(rows[0]["spec"]))
    for row, vector in zip(rows, vectors, strict=True):
        mean, weight = decode_sum(vector, update, 1)
        clipped = round_update.clip(np.asarray(row["delta"], dtype=np.float64), update.clip_norm)
        # One step per coordinate of the weighted vector, divided by the weight; L2 because
        # a rotated update spreads each coordinate's error over all of them.
        bound = round_update.step(update) / weight * np.sqrt(round_update.vector_length(update))
        assert np.linalg.norm(mean - clipped) <= bound
        assert np.linalg.norm(clipped) > 10 * bound  # the update is not lost in the rounding
