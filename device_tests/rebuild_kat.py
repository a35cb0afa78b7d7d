"""Model rebuild: version deltas applied and files rebuilt from the graph, bit for bit.

A device rebuilds each version the coordinator signs from the architecture's graph and its
weights, or from the version it holds plus quantized deltas (``protocol.weights_delta``).
The sha256s of every step are pinned (``fixtures/rebuild_kat.json``, written on x86_64 by
``python -m device_tests.rebuild_kat --write``): any platform must reproduce them exactly.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from typing import Any

import numpy as np

from device_tests.fixture_specs import FIXTURES
from device_tests.report import CheckFailed
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import (
    flat_weights,
    replace_weights,
    strip_weights,
    unflatten,
)
from fedrt.model_export.weights_layout import weight_layout
from fedrt.protocol.weights_delta import apply_delta, encode_delta, weights_sha256

KAT = FIXTURES / "rebuild_kat.json"
# (bits, scale of the step): a chain of three versions, one at a wider width.
STEPS = ((8, 0.01), (8, 0.003), (12, 0.02))


def _model(name: str) -> tuple[bytes, Manifest]:
    manifest = Manifest.load(FIXTURES / name)
    path = FIXTURES / name / "model.tflite"
    data = (
        path.read_bytes()
        if path.exists()
        else gzip.decompress(path.with_suffix(".tflite.gz").read_bytes())
    )
    return data, manifest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chain(name: str) -> dict[str, Any]:
    """Graph, then three versions: the coordinator's encoding, a device's rebuild of each."""
    data, manifest = _model(name)
    graph = strip_weights(data, manifest)
    weights = flat_weights(data, manifest)
    # Exact in float32 on every platform: small integers times a power-of-two-free scale
    # are rounded once, element-wise.
    pattern = (np.arange(weights.size) % 7 - 3).astype(np.float32)
    steps = []
    for i, (bits, scale) in enumerate(STEPS):
        target = weights + pattern * np.float32(scale)
        encoded = encode_delta(weights, target, bits=bits, seed=bytes([i]) * 32)
        rebuilt = apply_delta(weights, encoded.blob)
        if not np.array_equal(rebuilt, encoded.result):
            raise CheckFailed(f"{name}: step {i} rebuilds other weights than it encoded")
        weights = rebuilt
        file = replace_weights(graph, manifest, unflatten(weights, manifest))
        if strip_weights(file, manifest) != graph:
            raise CheckFailed(f"{name}: a rebuilt version does not strip back to its graph")
        # Devices splice weights into the graph's layout instead of repacking the file.
        layout = weight_layout(graph, manifest)
        if layout is None or layout.build(weights) != file:
            raise CheckFailed(f"{name}: a spliced version differs from the repacked one")
        step = {"bits": bits, "delta_sha256": _sha(encoded.blob)}
        step.update(weights_sha256=weights_sha256(weights), file_sha256=_sha(file))
        steps.append(step)
    return {"params": int(weights.size), "graph_sha256": _sha(graph), "steps": steps}


def model_rebuild() -> dict[str, Any]:
    pinned = json.loads(KAT.read_text())
    detail: dict[str, Any] = {}
    for name, want in pinned.items():
        got = chain(name)
        if got != want:
            raise CheckFailed(f"{name}: rebuilt versions differ from the pinned ones",
                              got=got, pinned=want)  # fmt: skip
        detail[name] = f"{len(got['steps'])} versions of {got['params']} weights"
    return detail


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        KAT.write_text(json.dumps({n: chain(n) for n in ("mlp", "cnn")}, indent=1) + "\n")
    print(json.dumps(model_rebuild()))
