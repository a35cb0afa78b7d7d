"""Trainer backends: the pluggable ABC and the LiteRT one driving `fedrt export` signatures."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.sdk.errors import ModelError, TrainStepFailed
from fedrt.sdk.interpreter import InterpreterChoice, resolve_interpreter

__all__ = ["REQUIRED_SIGNATURES", "LiteRtTrainer", "TensorSpec", "TrainerBackend"]

REQUIRED_SIGNATURES = ("train", "evaluate", "infer", "get_weights", "set_weights")

Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """Name, static shape and dtype of one signature input or weight tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


class TrainerBackend(ABC):
    """What the scheduler needs from a model; Android plugs in a Java LiteRT backend here.

    Weights are lists in the manifest's order. A backend must leave its weights untouched
    when it rejects an argument; after `TrainStepFailed` they may be partly updated and the
    caller restores them with `set_weights` from a copy taken by `get_weights`.
    """

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """The static batch size of ``train`` and ``evaluate``."""

    @property
    @abstractmethod
    def x_spec(self) -> TensorSpec:
        """The ``train`` input ``x`` (shape includes the batch dimension)."""

    @property
    @abstractmethod
    def y_spec(self) -> TensorSpec:
        """The ``train`` input ``y`` (shape includes the batch dimension)."""

    @property
    @abstractmethod
    def weight_specs(self) -> tuple[TensorSpec, ...]:
        """The weight tensors in manifest order."""

    @property
    @abstractmethod
    def supports_mu(self) -> bool:
        """Whether ``train`` takes a FedProx proximal weight ``mu``."""

    @abstractmethod
    def train_step(self, x: Array, y: Array, lr: float, mu: float | None = None) -> float:
        """Run one SGD step on one static batch and return its loss."""

    @abstractmethod
    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        """Return (loss, number of correct predictions) on one static batch."""

    @abstractmethod
    def infer(self, x: Array) -> Array:
        """Return the logits for ``x``."""

    @abstractmethod
    def get_weights(self) -> list[Array]:
        """Return copies of the weights in manifest order."""

    @abstractmethod
    def set_weights(self, weights: Sequence[Array]) -> None:
        """Replace the weights (manifest order); also the FedProx anchor of the model."""


def _spec(name: str, detail: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=name,
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
    )


