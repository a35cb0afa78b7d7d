"""Trainer backends: the pluggable ABC, and the LiteRT one over `fedrt export`'s device runner."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import ExportError, RuntimeInputError
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import CORRECTION_INPUT, Manifest, TensorSpec
from fedrt.sdk.errors import ModelError, TrainStepFailed
from fedrt.sdk.interpreter import InterpreterChoice, resolve_interpreter

__all__ = ["LiteRtTrainer", "ManifestTrainer", "TensorSpec", "TrainerBackend"]

Array = npt.NDArray[Any]


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

    def use_momentum(self, momentum: float) -> None:
        """Train from now on with this heavy-ball momentum (the plan's); ``ModelError`` when
        it is not 0 and the model takes none (rather than training without it)."""
        if momentum:
            raise ModelError("this backend trains without momentum")

    def use_correction(self, correction: Array | None) -> None:
        """Add SCAFFOLD's flat c - c_i to every gradient from now on (None: stop);
        ``ModelError`` when the model takes none (``fedrt export --scaffold``)."""
        if correction is not None:
            raise ModelError("this backend trains without a SCAFFOLD correction")

    def close(self) -> None:  # noqa: B027 - optional: a backend with nothing to free keeps it
        """Free the model's memory now (interpreter, tensors); the backend is unusable after.

        A device closes its trainer when a round's local work ends, so the update pipeline
        that follows reuses that memory instead of adding to the process's peak.
        """


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ModelError(f"{name} must be finite, got {value}")
    return float(value)


def _load(
    path: Path, manifest: Manifest, choice: InterpreterChoice, num_threads: int | None
) -> LiteRTModel:
    # Either package's Interpreter has the same constructor and signature-runner API.
    kwargs: dict[str, Any] = {"num_threads": num_threads, "interpreter_cls": choice.interpreter_cls}
    try:
        return LiteRTModel(path, manifest, **kwargs)
    except ExportError as exc:
        raise ModelError(f"cannot open {path}: {exc}") from exc


class ManifestTrainer(TrainerBackend):
    """The part of a backend that the manifest decides: specs and the train hyperparameters.

    ``momentum`` is passed to models exported with ``--momentum`` on every step; ``mu`` is 0
    for FedProx models when the plan gives none.
    """

    def __init__(self, manifest: Manifest, *, momentum: float = 0.0) -> None:
        self._manifest = manifest
        train = manifest.signature("train")
        x, y = train.input("x"), train.input("y")
        if x is None or y is None or train.input("lr") is None:
            raise ModelError("the train signature needs inputs x, y and lr")
        self._x, self._y = x, y
        self._has_mu = train.input("mu") is not None
        self._momentum = (
            _finite("momentum", momentum) if train.input("momentum") is not None else None
        )
        self._correction_spec = train.input(CORRECTION_INPUT)
        self._correction: Array | None = None

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def batch_size(self) -> int:
        return self._manifest.batch_size

    @property
    def x_spec(self) -> TensorSpec:
        return self._x

    @property
    def y_spec(self) -> TensorSpec:
        return self._y

    @property
    def weight_specs(self) -> tuple[TensorSpec, ...]:
        return self._manifest.weights

    @property
    def supports_mu(self) -> bool:
        return self._has_mu

    def use_momentum(self, momentum: float) -> None:
        if self._momentum is None:
            if momentum:
                raise ModelError("this model has no momentum input; export it with --momentum")
            return
        self._momentum = _finite("momentum", momentum)

    def use_correction(self, correction: Array | None) -> None:
        if correction is None:
            self._correction = None
            return
        spec = self._correction_spec
        if spec is None:
            raise ModelError(
                "this model has no SCAFFOLD correction input; export it with --scaffold"
            )
        if correction.shape != spec.shape or not np.all(np.isfinite(correction)):
            raise ModelError(f"the correction must be {spec.shape} finite values")
        self._correction = np.ascontiguousarray(correction, np.float32)

    def _hyperparameters(self, lr: float, mu: float | None) -> tuple[float, float | None]:
        """The step's (lr, mu) as the model takes them; `ModelError` for a value it cannot."""
        lr = _finite("lr", lr)
        if self._has_mu:
            return lr, _finite("mu", 0.0 if mu is None else mu)
        if mu:
            raise ModelError("this model has no FedProx input mu; export it with --fedprox")
        return lr, None


class LiteRtTrainer(ManifestTrainer):
    """A `TrainerBackend` over `fedrt.model_export.litert_model.LiteRTModel`."""

    def __init__(self, model: LiteRTModel, manifest: Manifest, *, momentum: float = 0.0) -> None:
        super().__init__(manifest, momentum=momentum)
        self._open: LiteRTModel | None = model

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        num_threads: int | None = None,
        momentum: float = 0.0,
        interpreter: InterpreterChoice | None = None,
    ) -> LiteRtTrainer:
        """Open an export directory: manifest.json, then the model once its sha256 matches."""
        choice = interpreter if interpreter is not None else resolve_interpreter()
        try:
            manifest = Manifest.load(directory)
            path = manifest.verify_model_file(directory)
        except ExportError as exc:
            raise ModelError(str(exc)) from exc
        return cls(_load(path, manifest, choice, num_threads), manifest, momentum=momentum)

    @property
    def _model(self) -> LiteRTModel:
        if self._open is None:
            raise ModelError("this trainer was closed")
        return self._open

    def close(self) -> None:
        self._open = None

    def train_step(self, x: Array, y: Array, lr: float, mu: float | None = None) -> float:
        lr, mu = self._hyperparameters(lr, mu)
        try:
            loss = self._model.train(
                x, y, lr, mu=mu, momentum=self._momentum, correction=self._correction
            )
        except RuntimeInputError as exc:
            raise ModelError(str(exc)) from exc
        except (RuntimeError, ValueError) as exc:
            raise TrainStepFailed(f"train step failed: {exc}") from exc
        return loss

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        try:
            return self._model.evaluate(x, y)
        except RuntimeInputError as exc:
            raise ModelError(str(exc)) from exc
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"evaluate failed: {exc}") from exc

    def infer(self, x: Array) -> Array:
        try:
            return self._model.infer(x)
        except RuntimeInputError as exc:
            raise ModelError(str(exc)) from exc
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"infer failed: {exc}") from exc

    def get_weights(self) -> list[Array]:
        try:
            named = self._model.get_weights()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"get_weights failed: {exc}") from exc
        return [named[w.name] for w in self._manifest.weights]

    def set_weights(self, weights: Sequence[Array]) -> None:
        specs = self._manifest.weights
        if len(weights) != len(specs):
            raise ModelError(f"expected {len(specs)} weight tensors, got {len(weights)}")
        try:
            self._model.set_weights({s.name: w for s, w in zip(specs, weights, strict=True)})
        except RuntimeInputError as exc:
            raise ModelError(str(exc)) from exc
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"set_weights failed: {exc}") from exc
