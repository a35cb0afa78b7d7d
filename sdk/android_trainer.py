"""A `TrainerBackend` that drives the app's Java/Kotlin LiteRT trainer through Chaquopy.

On Android the model runs in LiteRT's Java ``Interpreter`` (Chaquopy's Python LiteRT is too
old for training graphs). The app's trainer object (``examples/android_bridge``'s Kotlin
``LiteRtTrainer``) exposes one method shaped like ``Interpreter.runSignature``:
``runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String key)``, whose
values are flat primitive arrays (``float[]``/``int[]``) in row-major order; it fills the
output arrays in place. Arrays cross with one ``memcpy`` each way: a 1-D contiguous numpy
array of the exact element type becomes a Java array through Chaquopy's buffer fast path,
and a Java primitive array exposes its elements to numpy through the buffer protocol.
Shapes, names and dtypes come from the model's manifest, which the SDK already verified.
Java's ``runSignature`` refuses an empty input map, so weights are read with ``read_weights``
(``get_weights`` with one ignored input); models exported before it are refused.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from fedrt import __version__
from fedrt.model_export.manifest import READ_WEIGHTS, READ_WEIGHTS_INPUT, Manifest, TensorSpec
from fedrt.sdk.errors import ModelError, TrainStepFailed
from fedrt.sdk.trainer import ManifestTrainer, TrainerBackend

if TYPE_CHECKING:
    from java.chaquopy import JavaArray
    from java.lang import Object
    from java.util import Map

__all__ = ["JavaTrainer", "JavaTrainerObject", "java_trainer_factory"]

Array = npt.NDArray[Any]
_JAVA_ELEMENTS = {"float32": "jfloat", "int32": "jint"}  # what the trainer's arrays can hold


class JavaTrainerObject(Protocol):
    """The Java side: ``Interpreter.runSignature``'s shape, over flat primitive arrays."""

    def runSignature(  # noqa: N802 - the Java method's name
        self,
        inputs: Map[str, Object],
        outputs: Map[str, Object],
        signature_key: str,
        /,
    ) -> None: ...

    def close(self) -> None:
        """Release the interpreter (Kotlin's ``LiteRtTrainer`` is ``AutoCloseable``)."""


class _Marshal:
    """Numpy arrays to Java arrays and back, with Chaquopy's ``java`` module (or a stand-in)."""

    def __init__(self, java: ModuleType) -> None:
        elements = _JAVA_ELEMENTS.items()
        self._arrays = {dtype: java.jarray(getattr(java, name)) for dtype, name in elements}
        self._new_map: Callable[[], Map[str, Object]] = java.jclass("java.util.HashMap")
        # Java exceptions arrive as subclasses of the Python class for java.lang.Throwable.
        self.java_error: type[Exception] = java.jclass("java.lang.Throwable")

    def array_class(self, spec: TensorSpec) -> Callable[[Any], JavaArray[Any]]:
        cls = self._arrays.get(spec.dtype)
        if cls is None:
            raise ModelError(f"{spec.name}: {spec.dtype} tensors cannot cross to Java here")
        return cls  # type: ignore[no-any-return]

    def to_java(self, spec: TensorSpec, flat: Array) -> JavaArray[Any]:
        return self.array_class(spec)(flat)  # one copy: the buffer fast path

    def new_map(self) -> Map[str, Object]:
        return self._new_map()

    @staticmethod
    def from_java(array: JavaArray[Any], spec: TensorSpec, shape: tuple[int, ...]) -> Array:
        view = np.frombuffer(array, dtype=np.dtype(spec.dtype))  # type: ignore[call-overload]
        return np.array(view.reshape(shape), copy=True)


def _check(spec: TensorSpec, value: Any, where: str) -> Array:
    """``value`` as the C-ordered array the signature takes (shape checked, dtype exact)."""
    array = np.asarray(value)
    want = spec.shape
    if array.shape != want and -1 not in want and array.size == math.prod(want):
        array = array.reshape(want)  # e.g. labels [B] for a [B, 1] input, lr for a [1] input
    fits = len(array.shape) == len(want) and all(
        w in (-1, a) for w, a in zip(want, array.shape, strict=True)
    )
    if not fits:
        raise ModelError(f"{where}.{spec.name}: shape {array.shape} does not fit {want}")
    dtype = np.dtype(spec.dtype)
    if array.dtype != dtype:
        if dtype.kind in "iu" and array.dtype.kind == "f":
            raise ModelError(f"{where}.{spec.name}: integer input, got {array.dtype}")
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


