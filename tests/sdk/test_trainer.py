"""LiteRtTrainer on a real LiteRT interpreter with a model in the `fedrt export` layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.sdk.errors import ModelError
from fedrt.sdk.trainer import LiteRtTrainer, TrainerBackend

WEIGHTS = ["dense_kernel", "dense_bias"]
X = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
Y = np.array([0, 1, 0, 1], np.int32)


@pytest.fixture
def trainer(softmax_model: Path) -> LiteRtTrainer:
    return LiteRtTrainer(softmax_model, weight_names=WEIGHTS)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_is_a_trainer_backend_with_static_specs(trainer: LiteRtTrainer) -> None:
    assert isinstance(trainer, TrainerBackend)
    assert trainer.batch_size == 4
    assert trainer.x_spec.shape == (4, 3)
    assert trainer.y_spec.dtype == np.int32
    assert [s.name for s in trainer.weight_specs] == WEIGHTS
    assert [s.shape for s in trainer.weight_specs] == [(3, 2), (2,)]
    assert trainer.supports_mu


def test_weights_come_back_in_manifest_order(softmax_model: Path) -> None:
    reversed_order = LiteRtTrainer(softmax_model, weight_names=WEIGHTS[::-1])
    assert [w.shape for w in reversed_order.get_weights()] == [(2,), (3, 2)]


def test_training_lowers_the_loss_and_evaluate_counts(trainer: LiteRtTrainer) -> None:
    first = trainer.train_step(X, Y, 0.5)
    for _ in range(20):
        last = trainer.train_step(X, Y, 0.5)
    assert last < first
    loss, correct = trainer.evaluate(X, Y)
    assert loss < first
    assert correct == 4
    logits = trainer.infer(X)
    assert logits.shape == (4, 2)
    assert list(np.argmax(logits, axis=1)) == list(Y)


def test_set_weights_restores_a_copy_from_get_weights(trainer: LiteRtTrainer) -> None:
    start = trainer.get_weights()
    trainer.train_step(X, Y, 1.0)
    assert not same(trainer.get_weights(), start)
    trainer.set_weights(start)
    assert same(trainer.get_weights(), start)


def test_get_weights_returns_independent_copies(trainer: LiteRtTrainer) -> None:
    weights = trainer.get_weights()
    weights[0][...] = 42.0
    assert not np.any(trainer.get_weights()[0] == 42.0)


def test_fedprox_mu_pulls_towards_the_round_weights(softmax_model: Path) -> None:
    free = LiteRtTrainer(softmax_model, weight_names=WEIGHTS)
    prox = LiteRtTrainer(softmax_model, weight_names=WEIGHTS)
    start = free.get_weights()
    for _ in range(10):
        free.train_step(X, Y, 0.5, mu=0.0)
        prox.train_step(X, Y, 0.5, mu=1.0)

    def drift(t: LiteRtTrainer) -> float:
        return sum(float(np.sum((w - s) ** 2)) for w, s in zip(t.get_weights(), start, strict=True))

    assert drift(prox) < drift(free)


@pytest.mark.parametrize(
    ("x", "y", "lr"),
    [
        (X[:2], Y[:2], 0.1),  # wrong batch
        (X.astype(np.float64)[:, :2], Y, 0.1),  # wrong feature count
        (X, Y.astype(np.float32), 0.1),  # float labels cannot become int32 safely
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
    with pytest.raises(ModelError, match="expected 2"):
        trainer.set_weights(before[:1])
    with pytest.raises(ModelError, match="shape"):
        trainer.set_weights([np.zeros((3, 2), np.float32) + 7, np.zeros(3, np.float32)])
    assert same(trainer.get_weights(), before)


def test_unknown_weight_names_are_refused(softmax_model: Path) -> None:
    with pytest.raises(ModelError, match="do not match"):
        LiteRtTrainer(softmax_model, weight_names=["dense_kernel", "other"])


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelError, match="cannot load"):
        LiteRtTrainer(junk)


def test_a_truncated_model_is_refused(softmax_model: Path) -> None:
    with pytest.raises(ModelError):
        LiteRtTrainer(softmax_model.read_bytes()[:2000])
