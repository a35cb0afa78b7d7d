"""What one training example is: the dtypes and shapes of ``x`` and ``y`` a train signature takes.

A model's manifest declares its ``train`` inputs with the batch axis first (``x`` int32[32, 20]
for a language model, ``y`` float32[32, 1] for a binary one); an ``ExampleSchema`` is the same
without that axis, which is what the ``ExampleStore`` holds. ``read_npz`` checks a whole file
of examples against it before one of them is stored, so a wrong file is one clear message.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import ExportError
from fedrt.model_export.manifest import Manifest, TensorSpec
from fedrt.sdk.errors import ExampleStoreError, SdkConfigError
from fedrt.sdk.example_store import ExampleStore, Retention

__all__ = ["STORABLE_DTYPES", "ExampleSchema", "read_npz"]

Array = npt.NDArray[Any]
# The manifest's dtype names that an example can be stored as (not string, resource, ...).
STORABLE_DTYPES = ("bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64",
                   "uint8", "uint16", "uint32", "uint64")  # fmt: skip


def _dims(shape: Sequence[Any], what: str) -> tuple[int, ...]:
    if isinstance(shape, str | bytes) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise SdkConfigError(f"{what} must be a list of positive integers, got {list(shape)!r}")
    return tuple(shape)


def _dtype(name: Any, what: str) -> str:
    if name not in STORABLE_DTYPES:
        raise SdkConfigError(f"{what} must be one of {', '.join(STORABLE_DTYPES)}, got {name!r}")
    return str(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExampleSchema:
    """Per-example shapes and dtype names of ``x`` and ``y`` (defaults: one int32 class label)."""

    x_shape: tuple[int, ...]
    x_dtype: str = "float32"
    y_shape: tuple[int, ...] = ()
    y_dtype: str = "int32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "x_shape", _dims(self.x_shape, "x_shape"))
        object.__setattr__(self, "y_shape", _dims(self.y_shape, "y_shape"))
        _dtype(self.x_dtype, "x_dtype")
        _dtype(self.y_dtype, "y_dtype")
        if not self.x_shape:
            raise SdkConfigError("x_shape must have at least one dimension")

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ExampleSchema:
        """The examples the manifest's ``train`` signature takes (its ``x`` and ``y``)."""
        try:
            train = manifest.signature("train")
        except ExportError as exc:
            raise SdkConfigError(str(exc)) from None
        x, y = train.input("x"), train.input("y")
        if x is None or y is None:
            raise SdkConfigError("the manifest's train signature has no input x or y")
        x_shape, x_dtype = _example(x)
        y_shape, y_dtype = _example(y)
        return cls(x_shape=x_shape, x_dtype=x_dtype, y_shape=y_shape, y_dtype=y_dtype)

    @classmethod
    def from_manifest_file(cls, path: str | Path) -> ExampleSchema:
        """``from_manifest`` of a manifest.json (or a ``fedrt export`` directory holding one)."""
        try:
            manifest = Manifest.load(path)
        except ExportError as exc:
            raise SdkConfigError(f"{path}: {exc}") from None
        return cls.from_manifest(manifest)

    def describe(self) -> str:
        """``x int32[20], y int32[]``: how error messages and the CLI name the schema."""
        return f"x {self.x_dtype}{list(self.x_shape)}, y {self.y_dtype}{list(self.y_shape)}"

    def open_store(self, path: str | Path, *, retention: Retention | None = None) -> ExampleStore:
        """The example store at ``path`` for this schema (one holding another schema is refused)."""
        return ExampleStore(
            path,
            x_shape=self.x_shape,
            x_dtype=np.dtype(self.x_dtype),
            y_shape=self.y_shape,
            y_dtype=np.dtype(self.y_dtype),
            retention=retention,
        )

    def check_arrays(self, x: Any, y: Any, where: str) -> tuple[Array, Array]:
        """``x`` and ``y`` (examples along the first axis) cast to the schema's dtypes, or
        ``ExampleStoreError`` naming ``where`` and what differs."""
        xs = self._check(np.asarray(x), "x", self.x_shape, self.x_dtype, where)
        ys = self._check(np.asarray(y), "y", self.y_shape, self.y_dtype, where)
        if len(xs) != len(ys):
            raise ExampleStoreError(f"{where}: {len(xs)} examples in x but {len(ys)} in y")
        return xs, ys

    @staticmethod
    def _check(arr: Array, what: str, shape: tuple[int, ...], dtype: str, where: str) -> Array:
        want = f"{dtype}{list(shape)}"
        if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
            got = f"{arr.dtype}{list(arr.shape[1:])}" if arr.ndim else f"a scalar {arr.dtype}"
            raise ExampleStoreError(
                f"{where}: {what} holds examples of {got}, the model takes {what} {want} "
                f"(the first axis counts examples)"
            )
        target = np.dtype(dtype)
        if arr.dtype == target:
            return arr
        # Integers may change width or sign when every value survives (checked below).
        integers = arr.dtype.kind in "iub" and target.kind in "iu"
        if not (integers or np.can_cast(arr.dtype, target, casting="same_kind")):
            raise ExampleStoreError(
                f"{where}: {what} is {arr.dtype}, the model takes {what} {want}; "
                f"{arr.dtype} does not convert to {dtype} without losing its meaning"
            )
        cast = arr.astype(target)
        # Rounding floats is expected; an integer token or label that changes is not.
        if target.kind in "iub" and not np.array_equal(cast, arr):
            raise ExampleStoreError(f"{where}: {what} has values outside the range of {dtype}")
        return cast


def _example(spec: TensorSpec) -> tuple[tuple[int, ...], str]:
    if len(spec.shape) < 1 or any(d < 1 for d in spec.shape[1:]):
        raise SdkConfigError(
            f"the train input {spec.name} has shape {list(spec.shape)}: a device needs a batch "
            "axis and static example dimensions"
        )
    if spec.dtype not in STORABLE_DTYPES:
        raise SdkConfigError(f"the train input {spec.name} is {spec.dtype}: not storable")
    return tuple(spec.shape[1:]), spec.dtype


def read_npz(path: str | Path, schema: ExampleSchema) -> tuple[Array, Array]:
    """Arrays ``x`` and ``y`` of an ``.npz`` file, checked against ``schema`` (nothing stored)."""
    try:
        with Path(path).open("rb") as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"
        loaded = np.load(path, allow_pickle=False) if is_zip else None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ExampleStoreError(f"{path}: not an .npz archive (numpy.savez writes one)")
        with loaded:
            missing = [k for k in ("x", "y") if k not in loaded.files]
            if missing:
                raise ExampleStoreError(
                    f"{path}: no array {' or '.join(missing)} (it holds {sorted(loaded.files)})"
                )
            x, y = loaded["x"], loaded["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ExampleStoreError(f"cannot read {path}: {exc}") from None
    return schema.check_arrays(x, y, str(path))
