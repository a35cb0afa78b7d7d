"""Manifest: round trip, validation of every field, sha256 verification."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fedrt.model_export import HashMismatch, Manifest, ManifestError, file_sha256
from tests.model_export.conftest import Exported


def test_round_trip_through_json(zoo_mlp: Exported) -> None:
    text = zoo_mlp.manifest.to_json()
    again = Manifest.from_json(text)
    assert again == zoo_mlp.manifest
    assert again.to_json() == text
    data = json.loads(text)
    assert data["num_params"] == 12 * 16 + 16 + 16 * 4 + 4
    assert data["format_version"] == 1
    assert data["model_file"] == "model.tflite"
    assert data["loss"] == "sparse_ce"
    assert data["batch_size"] == 8
    assert [w["name"] for w in data["weights"]] == [
        "hidden_kernel", "hidden_bias", "logits_kernel", "logits_bias"
    ]  # fmt: skip
    train = {t["name"]: t for t in data["signatures"]["train"]["inputs"]}
    assert train["lr"]["shape"] == [1]
    assert train["y"] == {"name": "y", "shape": [8], "dtype": "int32"}
    assert data["signatures"]["infer"]["inputs"][0]["shape"] == [-1, 12]


def test_load_reads_a_directory_and_verifies_the_file(zoo_mlp: Exported, tmp_path: Path) -> None:
    manifest = Manifest.load(zoo_mlp.directory)
    assert manifest.verify_model_file(zoo_mlp.directory) == zoo_mlp.directory / "model.tflite"
    assert manifest.sha256 == file_sha256(zoo_mlp.directory / "model.tflite")
    wrong = tmp_path / "model.tflite"
    wrong.write_bytes(b"TFL3 but not the same bytes")
    with pytest.raises(HashMismatch) as info:
        manifest.verify_model_file(tmp_path)
    assert info.value.expected == manifest.sha256
    with pytest.raises(ManifestError, match="cannot read model file"):
        manifest.verify_model_file(tmp_path / "nothing")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        Manifest.load(tmp_path)


def _mutated(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
BAD = [
    (("format_version",), 2, "format_version"),
    (("sha256",), "ABC", "sha256"),
    (("loss",), "hinge", "loss"),
    (("batch_size",), 0, "batch_size"),
    (("batch_size",), True, "batch_size"),
    (("model_file",), "../model.tflite", "bare file name"),
    (("weights",), [], "weights"),
    (("weights", 0, "name"), "hidden-kernel", "identifiers"),
    (("weights", 0, "shape"), [12, -1], "static"),
    (("weights", 0, "dtype"), "float99", "dtype"),
    (("num_params",), 7, "num_params"),
    (("signatures", "train"), _DELETE, "train"),
    (("signatures", "get_weights", "outputs"), [], "get_weights"),
    (("signatures", "read_weights", "outputs", 0, "shape"), [1], "read_weights outputs"),
    (("signatures", "read_weights", "inputs"), [], "read_weights must take"),
    (("signatures", "read_weights", "inputs", 0, "shape"), [], "read_weights must take"),
    (("options",), {"fedprox": "yes"}, "options"),
    (("input",), [12], "input"),
    (("sha256",), _DELETE, "sha256"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[str(b[0]) for b in BAD])
def test_invalid_fields_raise_manifest_error(
    zoo_mlp: Exported, path: tuple[Any, ...], value: Any, message: str
) -> None:
    data = _mutated(zoo_mlp.manifest.to_dict(), path, value)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data)


def test_a_manifest_without_read_weights_still_loads(zoo_mlp: Exported) -> None:
    """Exports older than read_weights stay usable wherever get_weights is enough."""
    data = _mutated(zoo_mlp.manifest.to_dict(), ("signatures", "read_weights"), _DELETE)
    manifest = Manifest.from_dict(data)
    assert "read_weights" not in manifest.signatures
    assert "read_weights" in zoo_mlp.manifest.signatures


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b"\xff\xfe", b'"manifest"'])
def test_non_objects_raise_manifest_error(text: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(text)
