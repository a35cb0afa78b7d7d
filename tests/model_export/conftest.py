"""Shared exports and the TensorFlow-autodiff reference for the model_export tests.

Conversions take seconds each, so every exported model is built once per session here and
shared. TensorFlow and Keras are imported lazily inside the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedrt.model_export import LiteRTModel, Manifest

# TensorFlow/Keras raise these while importing or saving (third-party code, not ours).
TF_WARNINGS = [
    "ignore::DeprecationWarning:tensorflow.*",
    "ignore::DeprecationWarning:keras.*",
    "ignore::DeprecationWarning:tf_keras.*",
    "ignore::DeprecationWarning:google.protobuf.*",
    "ignore::DeprecationWarning:flatbuffers.*",
    "ignore:.*is a deprecated alias.*:DeprecationWarning",
    "ignore:.*np.object.*:FutureWarning",
    "ignore::UserWarning:tensorflow.*",
    "ignore::UserWarning:keras.*",
]
STEPS = 10
LR = 0.1
TOLERANCE = 1e-5


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            for spec in TF_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@dataclass
class Exported:
    """One exported model, the Keras model it came from and its directory."""

    keras_model: Any
    directory: Path
    manifest: Manifest
    initial: dict[str, npt.NDArray[np.float32]]

    def open(self) -> LiteRTModel:
        model = LiteRTModel.open(self.directory)
        model.set_weights(self.initial)
        return model


def export(factory: Callable[[], Any], directory: Path, **options: Any) -> Exported:
    from fedrt.model_export import ExportOptions, export_model
    from fedrt.model_export.keras_plan import plan_model

    model = factory()
    opts = ExportOptions(**options)
    manifest = export_model(model, directory, opts)
    initial = {w.name: w.value.copy() for w in plan_model(model, opts.loss).weights}
    return Exported(keras_model=model, directory=directory, manifest=manifest, initial=initial)


def keras_weights(model: Any) -> dict[str, npt.NDArray[np.float32]]:
    """The Keras model's current weights under their manifest names."""
    from fedrt.model_export.keras_plan import weight_name

    out = {}
    for layer in model.layers:
        for weight in layer.weights:
            out[weight_name(layer, weight)] = np.asarray(weight.numpy(), np.float32)
    return out


def keras_sgd(model: Any, batches: list[tuple[Any, Any]], loss: Any, lr: float = LR) -> list[float]:
    """Plain SGD steps by TensorFlow autodiff on the Keras model itself (the reference)."""
    import tensorflow as tf

    losses = []
    for x, y in batches:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        for var, grad in zip(model.trainable_variables, grads, strict=True):
            var.assign_sub(lr * tf.convert_to_tensor(grad))  # embeddings get IndexedSlices
        losses.append(float(value))
    return losses


def litert_sgd(model: LiteRTModel, batches: list[tuple[Any, Any]], lr: float = LR) -> list[float]:
    return [model.train(x, y, lr) for x, y in batches]


def max_weight_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def batches_for(
    manifest: Manifest, seed: int, steps: int = STEPS, vocab: int | None = None
) -> list[tuple[Any, Any]]:
    """Random batches fitting the train signature (labels as the loss wants them)."""
    rng = np.random.default_rng(seed)
    x_spec = manifest.signature("train").input("x")
    y_spec = manifest.signature("train").input("y")
    assert x_spec is not None
    assert y_spec is not None
    out = []
    classes = manifest.output.shape[-1]
    for _ in range(steps):
        if x_spec.dtype == "int32":
            x = rng.integers(0, vocab or 2, size=x_spec.shape).astype(np.int32)
        else:
            x = rng.normal(size=x_spec.shape).astype(np.float32)
        if manifest.loss == "sparse_ce":
            y = rng.integers(0, classes, size=y_spec.shape).astype(np.int32)
        elif manifest.loss == "binary_ce":
            y = rng.integers(0, 2, size=y_spec.shape).astype(np.float32)
        else:
            y = rng.normal(size=y_spec.shape).astype(np.float32)
        out.append((x, y))
    return out


@pytest.fixture(scope="session")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def zoo_mlp(export_root: Path) -> Exported:
    from fedrt.model_export import zoo

    return export(lambda: zoo.mlp((12,), 4, hidden=16), export_root / "mlp", batch_size=8)


@pytest.fixture(scope="session")
def zoo_cnn(export_root: Path) -> Exported:
    """The digits-sized CNN (8x8x1, 10 classes, batch 32), also used for the digits test."""
    from fedrt.model_export import zoo

    return export(
        lambda: zoo.cnn((8, 8, 1), 10), export_root / "cnn", batch_size=32, int8_infer=True
    )


@pytest.fixture(scope="session")
def zoo_lstm_lm(export_root: Path) -> Exported:
    from fedrt.model_export import zoo

    return export(
        lambda: zoo.lstm_lm((6,), 20, embed=8, units=12), export_root / "lstm_lm", batch_size=4
    )


@pytest.fixture(scope="session")
def zoo_gru_lm(export_root: Path) -> Exported:
    from fedrt.model_export import zoo

    return export(
        lambda: zoo.gru_lm((6,), 20, embed=8, units=12), export_root / "gru_lm", batch_size=4
    )


def signature_graphs(path: Path) -> tuple[Any, dict[str, Any]]:
    """The model's object tree (LiteRT's schema) and each signature's subgraph."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    graphs = {sig.signatureKey.decode(): model.subgraphs[sig.subgraphIndex]
              for sig in model.signatureDefs}  # fmt: skip
    return model, graphs


def constant_bytes(model: Any, graph: Any) -> int:
    """Bytes of constant data the subgraph's tensors hold in the file."""
    buffers = (model.buffers[t.buffer].data for t in graph.tensors)
    return sum(len(data) for data in buffers if data is not None)
