"""Initial weights read from and written into an exported flatbuffer, checked on LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.model_export import LiteRTModel
from fedrt.model_export.errors import ModelFileError
from fedrt.model_export.weights_file import read_weights, replace_weights
from tests.model_export.conftest import Exported


def _bytes(exported: Exported) -> bytes:
    return (exported.directory / exported.manifest.model_file).read_bytes()


@pytest.mark.parametrize("name", ["zoo_mlp", "zoo_cnn"])
def test_read_weights_matches_what_litert_starts_with(
    name: str, request: pytest.FixtureRequest
) -> None:
    exported: Exported = request.getfixturevalue(name)
    read = read_weights(_bytes(exported), exported.manifest)
    live = LiteRTModel(_bytes(exported), exported.manifest).get_weights()
    assert [w.shape for w in read] == [tuple(s.shape) for s in exported.manifest.weights]
    for spec, value in zip(exported.manifest.weights, read, strict=True):
        np.testing.assert_array_equal(value, live[spec.name])


@pytest.mark.parametrize("name", ["zoo_mlp", "zoo_cnn"])
def test_replaced_weights_are_where_litert_starts_and_it_trains(
    name: str, request: pytest.FixtureRequest
) -> None:
    exported: Exported = request.getfixturevalue(name)
    rng = np.random.default_rng(0)
    new = [rng.normal(size=tuple(s.shape)).astype(np.float32) for s in exported.manifest.weights]
    patched = replace_weights(_bytes(exported), exported.manifest, new)
    for a, b in zip(read_weights(patched, exported.manifest), new, strict=True):
        np.testing.assert_array_equal(a, b)
    model = LiteRTModel(patched, exported.manifest)
    live = model.get_weights()
    for spec, value in zip(exported.manifest.weights, new, strict=True):
        np.testing.assert_array_equal(live[spec.name], value)
    b = exported.manifest.batch_size
    x = rng.random((b, *exported.manifest.input.shape), dtype=np.float32)
    y = rng.integers(0, exported.manifest.output.shape[-1], size=b).astype(np.int32)
    loss = model.train(x, y, 0.01)
    assert np.isfinite(loss)
    changed = model.get_weights()
    assert any(not np.array_equal(changed[s.name], live[s.name]) for s in exported.manifest.weights)


def test_wrong_shape_or_count_is_refused(zoo_mlp: Exported) -> None:
    weights = read_weights(_bytes(zoo_mlp), zoo_mlp.manifest)
    with pytest.raises(ModelFileError, match="weight arrays"):
        replace_weights(_bytes(zoo_mlp), zoo_mlp.manifest, weights[:-1])
    bad = [*weights[:-1], np.zeros((3, 3), np.float32)]
    with pytest.raises(ModelFileError, match="shape"):
        replace_weights(_bytes(zoo_mlp), zoo_mlp.manifest, bad)


def test_truncated_or_foreign_bytes_are_refused(zoo_mlp: Exported) -> None:
    data = _bytes(zoo_mlp)
    with pytest.raises(ModelFileError):
        read_weights(data[: len(data) // 2], zoo_mlp.manifest)
    with pytest.raises(ModelFileError):
        read_weights(b"not a model at all", zoo_mlp.manifest)