class JavaTrainer(ManifestTrainer):
    """A `TrainerBackend` over a Java object with `JavaTrainerObject`'s shape.

    ``java`` is Chaquopy's ``java`` module, imported when first needed (so this module
    imports anywhere); tests pass a stand-in with ``jarray``, ``jfloat``, ``jint``, ``jclass``.
    """

    def __init__(
        self,
        trainer: JavaTrainerObject,
        manifest: Manifest,
        *,
        momentum: float = 0.0,
        java: ModuleType | None = None,
    ) -> None:
        super().__init__(manifest, momentum=momentum)
        self._trainer = trainer
        self._java = _Marshal(java if java is not None else importlib.import_module("java"))

    def close(self) -> None:
        """Close the Java trainer, which closes its LiteRT ``Interpreter`` and frees its memory."""
        self._trainer.close()

    # ------------------------------------------------------------------ signatures
    def _run(
        self, key: str, values: Mapping[str, Any], *, failure: type[ModelError]
    ) -> dict[str, Array]:
        """Check every input, run ``key`` on the Java side, return its outputs as numpy."""
        sig = self._manifest.signature(key)
        if not sig.inputs:
            raise ModelError(f"{key} takes no inputs; Java's runSignature cannot run it")
        if set(values) != {t.name for t in sig.inputs}:
            names = sorted(t.name for t in sig.inputs)
            raise ModelError(f"{key} takes {names}, got {sorted(values)}")
        checked = {t.name: _check(t, values[t.name], key) for t in sig.inputs}
        # A dynamic (-1) leading dimension of an output follows that of the inputs (infer's
        # batch); hyperparameters of shape [1] say nothing about it.
        dynamic = [checked[t.name].shape[0] for t in sig.inputs if t.shape[:1] == (-1,)]
        batch = dynamic[0] if dynamic else 1
        inputs, outputs = self._java.new_map(), self._java.new_map()
        for spec in sig.inputs:
            inputs.put(spec.name, self._java.to_java(spec, checked[spec.name].reshape(-1)))
        shapes: dict[str, tuple[int, ...]] = {}
        arrays: dict[str, JavaArray[Any]] = {}
        for spec in sig.outputs:
            shapes[spec.name] = tuple(batch if d == -1 else d for d in spec.shape)
            arrays[spec.name] = self._java.array_class(spec)(max(1, math.prod(shapes[spec.name])))
            outputs.put(spec.name, arrays[spec.name])
        try:
            self._trainer.runSignature(inputs, outputs, key)
        except self._java.java_error as exc:
            raise failure(f"{key} failed in the Java trainer: {exc}") from exc
        return {
            spec.name: self._java.from_java(arrays[spec.name], spec, shapes[spec.name])
            for spec in sig.outputs
        }

    def train_step(self, x: Array, y: Array, lr: float, mu: float | None = None) -> float:
        lr, mu = self._hyperparameters(lr, mu)
        values: dict[str, Any] = {"x": x, "y": y, "lr": lr}
        if mu is not None:
            values["mu"] = mu
        if self._momentum is not None:
            values["momentum"] = self._momentum
        out = self._run("train", values, failure=TrainStepFailed)
        return float(out["loss"].reshape(-1)[0])

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        out = self._run("evaluate", {"x": x, "y": y}, failure=ModelError)
        return float(out["loss"].reshape(-1)[0]), int(out["correct"].reshape(-1)[0])

    def infer(self, x: Array) -> Array:
        return self._run("infer", {"x": x}, failure=ModelError)["logits"]

    def get_weights(self) -> list[Array]:
        if READ_WEIGHTS not in self._manifest.signatures:
            raise ModelError(
                f"the model has no {READ_WEIGHTS} signature (exported by an older fedrt), and the "
                "Java trainer cannot run get_weights, which takes no inputs; re-export the model "
                f"with this fedrt version ({__version__}), whose `fedrt export` adds it"
            )
        out = self._run(READ_WEIGHTS, {READ_WEIGHTS_INPUT.name: [0.0]}, failure=ModelError)
        return [out[w.name] for w in self._manifest.weights]

    def set_weights(self, weights: Sequence[Array]) -> None:
        specs = self._manifest.weights
        if len(weights) != len(specs):
            raise ModelError(f"expected {len(specs)} weight tensors, got {len(weights)}")
        values: dict[str, Any] = {}
        for spec, w in zip(specs, weights, strict=True):
            array = np.asarray(w)
            if array.shape != spec.shape:
                raise ModelError(f"set_weights: {spec.name} is {array.shape}, not {spec.shape}")
            if not np.all(np.isfinite(array)):
                raise ModelError(f"set_weights: {spec.name} has non-finite values")
            values[spec.name] = array
        self._run("set_weights", values, failure=ModelError)


def java_trainer_factory(
    open_trainer: Callable[[str], JavaTrainerObject],
    *,
    momentum: float = 0.0,
    java: ModuleType | None = None,
) -> Callable[[Path, Manifest], TrainerBackend]:
    """A ``Device`` trainer factory: each round's verified model file goes to ``open_trainer``.

    In an app: ``java_trainer_factory(jclass("org.fedrt.bridge.LiteRtTrainer"))``.
    """

    def make(path: Path, manifest: Manifest) -> TrainerBackend:
        return JavaTrainer(open_trainer(str(path)), manifest, momentum=momentum, java=java)

    return make
