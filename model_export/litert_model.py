"""Minimal device-side runner: opens an exported model with LiteRT and calls its signatures.

Imports numpy and ``ai_edge_litert`` only (never tensorflow): the SDK and the tests train with
it. Inputs are checked against the signature before the interpreter sees them, so a bad array
is a ``RuntimeInputError`` and changes no weight. A ``train`` step that fails inside the
interpreter may have updated some weights already; ``rollback_on_error`` restores them.

Stable API: ``LiteRTModel(model_bytes_or_path, manifest=None, *, num_threads=None,
latest_delegate_features=True, interpreter_cls=None)``, ``LiteRTModel.open(directory)``,
``train(x, y, lr, *, mu=None, momentum=None, correction=None) -> float``, ``evaluate(x, y) -> (loss,
correct)``, ``infer(x) -> logits``, ``get_weights() -> {name: array}`` (manifest order),
``set_weights({name: array})``, ``rollback_on_error()``, ``batch_size``, ``signatures``,
``weight_names``, ``input_shape(signature, name)``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import MissingSignature, ModelFileError, RuntimeInputError
from fedrt.model_export.inspect import model_signatures
from fedrt.model_export.manifest import CORRECTION_INPUT, REQUIRED_SIGNATURES, Manifest

Array = npt.NDArray[Any]
# LiteRT 2.3 prints this "ERROR" whenever the latest XNNPACK features are asked for.
_XNNPACK_NOTICE = b"TFLITE_XNNPACK_DELEGATE_FLAG_ENABLE_SUBGRAPH_RESHAPING is deprecated"


_LATEST_FLAG = "experimental_default_delegate_latest_features"


def _accepts(cls: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


class _StderrFilter:
    """One fd-2 redirect shared by every thread inside ``_drop_stderr_line``.

    Threads load models concurrently (a device process runs hundreds of devices); if each
    swapped fd 2 on its own, one finishing after another would put the other's temp file
    back as fd 2 for good. The first thread in redirects, the last one out restores.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = -1
        self._capture: Any = None
        self._notices: set[bytes] = set()

    def enter(self, notice: bytes) -> bool:
        with self._lock:
            if self._users == 0:
                try:
                    saved = os.dup(2)
                except OSError:  # no usable fd 2 (e.g. some embedded hosts): nothing to filter
                    return False
                # Closed by the last thread out (leave), not here.
                self._saved = saved
                self._capture = tempfile.TemporaryFile()  # noqa: SIM115
                os.dup2(self._capture.fileno(), 2)
            self._users += 1
            self._notices.add(notice)
            return True

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            notices, self._notices = self._notices, set()
            capture, self._capture = self._capture, None
            os.dup2(self._saved, 2)
            os.close(self._saved)
            with capture:
                capture.seek(0)
                lines = capture.read().splitlines(True)
            kept = [line for line in lines if not any(n in line for n in notices)]
            if kept:
                os.write(2, b"".join(kept))


_STDERR = _StderrFilter()


@contextlib.contextmanager
def _drop_stderr_line(notice: bytes) -> Iterator[None]:
    """Hide one known, harmless native log line; every other stderr line is passed on."""
    if not _STDERR.enter(notice):
        yield
        return
    try:
        yield
    finally:
        _STDERR.leave()


FloatArray = npt.NDArray[np.float32]