class LiteRtTrainer(TrainerBackend):
    """Runs the train/evaluate/infer/get_weights/set_weights signatures on a LiteRT interpreter."""

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        weight_names: Sequence[str] | None = None,
        num_threads: int | None = None,
        interpreter: InterpreterChoice | None = None,
    ) -> None:
        choice = interpreter if interpreter is not None else resolve_interpreter()
        try:
            if isinstance(model, bytes):
                interp = choice.interpreter_cls(model_content=model, num_threads=num_threads)
            else:
                interp = choice.interpreter_cls(model_path=str(model), num_threads=num_threads)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load the model into {choice.package}: {exc}") from exc
        signatures: Mapping[str, Any] = interp.get_signature_list()
        missing = [s for s in REQUIRED_SIGNATURES if s not in signatures]
        if missing:
            raise ModelError(
                f"model lacks signature(s) {', '.join(missing)}; "
                f"found {', '.join(sorted(signatures)) or 'none'} (export it with `fedrt export`)"
            )
        self._runners = {name: interp.get_signature_runner(name) for name in REQUIRED_SIGNATURES}
        self._interpreter = interp
        self.interpreter_package = choice.package

        train_in = self._runners["train"].get_input_details()
        for needed in ("x", "y", "lr"):
            if needed not in train_in:
                raise ModelError(f"train signature lacks input {needed!r}")
        self._x = _spec("x", train_in["x"])
        self._y = _spec("y", train_in["y"])
        self._lr = _spec("lr", train_in["lr"])
        self._mu = _spec("mu", train_in["mu"]) if "mu" in train_in else None
        extra = set(train_in) - {"x", "y", "lr", "mu"}
        if extra:
            raise ModelError(f"train signature has unexpected inputs {sorted(extra)}")
        if not self._x.shape or self._x.shape[0] < 1:
            raise ModelError(f"train input x needs a static batch dimension, got {self._x.shape}")
        self._weights = self._weight_specs(weight_names)

    def _weight_specs(self, weight_names: Sequence[str] | None) -> tuple[TensorSpec, ...]:
        set_in = self._runners["set_weights"].get_input_details()
        get_out = self._runners["get_weights"].get_output_details()
        if set(set_in) != set(get_out):
            raise ModelError(
                "get_weights outputs and set_weights inputs differ: "
                f"{sorted(set(get_out) ^ set(set_in))}"
            )
        names = list(weight_names) if weight_names is not None else list(set_in)
        if sorted(names) != sorted(set_in):
            raise ModelError(
                f"weight names {names} do not match the model's weight tensors {sorted(set_in)}"
            )
        return tuple(_spec(n, set_in[n]) for n in names)

    @property
    def batch_size(self) -> int:
        return self._x.shape[0]

    @property
    def x_spec(self) -> TensorSpec:
        return self._x

    @property
    def y_spec(self) -> TensorSpec:
        return self._y

    @property
    def weight_specs(self) -> tuple[TensorSpec, ...]:
        return self._weights

    @property
    def supports_mu(self) -> bool:
        return self._mu is not None

    @staticmethod
    def _fit(value: Any, spec: TensorSpec) -> Array:
        arr = np.asarray(value)
        if tuple(arr.shape) != spec.shape:
            raise ModelError(
                f"input {spec.name} has shape {arr.shape}, the model needs {spec.shape}"
            )
        if arr.dtype != spec.dtype:
            if not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                raise ModelError(
                    f"input {spec.name} has dtype {arr.dtype}, the model needs {spec.dtype}"
                )
            arr = arr.astype(spec.dtype)
        return np.ascontiguousarray(arr)

    @staticmethod
    def _scalar(value: float, spec: TensorSpec) -> Array:
        if not math.isfinite(value):
            raise ModelError(f"{spec.name} must be finite, got {value}")
        # Scalar hyperparameters are shape [1] in exported models: a 0-d input segfaults
        # LiteRT 2.3 on aarch64; honour whatever shape the model declares.
        return np.full(spec.shape, value, dtype=spec.dtype)

    def train_step(self, x: Array, y: Array, lr: float, mu: float | None = None) -> float:
        inputs = {
            "x": self._fit(x, self._x),
            "y": self._fit(y, self._y),
            "lr": self._scalar(lr, self._lr),
        }
        if self._mu is not None:
            inputs["mu"] = self._scalar(0.0 if mu is None else mu, self._mu)
        elif mu:
            raise ModelError("this model has no FedProx input mu; export it with one")
        try:
            out = self._runners["train"](**inputs)
        except (RuntimeError, ValueError) as exc:
            raise TrainStepFailed(f"train step failed: {exc}") from exc
        return float(np.asarray(out["loss"]).reshape(-1)[0])

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        inputs = {"x": self._fit(x, self._x), "y": self._fit(y, self._y)}
        try:
            out = self._runners["evaluate"](**inputs)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"evaluate failed: {exc}") from exc
        loss = float(np.asarray(out["loss"]).reshape(-1)[0])
        correct = int(np.rint(np.asarray(out["correct"]).reshape(-1)[0]))
        return loss, correct

    def infer(self, x: Array) -> Array:
        arr = np.asarray(x)
        if arr.dtype != self._x.dtype:
            arr = arr.astype(self._x.dtype)
        if arr.shape[1:] != self._x.shape[1:]:
            raise ModelError(
                f"infer input has shape {arr.shape}, examples need {self._x.shape[1:]}"
            )
        runner = self._runners["infer"]
        (name,) = runner.get_input_details()
        try:
            out = runner(**{name: np.ascontiguousarray(arr)})
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"infer failed on shape {arr.shape}: {exc}") from exc
        return np.asarray(out["logits"])

    def get_weights(self) -> list[Array]:
        try:
            out = self._runners["get_weights"]()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"get_weights failed: {exc}") from exc
        return [np.array(out[s.name], copy=True) for s in self._weights]

    def set_weights(self, weights: Sequence[Array]) -> None:
        if len(weights) != len(self._weights):
            raise ModelError(f"expected {len(self._weights)} weight tensors, got {len(weights)}")
        # Validate everything first so a bad list changes nothing.
        inputs = {s.name: self._fit(w, s) for s, w in zip(self._weights, weights, strict=True)}
        try:
            self._runners["set_weights"](**inputs)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"set_weights failed: {exc}") from exc
