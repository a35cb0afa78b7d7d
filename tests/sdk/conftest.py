"""Fixtures of the SDK tests: a model from `fedrt export` and the sysfs fixture trees."""

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


def nmcli_for(tree: str) -> str | None:
    path = SYSFS / tree / "nmcli.txt"
    return path.read_text() if path.exists() else None
