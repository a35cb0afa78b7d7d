"""The operator's held-out set (``serve --eval-data``): loaded, checked against a model, and
each candidate version evaluated on it with LiteRT through the model's ``evaluate`` signature.

The coordinator needs LiteRT (``ai-edge-litert``, in ``fedrt[device]``) only when it is given
a held-out set: ``require_litert`` says so at start, not in the middle of a round.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.errors import ConfigError, EvaluationError
from fedrt.model_export.errors import ExportError
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest

log = logging.getLogger(__name__)

# Both arrays are read whole into memory: a held-out set is for a verdict, not a benchmark,
# and every candidate is evaluated on all of it inside the commit's transaction.
MAX_EXAMPLES = 100_000


@dataclass(frozen=True, slots=True, eq=False)
class HeldOutSet:
    """Examples ``x`` (one per row) and their labels ``y``, validated on load."""

    path: Path
    x: npt.NDArray[Any]
    y: npt.NDArray[Any]

    def __len__(self) -> int:
        return len(self.x)


def require_litert() -> None:
    """``ConfigError`` unless LiteRT can be imported (a held-out set needs it)."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise ConfigError(
            "evaluation.data (--eval-data) evaluates models with LiteRT: "
            "pip install 'fedrt[device]' (ai-edge-litert) next to the coordinator"
        )


def load_held_out(path: Path) -> HeldOutSet:
    """Read and check an ``.npz`` holding ``x`` and ``y``; ``ConfigError`` naming the problem."""
    where = f"evaluation.data {path}"
    not_npz = ConfigError(f"{where}: not an .npz archive (np.savez(path, x=..., y=...))")
    try:
        # Opened here: numpy leaves a file it opened itself open when it is no archive.
        with Path(path).open("rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy file: one array
                raise not_npz
            with loaded as npz:
                missing = sorted({"x", "y"} - set(npz.files))
                if missing:
                    raise ConfigError(f"{where}: no array named {', '.join(missing)}")
                x, y = npz["x"], npz["y"]
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{where}: not a readable .npz archive: {exc}") from None
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
        raise ConfigError(f"{where}: x {x.shape} and y {y.shape} must have one row per example")
    if not 1 <= len(x) <= MAX_EXAMPLES:
        raise ConfigError(f"{where}: {len(x)} examples (1 to {MAX_EXAMPLES})")
    for name, a in (("x", x), ("y", y)):
        if a.dtype.kind not in "fiu":
            raise ConfigError(f"{where}: {name} has dtype {a.dtype}, not numbers")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ConfigError(f"{where}: {name} has NaN or infinite values")
    return HeldOutSet(Path(path), x, y)


def _fits(want: tuple[int, ...], got: tuple[int, ...]) -> bool:
    return len(want) == len(got) and all(w in (-1, g) for w, g in zip(want, got, strict=True))


class HeldOutEvaluator:
    """The round driver's ``Evaluator`` on a held-out set: accuracy and mean loss of a model.

    ``misfit`` says why a model cannot be evaluated on the set (None when it can), so a task
    whose model does not fit is told at creation or left ungated, never failed mid-round.
    """

    def __init__(self, data: HeldOutSet) -> None:
        self.data = data

    def misfit(self, manifest: Mapping[str, Any] | Manifest) -> str | None:
        m = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)
        sig = m.signatures.get("evaluate")
        xs = sig.input("x") if sig is not None else None
        ys = sig.input("y") if sig is not None else None
        if xs is None or ys is None:
            return "the model has no evaluate signature taking x and y"
        x, y = self.data.x, self.data.y
        if not _fits(xs.shape[1:], x.shape[1:]):
            return f"the model takes examples of shape {list(xs.shape[1:])}, x has {x.shape[1:]}"
        if xs.dtype.startswith(("int", "uint")) and x.dtype.kind == "f":
            return f"the model takes {xs.dtype} examples, x is {x.dtype}"
        if math.prod(ys.shape[1:]) != math.prod(y.shape[1:]):
            return f"the model takes labels of shape {list(ys.shape[1:])}, y has {y.shape[1:]}"
        if ys.dtype.startswith(("int", "uint")) and y.dtype.kind == "f":
            return f"the model takes {ys.dtype} labels, y is {y.dtype}"
        if m.loss == "sparse_ce":
            classes = m.output.shape[-1]
            if y.min() < 0 or y.max() >= classes:
                return f"labels must lie in 0..{classes - 1} (the model's classes)"
        return None

    def __call__(self, model: bytes, manifest: Manifest) -> Mapping[str, float]:
        """``{"accuracy", "loss"}`` of ``model`` on the whole set; ``EvaluationError`` if
        LiteRT cannot run it (the caller holds the candidate back)."""
        why = self.misfit(manifest)
        if why is not None:
            raise EvaluationError(f"held-out set {self.data.path}: {why}")
        try:
            return self._evaluate(LiteRTModel(model, manifest, num_threads=1), manifest)
        except (ExportError, RuntimeError, ValueError) as exc:
            raise EvaluationError(f"cannot evaluate the model: {exc}") from None

    def _evaluate(self, model: LiteRTModel, manifest: Manifest) -> dict[str, float]:
        x, y = self.data.x, self.data.y
        n = len(x)
        b = manifest.batch_size
        per_example = math.prod(manifest.signature("evaluate").input("y").shape[1:])  # type: ignore[union-attr]
        loss_sum, correct = 0.0, 0.0
        whole = n - n % b
        for start in range(0, whole, b):
            loss, right = model.evaluate(x[start : start + b], y[start : start + b])
            loss_sum += loss * b
            correct += right
        # The signature's batch is static: each left-over example fills a batch of its own,
        # so its loss and hits are exact (hits come in multiples of b).
        for i in range(whole, n):
            loss, right = model.evaluate(
                np.repeat(x[i : i + 1], b, 0), np.repeat(y[i : i + 1], b, 0)
            )
            loss_sum += loss
            correct += right / b
        return {"accuracy": correct / (n * max(per_example, 1)), "loss": loss_sum / n}


__all__ = ["MAX_EXAMPLES", "HeldOutEvaluator", "HeldOutSet", "load_held_out", "require_litert"]
