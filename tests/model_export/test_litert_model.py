"""The device-side runner: digits training without TensorFlow, bad files, bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.model_export import (
    HashMismatch,
    LiteRTModel,
    Manifest,
    MissingSignature,
    ModelFileError,
    RuntimeInputError,
)
from tests.model_export.conftest import Exported, batches_for, max_weight_diff

DEVICE_TRAIN = Path(__file__).with_name("device_train.py")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y.astype(np.int32), test_size=0.25, random_state=0, stratify=y
    )
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_cnn_learns_digits_on_litert_without_tensorflow(zoo_cnn: Exported, digits: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(DEVICE_TRAIN), str(zoo_cnn.directory), str(digits), "10", "0.1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy_loaded"] == []
    assert result["accuracy"] >= 0.90, result
    assert result["last_loss"] < result["first_loss"]
    assert result["restored_eval"] == result["start_eval"]  # set_weights put the start back
    assert result["after_eval"][1] > result["start_eval"][1]


def test_open_checks_the_manifest_sha256(zoo_mlp: Exported, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    shutil.copytree(zoo_mlp.directory, target)
    data = bytearray((target / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (target / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(HashMismatch, match="sha256"):
        LiteRTModel.open(target)


@pytest.mark.parametrize("cut", [7, 100, 0.5])
def test_truncated_model_is_a_model_file_error(zoo_mlp: Exported, cut: float) -> None:
    data = (zoo_mlp.directory / "model.tflite").read_bytes()
    size = int(len(data) * cut) if isinstance(cut, float) else int(cut)
    with pytest.raises(ModelFileError):
        LiteRTModel(data[:size])


def test_foreign_file_is_a_model_file_error(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a flatbuffer" * 4)
    with pytest.raises(ModelFileError, match="TFL3"):
        LiteRTModel(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        LiteRTModel(tmp_path / "absent.tflite")


def test_model_without_training_signatures_is_missing_signature(zoo_cnn: Exported) -> None:
    int8 = zoo_cnn.directory / "infer_int8.tflite"
    with pytest.raises(MissingSignature, match="train") as info:
        LiteRTModel(int8)
    assert info.value.present == ("infer",)


def test_bad_arrays_are_refused_before_the_interpreter(zoo_mlp: Exported) -> None:
    model = zoo_mlp.open()
    x, y = batches_for(zoo_mlp.manifest, seed=0, steps=1)[0]
    with pytest.raises(RuntimeInputError, match="does not fit"):
        model.train(x[:-1], y[:-1], 0.1)
    with pytest.raises(RuntimeInputError, match="integer input"):
        model.train(x, y.astype(np.float32) + 0.5, 0.1)
    with pytest.raises(RuntimeInputError, match="missing"):
        model.set_weights({})
    bad = dict(zoo_mlp.initial)
    bad["hidden_bias"] = np.zeros(3, np.float32)
    with pytest.raises(RuntimeInputError, match="shape"):
        model.set_weights(bad)
    bad["hidden_bias"] = np.full(zoo_mlp.initial["hidden_bias"].shape, np.nan, np.float32)
    with pytest.raises(RuntimeInputError, match="non-finite"):
        model.set_weights(bad)
    assert max_weight_diff(model.get_weights(), zoo_mlp.initial) == 0.0


def test_rollback_on_error_restores_the_weights(zoo_mlp: Exported) -> None:
    model = zoo_mlp.open()
    x, y = batches_for(zoo_mlp.manifest, seed=0, steps=1)[0]

    def interrupted_round() -> None:
        with model.rollback_on_error():
            model.train(x, y, 0.5)
            raise RuntimeError("interrupted mid-round")

    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted_round()
    assert max_weight_diff(model.get_weights(), zoo_mlp.initial) == 0.0


def test_labels_may_come_flat_for_single_output_models(zoo_mlp: Exported) -> None:
    model = zoo_mlp.open()
    x, y = batches_for(zoo_mlp.manifest, seed=0, steps=1)[0]
    assert model.evaluate(x, y.reshape(-1, 1)) == model.evaluate(x, y)
    assert model.batch_size == zoo_mlp.manifest.batch_size
    assert model.signatures == (
        "evaluate", "get_weights", "infer", "read_weights", "set_weights", "train"
    )  # fmt: skip


def test_manifest_signatures_match_the_model_file(zoo_cnn: Exported) -> None:
    manifest = Manifest.load(zoo_cnn.directory)
    assert manifest == zoo_cnn.manifest
    model = LiteRTModel.open(zoo_cnn.directory)
    for name, spec in manifest.signatures.items():
        for tensor in spec.inputs:
            assert model.input_shape(name, tensor.name) == tensor.shape
    assert list(model.get_weights()) == list(manifest.weight_names)


def test_runner_takes_another_interpreter_class(zoo_mlp: Exported) -> None:
    from ai_edge_litert.interpreter import Interpreter

    calls: list[int | None] = []

    def older_interpreter(*, model_content: bytes, num_threads: int | None) -> Interpreter:
        # Like tflite_runtime's: no experimental_default_delegate_latest_features flag.
        calls.append(num_threads)
        return Interpreter(model_content=model_content, num_threads=num_threads)

    model = LiteRTModel.open(zoo_mlp.directory, num_threads=1, interpreter_cls=older_interpreter)
    assert calls == [1]
    model.set_weights(zoo_mlp.initial)
    x, y = batches_for(zoo_mlp.manifest, seed=0, steps=1)[0]
    assert np.isfinite(model.train(x, y, 0.1))
    assert max_weight_diff(model.get_weights(), zoo_mlp.initial) > 0.0


def test_models_loading_on_threads_give_stderr_back(
    zoo_mlp: Exported, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two loads overlap and the first in leaves first: fd 2 must end where it began (each
    load swapping it alone once left the other's deleted temp file as fd 2)."""
    import os
    import threading

    from ai_edge_litert.interpreter import Interpreter

    from fedrt.model_export.litert_model import _XNNPACK_NOTICE

    both_in = threading.Barrier(2, timeout=30)
    first_out = threading.Event()
    order: list[str] = []

    def interpreter(name: str) -> Any:
        def make(*, model_content: bytes, num_threads: int | None) -> Interpreter:
            both_in.wait()
            if name == "second":
                assert first_out.wait(30)
            os.write(2, _XNNPACK_NOTICE + b"\n" + f"kept line from {name}\n".encode())
            return Interpreter(model_content=model_content, num_threads=num_threads)

        return make

    def load(name: str) -> None:
        LiteRTModel.open(zoo_mlp.directory, interpreter_cls=interpreter(name))
        order.append(name)
        if name == "first":
            first_out.set()

    before = os.fstat(2)
    threads = [threading.Thread(target=load, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = os.fstat(2)
    assert order == ["first", "second"]
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    err = capfd.readouterr().err
    assert "kept line from first" in err
    assert "kept line from second" in err
    assert _XNNPACK_NOTICE.decode() not in err
