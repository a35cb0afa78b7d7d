"""A stand-in for ``fedrt export`` output: a valid manifest and a file with TFLite's header."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fedrt.model_export.manifest import Manifest, SignatureSpec, TensorSpec


def tflite_bytes(seed: int = 0, size: int = 4096) -> bytes:
    # Flatbuffer root offset, then the "TFL3" file identifier the coordinator checks.
    body = hashlib.shake_256(seed.to_bytes(8, "little")).digest(size - 8)
    return b"\x1c\x00\x00\x00TFL3" + body


def manifest_for(data: bytes) -> Manifest:
    w = (TensorSpec(name="w0", shape=(4, 2), dtype="float32"),)
    x = TensorSpec(name="x", shape=(8, 4), dtype="float32")
    sig = {
        "train": SignatureSpec(name="train", inputs=(x,), outputs=()),
        "evaluate": SignatureSpec(name="evaluate", inputs=(x,), outputs=()),
        "infer": SignatureSpec(name="infer", inputs=(x,), outputs=()),
        "get_weights": SignatureSpec(name="get_weights", inputs=(), outputs=w),
        "set_weights": SignatureSpec(name="set_weights", inputs=w, outputs=()),
    }
    return Manifest(
        fedrt_version="0.1.0",
        tensorflow_version="2.21.0",
        model_file="model.tflite",
        sha256=hashlib.sha256(data).hexdigest(),
        model_bytes=len(data),
        loss="sparse_ce",
        batch_size=8,
        input=TensorSpec(name="x", shape=(4,), dtype="float32"),
        output=TensorSpec(name="logits", shape=(2,), dtype="float32"),
        weights=w,
        signatures=sig,
    )


def write_export(directory: Path, seed: int = 0, size: int = 4096) -> Manifest:
    """Write ``model.tflite`` + ``manifest.json`` into ``directory``; return the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    data = tflite_bytes(seed, size)
    (directory / "model.tflite").write_bytes(data)
    manifest = manifest_for(data)
    manifest.write(directory)
    return manifest
