"""Exporter: options, manifest contents, read_weights, the optional int8 inference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedrt
from fedrt.model_export import (
    READ_WEIGHTS,
    ExportOptions,
    LiteRTModel,
    TensorSpec,
    UnsupportedModel,
    file_sha256,
)
from tests.model_export.conftest import (
    Exported,
    batches_for,
    constant_bytes,
    max_weight_diff,
    signature_graphs,
)


def test_manifest_records_versions_and_options(zoo_cnn: Exported) -> None:
    import tensorflow as tf

    manifest = zoo_cnn.manifest
    assert manifest.fedrt_version == fedrt.__version__
    assert manifest.tensorflow_version == tf.__version__
    assert manifest.input.shape == (8, 8, 1)
    assert manifest.output.shape == (10,)
    assert manifest.options == {
        "dropout": False,
        "fedprox": False,
        "momentum": False,
        "scaffold": False,
    }
    assert manifest.num_params == zoo_cnn.keras_model.count_params()
    assert manifest.model_bytes == (zoo_cnn.directory / "model.tflite").stat().st_size


@pytest.mark.parametrize("name", ["zoo_mlp", "zoo_cnn"])
def test_read_weights_returns_what_get_weights_does_after_training(
    name: str, request: pytest.FixtureRequest
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    exported: Exported = request.getfixturevalue(name)
    manifest = exported.manifest
    read_spec, get_spec = manifest.signature(READ_WEIGHTS), manifest.signature("get_weights")
    assert read_spec.inputs == (TensorSpec(name="unused", shape=(1,), dtype="float32"),)
    assert read_spec.outputs == get_spec.outputs
    # One interpreter, so both signatures see the same resource variables.
    interpreter = Interpreter(model_path=str(exported.directory / "model.tflite"))
    train = interpreter.get_signature_runner("train")
    get_weights = interpreter.get_signature_runner("get_weights")
    read_weights = interpreter.get_signature_runner(READ_WEIGHTS)
    for x, y in batches_for(manifest, seed=3, steps=3):
        train(x=x, y=y, lr=np.array([0.1], np.float32))
    expected = get_weights()
    assert max_weight_diff(expected, exported.initial) > 1e-4  # the steps changed the weights
    for unused in (0.0, -7.5):  # the input is ignored
        got = read_weights(unused=np.array([unused], np.float32))
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype == np.float32
            assert np.array_equal(got[key], value)


def test_read_weights_reads_the_variables_and_holds_no_copy_of_them(zoo_cnn: Exported) -> None:
    from ai_edge_litert import schema_py_generated as schema

    model, graphs = signature_graphs(zoo_cnn.directory / "model.tflite")

    def op_codes(graph: object) -> set[int]:
        codes = model.operatorCodes
        return {codes[op.opcodeIndex].builtinCode for op in graph.operators}  # type: ignore[attr-defined]

    ops = schema.BuiltinOperator
    assert op_codes(graphs[READ_WEIGHTS]) == {ops.CALL_ONCE, ops.VAR_HANDLE, ops.READ_VARIABLE}
    assert op_codes(graphs[READ_WEIGHTS]) == op_codes(graphs["get_weights"])
    assert constant_bytes(model, graphs[READ_WEIGHTS]) == 0
    assert constant_bytes(model, graphs["get_weights"]) == 0


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