class LiteRTModel:
    """An exported fedrt model loaded in ``ai_edge_litert.interpreter.Interpreter``."""

    def __init__(
        self,
        model: bytes | str | Path,
        manifest: Manifest | None = None,
        *,
        num_threads: int | None = None,
        latest_delegate_features: bool = True,
        interpreter_cls: Callable[..., Any] | None = None,
    ) -> None:
        """``interpreter_cls`` replaces ``ai_edge_litert.interpreter.Interpreter`` with a
        compatible class (e.g. ``tflite_runtime.interpreter.Interpreter`` on armv7)."""
        if isinstance(model, bytes):
            data = model
        else:
            try:
                data = Path(model).read_bytes()
            except OSError as exc:
                raise ModelFileError(f"cannot read {model}: {exc.strerror}") from None
        # Typed errors for a truncated or foreign file, or one without the signatures.
        signatures = model_signatures(data, REQUIRED_SIGNATURES)
        if interpreter_cls is None:
            from ai_edge_litert.interpreter import Interpreter

            interpreter_cls = Interpreter
        options: dict[str, Any] = {"model_content": data, "num_threads": num_threads}
        # XNNPACK's latest operators include matmuls with variable (non-constant) weights:
        # measured 1.6x faster train steps on the zoo CNN. Older interpreters lack the flag.
        if latest_delegate_features and _accepts(interpreter_cls, _LATEST_FLAG):
            options[_LATEST_FLAG] = True
        try:
            with _drop_stderr_line(_XNNPACK_NOTICE):
                self._interpreter = interpreter_cls(**options)
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"LiteRT cannot load the model: {exc}") from None
        self.manifest = manifest
        self._runners = {n: self._interpreter.get_signature_runner(n) for n in signatures}
        self._inputs = {n: r.get_input_details() for n, r in self._runners.items()}
        if manifest is not None:
            self.weight_names = manifest.weight_names
        else:
            self.weight_names = tuple(sorted(self._inputs["set_weights"]))
        if sorted(self.weight_names) != sorted(self._inputs["set_weights"]):
            raise MissingSignature(["set_weights inputs matching the manifest"], self.weight_names)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        num_threads: int | None = None,
        latest_delegate_features: bool = True,
        interpreter_cls: Callable[..., Any] | None = None,
    ) -> LiteRTModel:
        """Load ``directory``'s manifest.json, check the model's sha256, open the model."""
        manifest = Manifest.load(directory)
        path = manifest.verify_model_file(directory)
        return cls(
            path,
            manifest,
            num_threads=num_threads,
            latest_delegate_features=latest_delegate_features,
            interpreter_cls=interpreter_cls,
        )

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(sorted(self._runners))

    def input_shape(self, signature: str, name: str) -> tuple[int, ...]:
        """Static shape of an input (-1 where the signature accepts any size)."""
        detail = self._inputs[signature][name]
        return tuple(int(d) for d in detail["shape_signature"])

    @property
    def batch_size(self) -> int:
        return self.input_shape("train", "x")[0]

    def _prepare(self, signature: str, name: str, value: Any) -> Array:
        detail = self._inputs[signature].get(name)
        if detail is None:
            raise RuntimeInputError(f"{signature} has no input {name!r}")
        array = np.asarray(value)
        want = tuple(int(d) for d in detail["shape_signature"])
        if array.shape != want and array.size == int(np.prod(want)) and -1 not in want:
            array = array.reshape(want)  # e.g. labels [B] for a [B, 1] output
        fits = len(array.shape) == len(want) and all(
            w in (-1, a) for w, a in zip(want, array.shape, strict=True)
        )
        if not fits:
            raise RuntimeInputError(f"{signature}.{name}: shape {array.shape} does not fit {want}")
        dtype = np.dtype(detail["dtype"])
        if array.dtype != dtype:
            if dtype.kind in "iu" and array.dtype.kind == "f":
                raise RuntimeInputError(f"{signature}.{name}: integer input, got {array.dtype}")
            array = array.astype(dtype)
        return np.ascontiguousarray(array)

    def _call(self, signature: str, **inputs: Any) -> dict[str, Array]:
        expected = set(self._inputs[signature])
        if set(inputs) != expected:
            raise RuntimeInputError(f"{signature} takes {sorted(expected)}, got {sorted(inputs)}")
        prepared = {k: self._prepare(signature, k, v) for k, v in inputs.items()}
        result: dict[str, Array] = self._runners[signature](**prepared)
        return result

    @staticmethod
    def _hyper(value: float) -> FloatArray:
        # Shape [1]: 0-d hyperparameters crash LiteRT 2.3 on aarch64.
        return np.asarray([value], dtype=np.float32)

    def train(
        self,
        x: Array,
        y: Array,
        lr: float,
        *,
        mu: float | None = None,
        momentum: float | None = None,
        correction: Array | None = None,
    ) -> float:
        """One SGD step on one batch of exactly ``batch_size`` examples; returns the loss.
        ``correction``: SCAFFOLD's flat c - c_i (models exported with ``--scaffold``)."""
        inputs: dict[str, Any] = {"x": x, "y": y, "lr": self._hyper(lr)}
        if mu is not None:
            inputs["mu"] = self._hyper(mu)
        if momentum is not None:
            inputs["momentum"] = self._hyper(momentum)
        if correction is not None:
            inputs[CORRECTION_INPUT] = correction
        return float(self._call("train", **inputs)["loss"])

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        """Loss and number of correct predictions on one batch of ``batch_size`` examples."""
        out = self._call("evaluate", x=x, y=y)
        return float(out["loss"]), int(out["correct"])

    def infer(self, x: Array) -> FloatArray:
        out: FloatArray = self._call("infer", x=x)["logits"]
        return np.array(out, dtype=np.float32)

    def get_weights(self) -> dict[str, FloatArray]:
        """Copies of the weights, in manifest order."""
        out = self._call("get_weights")
        return {n: np.array(out[n], dtype=np.float32) for n in self.weight_names}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Replace every weight (also FedProx's anchor; momentum restarts from zero)."""
        if set(weights) != set(self.weight_names):
            missing = sorted(set(self.weight_names) - set(weights))
            extra = sorted(set(weights) - set(self.weight_names))
            raise RuntimeInputError(f"set_weights: missing {missing}, unexpected {extra}")
        prepared = {}
        for name in self.weight_names:
            array = np.asarray(weights[name])
            if not np.all(np.isfinite(array)):
                raise RuntimeInputError(f"set_weights: {name} has non-finite values")
            want = self.input_shape("set_weights", name)
            if array.shape != want:
                raise RuntimeInputError(f"set_weights: {name} has shape {array.shape}, not {want}")
            prepared[name] = np.ascontiguousarray(array, dtype=np.float32)
        self._runners["set_weights"](**prepared)

    @contextlib.contextmanager
    def rollback_on_error(self) -> Iterator[dict[str, FloatArray]]:
        """Snapshot the weights; put them back if the block raises."""
        saved = self.get_weights()
        try:
            yield saved
        except BaseException:
            self.set_weights(saved)
            raise
