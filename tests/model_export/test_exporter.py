"""Exporter: options, manifest contents, the optional int8 inference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedrt
from fedrt.model_export import ExportOptions, LiteRTModel, UnsupportedModel, file_sha256
from tests.model_export.conftest import Exported, batches_for


def test_manifest_records_versions_and_options(zoo_cnn: Exported) -> None:
    import tensorflow as tf

    manifest = zoo_cnn.manifest
    assert manifest.fedrt_version == fedrt.__version__
    assert manifest.tensorflow_version == tf.__version__
    assert manifest.input.shape == (8, 8, 1)
    assert manifest.output.shape == (10,)
    assert manifest.options == {"dropout": False, "fedprox": False, "momentum": False}
    assert manifest.num_params == zoo_cnn.keras_model.count_params()
    assert manifest.model_bytes == (zoo_cnn.directory / "model.tflite").stat().st_size


def test_int8_inference_model_agrees_with_the_float_model(zoo_cnn: Exported) -> None:
    info = zoo_cnn.manifest.int8_infer
    assert info is not None
    path = zoo_cnn.directory / info["file"]
    assert file_sha256(path) == info["sha256"]
    assert path.stat().st_size < zoo_cnn.manifest.model_bytes / 2

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    assert list(interpreter.get_signature_list()) == ["infer"]
    x = batches_for(zoo_cnn.manifest, seed=2, steps=1)[0][0]
    quantized = interpreter.get_signature_runner("infer")(x=x)["logits"]
    exact = LiteRTModel.open(zoo_cnn.directory).infer(x)
    assert quantized.shape == exact.shape
    scale = float(np.max(np.abs(exact)))
    assert float(np.max(np.abs(quantized - exact))) < 0.05 * scale


@pytest.mark.parametrize(
    ("options", "message"),
    [({"loss": "hinge"}, "hinge"), ({"batch_size": 0}, "batch size")],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(UnsupportedModel, match=message):
        ExportOptions(**options)  # type: ignore[arg-type]


def test_sparse_ce_needs_class_logits(tmp_path: Path) -> None:
    import keras

    from fedrt.model_export import export_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(UnsupportedModel, match="at least 2 output units"):
        export_model(model, tmp_path, ExportOptions(loss="sparse_ce"))
    assert not (tmp_path / "model.tflite").exists()
