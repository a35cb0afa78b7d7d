"""``fedrt export`` end to end (module:function spec) and its usage errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.cli import main
from fedrt.model_export import LiteRTModel, Manifest


def test_export_module_function_spec_then_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    spec = "tests.model_export.test_training_graph:dropout_mlp"
    args = ["export", spec, "--out", str(out), "--batch", "4", "--loss", "mse", "--momentum"]
    assert main(args) == 0
    assert "sha256" in capsys.readouterr().out
    manifest = Manifest.load(out)
    assert manifest.source == spec
    assert manifest.loss == "mse"
    assert manifest.options["momentum"]
    assert main(["inspect", str(out / "model.tflite")]) == 0
    model = LiteRTModel.open(out)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    y = rng.normal(size=(4, 3)).astype(np.float32)
    losses = [model.train(x, y, 0.05, momentum=0.5) for _ in range(30)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zoo:resnet", "--input-shape", "4", "--classes", "2"], "no zoo model 'resnet'"),
        (["zoo:mlp"], "--input-shape and --classes"),
        (["nonexistent_module_xyz:build"], "cannot import"),
        (["fedrt.model_export.zoo:nothing"], "no callable"),
        (["just-a-name"], "zoo:NAME or module:function"),
        (["zoo:mlp", "--input-shape", "4", "--classes", "2", "--batch", "0"], "batch size"),
    ],
)
def test_export_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_bad_input_shape_is_an_argparse_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["export", "zoo:mlp", "--input-shape", "a,b", "--out", str(tmp_path)])
