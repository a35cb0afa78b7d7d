"""The held-out set (models/evaluator.py): checked at start, fitted to a task's model at
creation, and evaluated exactly (the tail past the last whole batch included)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.config import EvaluationConfig, cli_layer, load_config
from fedrt.coordinator.errors import BadRequestError, ConfigError
from fedrt.coordinator.models.evaluator import HeldOutEvaluator, load_held_out
from fedrt.coordinator.service import CoordinatorService
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest
from tests.coordinator.harness import make_config
from tests.coordinator.live_round import MODEL_DIR
from tests.coordinator.rollout_harness import EXAMPLES, base_labelled
from tests.coordinator.test_cli import FEDRT


def _npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 12))}, "no array named y"),
        ({"x": np.zeros((4, 12)), "y": np.zeros(3)}, "one row per example"),
        ({"x": np.zeros((0, 12)), "y": np.zeros(0)}, "0 examples"),
        ({"x": np.full((2, 12), np.nan), "y": np.zeros(2)}, "x has NaN"),
        ({"x": np.array([["a"] * 12] * 2), "y": np.zeros(2)}, "not numbers"),
    ],
    ids=["no-y", "lengths", "empty", "nan", "strings"],
)
def test_a_bad_held_out_set_is_a_config_error(
    tmp_path: Path, arrays: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_held_out(_npz(tmp_path / "d.npz", **arrays))


def test_files_that_are_not_npz_archives_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_held_out(tmp_path / "missing.npz")
    np.save(tmp_path / "plain.npy", np.zeros((3, 12)))
    with pytest.raises(ConfigError, match=r"not an \.npz"):
        load_held_out(tmp_path / "plain.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match=r"not a readable \.npz"):
        load_held_out(tmp_path / "junk.npz")


def test_accuracy_and_loss_are_exact_over_every_example(tmp_path: Path) -> None:
    manifest = Manifest.load(MODEL_DIR)
    data = (MODEL_DIR / manifest.model_file).read_bytes()
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, (EXAMPLES, 12)).astype(np.float32)
    y = rng.integers(0, 4, EXAMPLES).astype(np.int32)
    figures = HeldOutEvaluator(load_held_out(_npz(tmp_path / "d.npz", x=x, y=y)))(data, manifest)
    # The same from the infer signature's logits, in numpy.
    model = LiteRTModel(data, manifest, num_threads=1)
    padded = np.concatenate([x, np.zeros((-EXAMPLES % 8, 12), np.float32)])
    logits = np.concatenate([model.infer(padded[i : i + 8]) for i in range(0, len(padded), 8)])
    logits = logits[:EXAMPLES].astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert figures["accuracy"] == pytest.approx((logits.argmax(axis=1) == y).mean(), abs=1e-12)
    assert figures["loss"] == pytest.approx(-log_p[np.arange(EXAMPLES), y].mean(), rel=1e-5)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 10), np.float32), "y": np.zeros(4, np.int32)}, "shape \\[12\\]"),
        ({"x": np.zeros((4, 12), np.float32), "y": np.full(4, 4, np.int32)}, "0..3"),
        ({"x": np.zeros((4, 12), np.float32), "y": np.zeros(4, np.float32)}, "int32 labels"),
    ],
    ids=["width", "classes", "float-labels"],
)
def test_a_set_the_model_does_not_fit_is_named(
    tmp_path: Path, arrays: dict[str, object], message: str
) -> None:
    evaluator = HeldOutEvaluator(load_held_out(_npz(tmp_path / "d.npz", **arrays)))
    why = evaluator.misfit(Manifest.load(MODEL_DIR))
    assert why is not None
    assert re.search(message, why), why


def test_the_service_reads_the_set_at_start_and_checks_tasks_at_creation(tmp_path: Path) -> None:
    bad = _npz(tmp_path / "bad.npz", x=np.zeros((3, 12)))
    with pytest.raises(ConfigError, match="no array named y"):
        CoordinatorService(make_config(tmp_path / "a", evaluation=EvaluationConfig(data=bad)))
    narrow = _npz(tmp_path / "narrow.npz", x=np.zeros((4, 10), np.float32), y=np.zeros(4, np.int32))
    svc = CoordinatorService(make_config(tmp_path / "b", evaluation=EvaluationConfig(data=narrow)))
    try:
        base = svc.catalog.add_export_dir(MODEL_DIR, actor="test", max_bytes=1 << 20)
        with pytest.raises(BadRequestError, match="rollout_gate held_out: the model takes"):
            svc.tasks.create(name="t", model_sha256=base.sha256, actor="test",
                             spec=TaskSpec(rollout_gate="held_out"))  # fmt: skip
        # auto: the task runs, its versions promoted ungated (logged).
        svc.tasks.create(name="t", model_sha256=base.sha256, actor="test", spec=TaskSpec())
    finally:
        svc.store.close()
    assert svc.held_out is not None


def test_eval_data_from_flag_env_and_file(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[evaluation]\ndata = "from-file.npz"\n')
    assert load_config(toml, environ={}).evaluation.data == Path("from-file.npz")
    env = {"FEDRT_EVALUATION_DATA": "from-env.npz"}
    assert load_config(toml, environ=env).evaluation.data == Path("from-env.npz")
    flags = cli_layer(eval_data="from-flag.npz")
    assert load_config(toml, environ=env, cli=flags).evaluation.data == Path("from-flag.npz")


def test_serve_with_a_bad_eval_data_file_exits_2_naming_it(tmp_path: Path) -> None:
    bad = _npz(tmp_path / "held-out.npz", x=np.zeros((3, 12)), y=np.zeros(2))
    result = subprocess.run(
        [FEDRT, "coordinator", "serve", "--eval-data", str(bad), "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert b"held-out.npz" in result.stderr
    assert b"one row per example" in result.stderr


def test_the_base_labelled_set_scores_the_base_model_perfectly(tmp_path: Path) -> None:
    manifest = Manifest.load(MODEL_DIR)
    evaluator = HeldOutEvaluator(load_held_out(base_labelled(tmp_path / "d.npz")))
    figures = evaluator((MODEL_DIR / manifest.model_file).read_bytes(), manifest)
    assert figures["accuracy"] == 1.0
