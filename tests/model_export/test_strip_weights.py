"""The graph of a model (its file without initial weights): canonical, and it rebuilds
versions that LiteRT runs exactly like the originals. Uses the committed device fixtures."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedrt.model_export import LiteRTModel
from fedrt.model_export.errors import ModelFileError
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights, replace_weights, strip_weights

FIXTURES = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures"


def _fixture(name: str) -> tuple[bytes, Manifest]:
    path = FIXTURES / name / "model.tflite"
    data = (
        path.read_bytes()
        if path.exists()
        else gzip.decompress((FIXTURES / name / "model.tflite.gz").read_bytes())
    )
    return data, Manifest.load(FIXTURES / name)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_every_version_strips_to_one_graph(name: str) -> None:
    data, manifest = _fixture(name)
    graph = strip_weights(data, manifest)
    assert len(graph) < len(data) - 4 * manifest.num_params + 4096  # the weights are gone
    assert strip_weights(graph, manifest) == graph
    rng = np.random.default_rng(1)
    for _ in range(3):
        new = [rng.normal(size=s.shape).astype(np.float32) for s in manifest.weights]
        version = replace_weights(graph, manifest, new)
        assert strip_weights(version, manifest) == graph
        # Rebuilding is a function of (graph, weights): the same bytes every time.
        assert replace_weights(graph, manifest, new) == version
        for got, want in zip(read_weights(version, manifest), new, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_version_rebuilt_from_the_graph_runs_like_the_original(name: str) -> None:
    data, manifest = _fixture(name)
    rebuilt = replace_weights(strip_weights(data, manifest), manifest, read_weights(data, manifest))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(manifest.batch_size, *manifest.input.shape)).astype(np.float32)
    y = rng.integers(0, manifest.output.shape[-1], size=manifest.batch_size).astype(np.int32)
    original, twin = LiteRTModel(data, manifest), LiteRTModel(rebuilt, manifest)
    np.testing.assert_array_equal(original.infer(x), twin.infer(x))
    assert original.train(x, y, 0.1) == twin.train(x, y, 0.1)
    for key, value in original.get_weights().items():
        np.testing.assert_array_equal(value, twin.get_weights()[key])


def test_foreign_bytes_are_refused() -> None:
    _, manifest = _fixture("mlp")
    with pytest.raises(ModelFileError):
        strip_weights(b"not a model at all", manifest)
