"""Local training progress (weights, step, data cursor) and its crash-safe file format."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.sdk.errors import SchedulerError

__all__ = ["Checkpoint"]

Array = npt.NDArray[Any]
_FORMAT = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """Where local training of a round stands: enough to resume it after a pause or reboot.

    ``start_weights`` are the round's weights (to compute the delta, and to restore after a
    failed train call); ``weights`` are the trained weights at ``step``.
    """

    round_id: str
    step: int
    cursor: int
    weights: tuple[Array, ...]
    start_weights: tuple[Array, ...]
    loss_sum: float = 0.0
    compute_s: float = 0.0
    pauses: int = 0

    def __post_init__(self) -> None:
        if self.step < 0 or self.cursor < 0:
            raise SchedulerError("step and cursor must be >= 0")
        if len(self.weights) != len(self.start_weights):
            raise SchedulerError("weights and start_weights differ in length")
        for w, s in zip(self.weights, self.start_weights, strict=True):
            if w.shape != s.shape or w.dtype != s.dtype:
                raise SchedulerError("weights and start_weights differ in shape or dtype")

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.step if self.step else None

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file, fsync, rename): a crash leaves the old one or the new."""
        target = Path(path)
        meta = {
            "format": _FORMAT,
            "round_id": self.round_id,
            "step": self.step,
            "cursor": self.cursor,
            "loss_sum": self.loss_sum,
            "compute_s": self.compute_s,
            "pauses": self.pauses,
            "n": len(self.weights),
        }
        buf = io.BytesIO()
        # Positional arrays are stored as arr_0 (meta), arr_1..n (weights), then start weights.
        header = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(buf, header, *self.weights, *self.start_weights)
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        try:
            # Read the bytes first: np.load leaks its file handle when the zip is corrupt.
            raw = io.BytesIO(Path(path).read_bytes())
            with np.load(raw, allow_pickle=False) as data:
                meta = json.loads(bytes(data["arr_0"]).decode())
                if meta.get("format") != _FORMAT:
                    raise SchedulerError(f"checkpoint format {meta.get('format')} unknown")
                n = int(meta["n"])
                weights = tuple(np.array(data[f"arr_{1 + i}"]) for i in range(n))
                start = tuple(np.array(data[f"arr_{1 + n + i}"]) for i in range(n))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise SchedulerError(f"cannot read checkpoint {path}: {exc}") from exc
        loss_sum = float(meta["loss_sum"])
        if not math.isfinite(loss_sum):
            raise SchedulerError("checkpoint holds a non-finite loss")
        return cls(
            round_id=str(meta["round_id"]),
            step=int(meta["step"]),
            cursor=int(meta["cursor"]),
            weights=weights,
            start_weights=start,
            loss_sum=loss_sum,
            compute_s=float(meta["compute_s"]),
            pauses=int(meta["pauses"]),
        )
