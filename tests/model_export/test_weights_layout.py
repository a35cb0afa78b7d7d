"""Rebuilding a version by splicing its weights into the graph's layout: byte for byte what
``replace_weights`` writes, and a file of another layout is never misread."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.model_export.errors import ModelFileError
from fedrt.model_export.weights_file import flat_weights, replace_weights, strip_weights, unflatten
from fedrt.model_export.weights_layout import WeightLayout, stripped, weight_layout, weights_of
from tests.model_export.test_strip_weights import _fixture


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_spliced_version_is_the_repacked_one_and_reads_back(name: str) -> None:
    data, manifest = _fixture(name)
    graph = strip_weights(data, manifest)
    layout = WeightLayout(graph, manifest)
    rng = np.random.default_rng(3)
    for _ in range(3):
        flat = rng.normal(size=manifest.num_params).astype(np.float32)
        version = layout.build(flat)
        assert version == replace_weights(graph, manifest, unflatten(flat, manifest))
        read = layout.read(version)
        assert read is not None
        np.testing.assert_array_equal(read, flat)
        np.testing.assert_array_equal(read, flat_weights(version, manifest))


def test_files_of_another_layout_are_not_read() -> None:
    data, manifest = _fixture("mlp")
    graph = strip_weights(data, manifest)
    layout = weight_layout(graph, manifest)
    assert layout is not None
    assert layout.read(data) is None  # the converter's own file: laid out otherwise
    version = bytearray(layout.build(np.ones(manifest.num_params, np.float32)))
    version[12] ^= 0xFF  # one byte of the graph changed
    assert layout.read(bytes(version)) is None
    assert layout.read(bytes(version[:-1])) is None
    other, other_manifest = _fixture("cnn")
    assert layout.read(other) is None
    assert weight_layout(strip_weights(other, other_manifest), other_manifest) is not layout


def test_layouts_and_graphs_are_made_once_per_process() -> None:
    data, manifest = _fixture("mlp")
    graph = stripped(data, manifest)
    assert graph == strip_weights(data, manifest)
    assert stripped(data, manifest) is graph
    assert weight_layout(graph, manifest) is weight_layout(graph, manifest)


def test_a_wrong_number_of_weights_is_refused() -> None:
    data, manifest = _fixture("mlp")
    layout = weight_layout(strip_weights(data, manifest), manifest)
    assert layout is not None
    with pytest.raises(ModelFileError, match="weights for a model of"):
        layout.build(np.zeros(manifest.num_params + 1, np.float32))


def test_a_base_exports_weights_are_read_once_and_cannot_be_changed() -> None:
    data, manifest = _fixture("mlp")
    flat = weights_of(data, manifest)
    np.testing.assert_array_equal(flat, flat_weights(data, manifest))
    assert weights_of(data, manifest) is flat
    with pytest.raises(ValueError, match="read-only"):
        flat[0] = 1.0
