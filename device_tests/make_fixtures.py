"""Regenerate device_tests/fixtures on a development host (needs tensorflow): run once, commit.

    .venv/bin/python -m device_tests.make_fixtures

Writes, all small enough to commit:
- ``mlp/``: a tiny zoo mlp exported for on-device training, and ``mlp/kat.npz`` with fixed
  data and what TensorFlow computes from the model's own starting weights: the loss of each
  of ``STEPS`` SGD steps, the weights after them, and evaluate/infer on the trained weights;
- ``cnn/``: the zoo cnn at the digits shape (8x8x1, 10 classes), exported with all-zero
  weights and gzipped (the device sets seeded random weights before timing it);
- ``secagg_kat.json``: a copy of the protocol's known-answer vectors;
- ``codec_kat.json``: the exact encodings of fixed SecAgg+ messages.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from device_tests import fixture_specs as fixtures

ROOT = Path(__file__).resolve().parents[1]
KAT_SOURCE = ROOT / "tests" / "protocol" / "data" / "secagg_kat.json"


def _export(model: Any, out: Path, batch: int) -> None:
    from fedrt.model_export.exporter import ExportOptions, export_model

    if out.exists():
        shutil.rmtree(out)
    export_model(model, out, ExportOptions(batch_size=batch, source="device_tests"))


def make_mlp() -> None:
    import tensorflow as tf

    from fedrt.model_export.exporter import ExportOptions, build_module
    from fedrt.model_export.keras_plan import plan_model
    from fedrt.model_export.zoo import mlp

    spec = fixtures.MLP
    model = mlp(spec.input_shape, spec.classes, hidden=spec.hidden, seed=0)
    out = fixtures.FIXTURES / "mlp"
    _export(model, out, spec.batch)

    rng = np.random.default_rng(20240611)
    steps = spec.steps
    x = rng.normal(size=(steps, spec.batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.classes, size=(steps, spec.batch)).astype(np.int32)
    # TensorFlow's own gradients (native=True), not the exported custom-gradient graph.
    module = build_module(plan_model(model, "sparse_ce"), ExportOptions(batch_size=spec.batch),
                          native=True)  # fmt: skip
    lr = tf.constant([spec.lr], tf.float32)
    losses = [float(module.train(x[i], y[i], lr)["loss"]) for i in range(steps)]
    weights = {k: v.numpy() for k, v in module.get_weights().items()}
    out_eval = module.evaluate(x[0], y[0])
    logits = module.infer(x[0])["logits"].numpy()
    np.savez(
        out / "kat.npz",
        x=x,
        y=y,
        losses=np.asarray(losses, np.float64),
        eval_loss=np.float64(out_eval["loss"]),
        eval_correct=np.int64(out_eval["correct"]),
        logits=logits,
        **{f"w_{k}": v for k, v in weights.items()},
    )


def make_cnn() -> None:
    from fedrt.model_export.zoo import cnn

    spec = fixtures.CNN
    model = cnn(spec.input_shape, spec.classes, seed=0)
    # Zero weights compress to nothing; the graph is what the timing needs.
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    with tempfile.TemporaryDirectory() as tmp:
        _export(model, Path(tmp) / "cnn", spec.batch)
        out = fixtures.FIXTURES / "cnn"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir()
        shutil.copy(Path(tmp) / "cnn" / "manifest.json", out / "manifest.json")
        data = (Path(tmp) / "cnn" / "model.tflite").read_bytes()
        # mtime=0: the same model gives the same committed bytes.
        (out / "model.tflite.gz").write_bytes(gzip.compress(data, 9, mtime=0))


def make_protocol() -> None:
    shutil.copy(KAT_SOURCE, fixtures.FIXTURES / "secagg_kat.json")
    from fedrt.protocol.codec import encode

    encodings = {name: encode(msg).hex() for name, msg in fixtures.codec_messages().items()}
    text = json.dumps({"format": "fedrt-codec-kat/1", "encodings": encodings}, indent=1)
    (fixtures.FIXTURES / "codec_kat.json").write_text(text + "\n")


def main() -> int:
    make_protocol()
    make_mlp()
    make_cnn()
    total = sum(p.stat().st_size for p in fixtures.FIXTURES.rglob("*") if p.is_file())
    print(f"fixtures written to {fixtures.FIXTURES}: {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
