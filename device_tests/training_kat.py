"""Training checks: LiteRT reproduces TensorFlow's SGD steps; the zoo cnn's step time and RSS."""

from __future__ import annotations

import gzip
import hashlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from device_tests.fixture_specs import CNN, FIXTURES, MLP
from device_tests.report import CheckFailed
from fedrt.benchmarks.rss import peak_rss_mib
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest

# Float32 SGD from the same start through different kernels (TensorFlow's vs XNNPACK's
# reductions, the exported custom gradients vs autodiff): measured 3e-8 on x86_64 and
# a few ulps more elsewhere after 10 steps; a wrong op or layout is off by > 1e-2.
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5
CNN_WARMUP_STEPS = 3
CNN_STEPS = 30


def _interpreter_cls() -> Any:
    from fedrt.sdk.interpreter import resolve_interpreter

    return resolve_interpreter().interpreter_cls


def _cross_entropy(logits: npt.NDArray[np.float32], y: npt.NDArray[np.int32]) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def mlp_known_answer() -> dict[str, Any]:
    """``MLP.steps`` SGD steps on the committed batches give TensorFlow's weights."""
    kat = np.load(FIXTURES / "mlp" / "kat.npz")
    model = LiteRTModel.open(FIXTURES / "mlp", num_threads=1, interpreter_cls=_interpreter_cls())
    x, y = kat["x"], kat["y"]
    losses = np.asarray([model.train(x[i], y[i], MLP.lr) for i in range(MLP.steps)])
    loss_error = float(np.max(np.abs(losses - kat["losses"]) / np.abs(kat["losses"])))
    weights = model.get_weights()
    weight_error = max(float(np.max(np.abs(w - kat[f"w_{n}"]))) for n, w in weights.items())
    eval_loss, correct = model.evaluate(x[0], y[0])
    logits = model.infer(x[0])
    detail: dict[str, Any] = {
        "steps": MLP.steps,
        "first_loss": float(losses[0]),
        "last_loss": float(losses[-1]),
        "max_loss_rel_error": loss_error,
        "max_weight_error": weight_error,
        "max_logit_error": float(np.max(np.abs(logits - kat["logits"]))),
        "tolerance": {"weights_atol": WEIGHT_ATOL, "loss_rtol": LOSS_RTOL},
    }
    if loss_error > LOSS_RTOL or weight_error > WEIGHT_ATOL:
        raise CheckFailed("LiteRT training does not reproduce TensorFlow's", **detail)
    if detail["max_logit_error"] > WEIGHT_ATOL * 10:
        raise CheckFailed("infer differs from TensorFlow's logits", **detail)
    # evaluate and infer run different signatures on the same weights: they must agree.
    from_logits = _cross_entropy(logits, y[0])
    argmax_correct = int(np.sum(np.argmax(logits, axis=1) == y[0]))
    detail.update(eval_loss=eval_loss, eval_correct=correct, infer_loss=from_logits)
    if abs(eval_loss - from_logits) > 1e-5 * max(1.0, abs(from_logits)):
        raise CheckFailed("evaluate's loss disagrees with infer's logits", **detail)
    if correct != argmax_correct or correct != int(kat["eval_correct"]):
        raise CheckFailed("evaluate's correct count disagrees with infer", **detail)
    if abs(eval_loss - float(kat["eval_loss"])) > LOSS_RTOL * abs(float(kat["eval_loss"])):
        raise CheckFailed("evaluate differs from TensorFlow's", **detail)
    return detail


def _open_cnn() -> LiteRTModel:
    manifest = Manifest.load(FIXTURES / "cnn")
    data = gzip.decompress((FIXTURES / "cnn" / "model.tflite.gz").read_bytes())
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise CheckFailed("cnn fixture does not match its manifest's sha256")
    return LiteRTModel(data, manifest, num_threads=1, interpreter_cls=_interpreter_cls())


def cnn_step_time() -> dict[str, Any]:
    """Step time and peak RSS of a short training run of the digits cnn (one thread)."""
    rss_before = peak_rss_mib()
    model = _open_cnn()
    rng = np.random.default_rng(5)
    # The fixture's weights are zeros (they compress away); start from scaled noise.
    weights = {
        name: (rng.normal(size=shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[:-1]))))).astype(
            np.float32
        )
        for name, shape in ((n, model.input_shape("set_weights", n)) for n in model.weight_names)
    }
    model.set_weights(weights)
    batches = 4
    x = rng.random(size=(batches, CNN.batch, *CNN.input_shape)).astype(np.float32)
    y = rng.integers(0, CNN.classes, size=(batches, CNN.batch)).astype(np.int32)
    for i in range(CNN_WARMUP_STEPS):
        model.train(x[i % batches], y[i % batches], 0.05)
    times, losses = [], []
    for i in range(CNN_STEPS):
        start = time.perf_counter()
        losses.append(model.train(x[i % batches], y[i % batches], 0.05))
        times.append(time.perf_counter() - start)
    if not np.all(np.isfinite(losses)):
        raise CheckFailed("cnn training produced a non-finite loss", losses=losses)
    ms = np.asarray(times) * 1000
    return {
        "model": f"zoo cnn {'x'.join(map(str, CNN.input_shape))}, {CNN.classes} classes",
        "params": sum(int(np.prod(s.shape)) for s in model.manifest.weights)
        if model.manifest
        else None,
        "batch": CNN.batch,
        "steps": CNN_STEPS,
        "threads": 1,
        "step_ms_median": round(float(np.median(ms)), 3),
        "step_ms_p90": round(float(np.percentile(ms, 90)), 3),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
