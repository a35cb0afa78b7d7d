"""LiteRtTrainer on a real LiteRT interpreter with a model made by `fedrt export`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.sdk.errors import ModelError
from fedrt.sdk.interpreter import InterpreterChoice
from fedrt.sdk.trainer import LiteRtTrainer, TrainerBackend

X = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
Y = np.array([0, 1, 0, 1], np.int32)


@pytest.fixture
def trainer(exported_mlp: Path) -> LiteRtTrainer:
    return LiteRtTrainer.open(exported_mlp)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_is_a_trainer_backend_with_the_manifest_specs(trainer: LiteRtTrainer) -> None:
    assert isinstance(trainer, TrainerBackend)
    assert trainer.batch_size == 4
    assert trainer.x_spec.shape == (4, 3)
    assert trainer.y_spec.dtype == "int32"
    names = [s.name for s in trainer.weight_specs]
    assert names == list(trainer.manifest.weight_names)
    assert [w.shape for w in trainer.get_weights()] == [s.shape for s in trainer.weight_specs]
    assert trainer.supports_mu


def test_training_lowers_the_loss_and_evaluate_counts(trainer: LiteRtTrainer) -> None:
    first = trainer.train_step(X, Y, 0.1)
    for _ in range(60):
        last = trainer.train_step(X, Y, 0.1)
    assert last < first
    loss, correct = trainer.evaluate(X, Y)
    assert loss < first
    assert correct == 4
    logits = trainer.infer(X)
    assert logits.shape == (4, 2)
    assert list(np.argmax(logits, axis=1)) == list(Y)


def test_set_weights_restores_a_copy_from_get_weights(trainer: LiteRtTrainer) -> None:
    start = trainer.get_weights()
    trainer.train_step(X, Y, 0.5)
    assert not same(trainer.get_weights(), start)
    trainer.set_weights(start)
    assert same(trainer.get_weights(), start)


def test_get_weights_returns_independent_copies(trainer: LiteRtTrainer) -> None:
    weights = trainer.get_weights()
    weights[0][...] = 42.0
    assert not np.any(trainer.get_weights()[0] == 42.0)


def test_fedprox_mu_pulls_towards_the_round_weights(exported_mlp: Path) -> None:
    free = LiteRtTrainer.open(exported_mlp)
    prox = LiteRtTrainer.open(exported_mlp)
    start = free.get_weights()
    prox.set_weights(start)  # same start, and the anchor of the proximal term
    free.set_weights(start)
    for _ in range(20):
        free.train_step(X, Y, 0.2, mu=0.0)
        prox.train_step(X, Y, 0.2, mu=2.0)

    def drift(t: LiteRtTrainer) -> float:
        pairs = zip(t.get_weights(), start, strict=True)
        return sum(float(np.sum((w - s) ** 2)) for w, s in pairs)

    assert drift(prox) < drift(free)


def test_momentum_on_a_model_exported_without_it_is_refused(trainer: LiteRtTrainer) -> None:
    trainer.use_momentum(0.0)  # plain SGD is fine
    with pytest.raises(ModelError, match="export it with --momentum"):
        trainer.use_momentum(0.9)


@pytest.mark.parametrize(
    ("x", "y", "lr"),
    [
        (X[:2], Y[:2], 0.1),  # wrong batch
        (X[:, :2], Y, 0.1),  # wrong feature count
        (X, Y.astype(np.float32) + 0.5, 0.1),  # float labels for an integer input
        (X, Y, float("nan")),
    ],
)
def test_bad_train_inputs_are_refused_without_touching_weights(
    trainer: LiteRtTrainer, x: np.ndarray, y: np.ndarray, lr: float
) -> None:
    before = trainer.get_weights()
    with pytest.raises(ModelError):
        trainer.train_step(x, y, lr)
    assert same(trainer.get_weights(), before)


def test_bad_weights_are_refused_without_touching_weights(trainer: LiteRtTrainer) -> None:
    before = trainer.get_weights()
    with pytest.raises(ModelError, match="expected 4"):
        trainer.set_weights(before[:1])
    wrong = [np.zeros((2, 2), np.float32) + 7, *before[1:]]
    with pytest.raises(ModelError, match="shape"):
        trainer.set_weights(wrong)
    nan = [np.full_like(before[0], np.nan), *before[1:]]
    with pytest.raises(ModelError):
        trainer.set_weights(nan)
    assert same(trainer.get_weights(), before)


def test_a_tampered_model_file_is_refused(exported_mlp: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(exported_mlp, copy)
    blob = bytearray((copy / "model.tflite").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        LiteRtTrainer.open(copy)


def test_a_broken_manifest_is_refused(exported_mlp: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(exported_mlp, copy)
    data = json.loads((copy / "manifest.json").read_text())
    del data["weights"]
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelError):
        LiteRtTrainer.open(copy)


def test_a_missing_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        LiteRtTrainer.open(tmp_path)


def test_the_resolved_interpreter_class_is_the_one_that_runs(exported_mlp: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    made: list[str] = []

    class Fallback(Interpreter):  # type: ignore[misc]
        """Stands in for tflite_runtime's Interpreter (same constructor and API)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append("fallback")
            super().__init__(*args, **kwargs)

    choice = InterpreterChoice(interpreter_cls=Fallback, package="tflite_runtime", version="2.14")
    trainer = LiteRtTrainer.open(exported_mlp, interpreter=choice)
    assert made == ["fallback"]
    assert trainer.get_weights()


def test_a_closed_trainer_refuses_work_with_a_model_error(trainer: LiteRtTrainer) -> None:
    trainer.train_step(X, Y, 0.1)
    trainer.close()
    with pytest.raises(ModelError, match="closed"):
        trainer.train_step(X, Y, 0.1)
    with pytest.raises(ModelError, match="closed"):
        trainer.get_weights()
    trainer.close()  # closing twice is harmless
