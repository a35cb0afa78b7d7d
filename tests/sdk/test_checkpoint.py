"""Checkpoint files: round trip, atomic replacement, corrupt files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrt.sdk.checkpoint import Checkpoint
from fedrt.sdk.errors import SchedulerError


def sample() -> Checkpoint:
    w = (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32))
    s = (np.zeros((2, 3), np.float32), np.zeros(3, np.float32))
    return Checkpoint(
        round_id="r7",
        step=5,
        cursor=21,
        weights=w,
        start_weights=s,
        loss_sum=2.5,
        compute_s=1.25,
        pauses=1,
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    sample().save(path)
    got = Checkpoint.load(path)
    assert (got.round_id, got.step, got.cursor, got.pauses) == ("r7", 5, 21, 1)
    assert got.mean_loss == 0.5
    for a, b in zip(
        got.weights + got.start_weights, sample().weights + sample().start_weights, strict=True
    ):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert not (tmp_path / "ckpt.npz.tmp").exists()


def test_corrupt_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    sample().save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SchedulerError):
        Checkpoint.load(path)
    with pytest.raises(SchedulerError):
        Checkpoint.load(tmp_path / "missing.npz")


def test_inconsistent_checkpoints_are_refused() -> None:
    with pytest.raises(SchedulerError):
        Checkpoint(round_id="r", step=-1, cursor=0, weights=(), start_weights=())
    with pytest.raises(SchedulerError):
        Checkpoint(
            round_id="r", step=0, cursor=0, weights=(np.zeros(2),), start_weights=(np.zeros(3),)
        )
