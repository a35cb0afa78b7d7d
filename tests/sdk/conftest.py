"""Fixtures of the SDK tests: models from `fedrt export` and the sysfs fixture trees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SYSFS = DATA / "sysfs"
SYSFS_TREES = sorted(p.name for p in SYSFS.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def exported_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fedrt export zoo:mlp` (3 features, 2 classes, batch 4, FedProx), built once."""
    out = tmp_path_factory.mktemp("mlp")
    # TensorFlow runs in a child so this process stays as light as a device process.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrt",
            "export",
            "zoo:mlp",
            "--input-shape",
            "3",
            "--classes",
            "2",
            "--batch",
            "4",
            "--fedprox",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return out


def _export(out: Path, *args: str) -> Path:
    # TensorFlow runs in a child so this process stays as light as a device process.
    subprocess.run([sys.executable, "-m", "fedrt", "export", *args, "--out", str(out)],
                   check=True, capture_output=True, timeout=240)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def exported_lstm_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fedrt export zoo:lstm_lm`: int32 token sequences of 6, a vocabulary of 20, batch 4."""
    out = tmp_path_factory.mktemp("lstm_lm")
    return _export(out, "zoo:lstm_lm", "--input-shape", "6", "--classes", "20", "--batch", "4")


@pytest.fixture(scope="session")
def exported_mse_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fedrt export zoo:mlp --loss mse`: 3 features to 2 float targets, batch 4."""
    out = tmp_path_factory.mktemp("mse_mlp")
    return _export(out, "zoo:mlp", "--input-shape", "3", "--classes", "2", "--batch", "4",
                   "--loss", "mse")  # fmt: skip


def nmcli_for(tree: str) -> str | None:
    path = SYSFS / tree / "nmcli.txt"
    return path.read_text() if path.exists() else None
