"""What one example is, read from a manifest's train signature; .npz files checked against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.model_export.manifest import Manifest
from fedrt.sdk.errors import ExampleStoreError, SdkConfigError
from fedrt.sdk.example_schema import ExampleSchema, read_npz

MLP = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"


def _manifest(x: dict[str, Any], y: dict[str, Any]) -> Manifest:
    """The mlp fixture's manifest with its train inputs x and y replaced."""
    data = json.loads((MLP / "manifest.json").read_text())
    inputs = data["signatures"]["train"]["inputs"]
    data["signatures"]["train"]["inputs"] = [t for t in inputs if t["name"] not in "xy"] + [
        {"name": "x", **x}, {"name": "y", **y}
    ]  # fmt: skip
    return Manifest.from_dict(data)


def test_the_train_signature_decides() -> None:
    assert ExampleSchema.from_manifest_file(MLP) == ExampleSchema(x_shape=(12,))
    tokens = _manifest({"shape": [8, 20], "dtype": "int32"}, {"shape": [8], "dtype": "int32"})
    assert ExampleSchema.from_manifest(tokens).describe() == "x int32[20], y int32[]"
    binary = _manifest({"shape": [8, 4], "dtype": "float32"}, {"shape": [8, 1], "dtype": "float32"})
    assert ExampleSchema.from_manifest(binary).describe() == "x float32[4], y float32[1]"
    for bad, message in [
        ({"shape": [8, -1], "dtype": "float32"}, "static example dimensions"),
        ({"shape": [], "dtype": "float32"}, "a batch axis"),
        ({"shape": [8, 3], "dtype": "string"}, "not storable"),
    ]:
        with pytest.raises(SdkConfigError, match=message):
            ExampleSchema.from_manifest(_manifest(bad, {"shape": [8], "dtype": "int32"}))
    with pytest.raises(SdkConfigError, match="cannot read manifest"):
        ExampleSchema.from_manifest_file(MLP / "nope.json")


def test_schema_values_are_checked() -> None:
    with pytest.raises(SdkConfigError, match="x_dtype must be one of"):
        ExampleSchema(x_shape=(3,), x_dtype="complex64")
    with pytest.raises(SdkConfigError, match="at least one dimension"):
        ExampleSchema(x_shape=())
    with pytest.raises(SdkConfigError, match="y_shape must be a list of positive"):
        ExampleSchema(x_shape=(3,), y_shape=(-1,))


def test_the_store_holds_tokens_and_float_targets(tmp_path: Path) -> None:
    schema = ExampleSchema(x_shape=(5,), x_dtype="int32", y_shape=(2,), y_dtype="float32")
    x, y = schema.check_arrays(np.arange(15).reshape(3, 5), np.ones((3, 2)), "arrays")
    assert (x.dtype, y.dtype) == (np.int32, np.float32)
    with schema.open_store(tmp_path / "s.sqlite3") as store:
        store.extend(list(x), list(y))
        batch = store.batch(3)
    np.testing.assert_array_equal(batch.x, np.arange(15).reshape(3, 5))
    assert batch.y.shape == (3, 2)


def test_read_npz_says_what_is_wrong(tmp_path: Path) -> None:
    schema = ExampleSchema(x_shape=(4,), x_dtype="int32")
    path = tmp_path / "a.npz"
    for arrays, message in [
        ({"x": np.zeros((2, 4), np.int32)}, "no array y"),
        ({"x": np.zeros((2, 4), np.int32), "y": np.zeros(3, np.int32)}, "2 examples in x but 3"),
        ({"x": np.zeros(4, np.int32), "y": np.zeros(1)}, "x holds examples of int32[]"),
        ({"x": np.zeros((2, 4)), "y": np.zeros(2)}, "x is float64, the model takes x int32[4]"),
        ({"x": np.full((2, 4), 2**40), "y": np.zeros(2, np.int32)}, "outside the range of int32"),
        ({"x": np.zeros((2, 4), np.int32), "y": np.array([0.5, 1])}, "y is float64"),
    ]:
        np.savez(path, **arrays)
        with pytest.raises(ExampleStoreError, match=message.replace("[", r"\[")):
            read_npz(path, schema)
    np.savez(path, x=np.array([[1, 2, 3, 4]], dtype=object), y=np.zeros(1, np.int32))
    with pytest.raises(ExampleStoreError, match="cannot read"):
        read_npz(path, schema)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ExampleStoreError, match=r"not an \.npz"):
        read_npz(tmp_path / "a.npy", schema)
    np.savez(path, x=np.arange(8).reshape(2, 4), y=np.array([1, 2], np.uint8))
    x, y = read_npz(path, schema)  # int64 tokens that fit become int32, uint8 labels int32
    assert (x.dtype, y.dtype, x.tolist()) == (np.int32, np.int32, [[0, 1, 2, 3], [4, 5, 6, 7]])
