"""Fixtures of the SDK tests: a real LiteRT training model and the sysfs fixture trees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SYSFS = DATA / "sysfs"
SYSFS_TREES = sorted(p.name for p in SYSFS.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def softmax_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny softmax-regression model with the `fedrt export` signatures (built once)."""
    out = tmp_path_factory.mktemp("litert") / "model.tflite"
    # TensorFlow runs in a child so this process stays as light as a device process.
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("litert_model.py")), str(out)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return out


def nmcli_for(tree: str) -> str | None:
    path = SYSFS / tree / "nmcli.txt"
    return path.read_text() if path.exists() else None
