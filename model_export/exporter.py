"""Exports a Keras model to model.tflite + manifest.json with builtin-only training signatures.

Imports tensorflow; ``fedrt.model_export`` loads this module only when an export is asked for.
Stable API: ``export_model(keras_model, out_dir, ExportOptions(batch_size=32,
loss="sparse_ce", fedprox=False, momentum=False, scaffold=False, int8_infer=False,
source="")) -> Manifest``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrt import __version__
from fedrt.model_export.errors import ConversionError, UnsupportedModel
from fedrt.model_export.inspect import ModelReport, inspect_model
from fedrt.model_export.keras_plan import Plan, plan_model
from fedrt.model_export.manifest import (
    EXPORTED_SIGNATURES,
    LOSSES,
    Manifest,
    SignatureSpec,
    TensorSpec,
    file_sha256,
)

MODEL_FILE = "model.tflite"
INT8_FILE = "infer_int8.tflite"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportOptions:
    """How to build the training graph; defaults fit a first FedAvg task."""

    batch_size: int = 32
    loss: str = "sparse_ce"
    # FedProx adds a `mu` input to train and keeps the round's starting weights.
    fedprox: bool = False
    # Momentum adds a `momentum` input to train and a velocity variable per weight.
    momentum: bool = False
    # SCAFFOLD adds a flat `correction` input (c - c_i) to train, added to the gradient.
    scaffold: bool = False
    # Also write a separate inference-only model with int8 weights.
    int8_infer: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise UnsupportedModel(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if not 1 <= self.batch_size <= 65536:
            raise UnsupportedModel(f"batch size {self.batch_size} must be in 1..65536")


@contextlib.contextmanager
def _quiet_tf() -> Iterator[None]:
    # The converter logs pages of MLIR notes per export; keep only errors.
    previous = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    absl = logging.getLogger("absl")
    absl_level = absl.level
    # SavedModel import warns about the custom gradients we chose not to save.
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(absl_level)
        if previous is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = previous


def output_shape(plan: Plan) -> tuple[int, ...]:
    """Per-example output shape of the plan's forward pass, traced on a batch of one."""
    import tensorflow as tf

    from fedrt.model_export.training_graph import Forward

    dtype = tf.int32 if plan.input_dtype == "int32" else tf.float32
    spec = tf.TensorSpec([1, *plan.input_shape], dtype)
    params = [tf.constant(w.value) for w in plan.weights]
    forward = Forward(plan)
    concrete = tf.function(lambda x: forward(params, x, training=False, native=True))
    traced = concrete.get_concrete_function(spec)
    return tuple(int(d) for d in traced.structured_outputs.shape[1:])


def _check_loss(loss: str, out_shape: tuple[int, ...]) -> None:
    if not out_shape:
        raise UnsupportedModel("the model output needs at least one axis per example")
    if loss == "sparse_ce" and out_shape[-1] < 2:
        raise UnsupportedModel("sparse_ce needs at least 2 output units (class logits)")


def _convert(module: Any, signatures: dict[str, Any]) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="fedrt-export-") as tmp:
        # Gradients are already inside the train graph; re-tracing the custom gradients
        # for the SavedModel would fail on infer's dynamic batch and is not needed.
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        tf.saved_model.save(module, tmp, signatures=signatures, options=options)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises bare Exception subclasses
            raise ConversionError(f"TFLite conversion failed: {exc}") from exc


def _vet(data: bytes) -> ModelReport:
    report = inspect_model(data)
    if not report.ok:
        raise ConversionError("; ".join(report.problems))
    report.require_signatures(EXPORTED_SIGNATURES)
    return report


def _int8_infer(plan: Plan, out_dir: Path) -> dict[str, str]:
    """A frozen inference-only model with int8 weights (dynamic-range quantization)."""
    import tensorflow as tf

    from fedrt.model_export.training_graph import Forward

    dtype = tf.int32 if plan.input_dtype == "int32" else tf.float32
    params = [tf.constant(w.value) for w in plan.weights]
    forward = Forward(plan)

    module = tf.Module()
    module.infer = tf.function(
        lambda x: {"logits": forward(params, x, training=False, native=True)},
        input_signature=[tf.TensorSpec([None, *plan.input_shape], dtype)],
    )
    with tempfile.TemporaryDirectory(prefix="fedrt-int8-") as tmp:
        tf.saved_model.save(module, tmp, signatures={"infer": module.infer.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["infer"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            data = bytes(converter.convert())
        except Exception as exc:
            raise ConversionError(f"int8 inference conversion failed: {exc}") from exc
    report = inspect_model(data)
    if report.flex_ops or report.custom_ops:
        raise ConversionError("; ".join(report.problems))
    target = out_dir / INT8_FILE
    target.write_bytes(data)
    return {"file": INT8_FILE, "sha256": file_sha256(target)}


def _signature_specs(report: ModelReport) -> dict[str, SignatureSpec]:
    return {
        name: SignatureSpec(name=name, inputs=info.inputs, outputs=info.outputs)
        for name, info in report.signatures.items()
    }


def build_module(plan: Plan, options: ExportOptions, *, native: bool = False) -> Any:
    """The TrainingModule for ``plan`` (``native`` = TensorFlow's own gradients, for tests)."""
    from fedrt.model_export.training_graph import TrainingModule

    out_shape = output_shape(plan)
    _check_loss(options.loss, out_shape)
    return TrainingModule(
        plan,
        batch_size=options.batch_size,
        loss=options.loss,
        output_shape=out_shape,
        fedprox=options.fedprox,
        momentum=options.momentum,
        scaffold=options.scaffold,
        native=native,
    )


def export_model(model: Any, out_dir: str | Path, options: ExportOptions | None = None) -> Manifest:
    """Export a built Keras model; write model.tflite and manifest.json into ``out_dir``."""
    import tensorflow as tf

    opts = options or ExportOptions()
    plan = plan_model(model, opts.loss)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_tf():
        module = build_module(plan, opts)
        data = _convert(module, module.signatures())
        report = _vet(data)
        int8 = _int8_infer(plan, out) if opts.int8_infer else None
    target = out / MODEL_FILE
    target.write_bytes(data)
    out_shape = output_shape(plan)
    manifest = Manifest(
        fedrt_version=__version__,
        tensorflow_version=str(tf.__version__),
        model_file=MODEL_FILE,
        sha256=file_sha256(target),
        model_bytes=len(data),
        loss=opts.loss,
        batch_size=opts.batch_size,
        input=TensorSpec(name="x", shape=plan.input_shape, dtype=plan.input_dtype),
        output=TensorSpec(name="logits", shape=out_shape, dtype="float32"),
        weights=tuple(
            TensorSpec(name=w.name, shape=tuple(np.shape(w.value)), dtype="float32")
            for w in plan.weights
        ),
        signatures=_signature_specs(report),
        options={
            "fedprox": opts.fedprox,
            "momentum": opts.momentum,
            "scaffold": opts.scaffold,
            "dropout": plan.has_dropout,
        },
        int8_infer=int8,
        source=opts.source,
    )
    manifest.write(out)
    log.info("exported %s: %d params, %d bytes", out, manifest.num_params, len(data))
    return manifest
