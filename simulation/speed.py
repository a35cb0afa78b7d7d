"""Simulated device speeds (``--speed-spread``, ``--train-seconds``): slower, longer training."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.errors import UsageError
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest, TensorSpec
from fedrt.sdk.round_work import TrainerFactory
from fedrt.sdk.trainer import LiteRtTrainer, TrainerBackend

__all__ = ["SlowTrainer", "slow_trainer_factory", "slowdowns"]

Array = npt.NDArray[Any]

# Mixed into --seed so the speeds are drawn from a stream of their own: the partition, the
# traces and the devices' seeds stay what they were without --speed-spread.
_SPEED_STREAM = 0x5BEED


def slowdowns(devices: int, spread: float, seed: int) -> tuple[float, ...]:
    """Each device's training-time multiple, log-uniform over [1, ``spread``].

    Real fleets span more than 10x (an old phone against a new one, a Pi against a laptop),
    and log-uniform spreads them evenly over that ratio; 1 gives every device today's speed.
    """
    if not (math.isfinite(spread) and spread >= 1.0):
        raise UsageError(f"--speed-spread must be a finite number >= 1, got {spread}")
    if spread == 1.0:
        return (1.0,) * devices
    rng = np.random.default_rng((seed, _SPEED_STREAM))
    logs = rng.uniform(0.0, math.log(spread), size=devices)
    return tuple(float(m) for m in np.exp(logs))


class SlowTrainer(TrainerBackend):
    """A trainer whose every step takes ``multiple`` times as long as the wrapped one's, and
    whose local training takes at least ``base_seconds`` x ``multiple`` (one per training:
    the SDK opens a trainer for each round).

    After each real step it sleeps (multiple - 1) times that step's measured time; the first
    step sleeps instead until the training's floor is reached. The floor stands for a
    phone's on-device training time, which a model this small on a desktop core does not
    take (``--train-seconds``: a simulation assumption). The sleep is on the round's own
    training thread, so devices sharing a hub and network loop (scale mode) keep their MQTT
    traffic and SecAgg+ stages going; the slow device's report really comes later, and a
    sync round's training deadline cuts it as it would a slow phone.
    """

    def __init__(
        self,
        inner: TrainerBackend,
        multiple: float,
        *,
        base_seconds: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (math.isfinite(multiple) and multiple >= 1.0):
            raise UsageError(f"a slowdown multiple must be >= 1, got {multiple}")
        if not (math.isfinite(base_seconds) and base_seconds >= 0.0):
            raise UsageError(f"a training's base time must be >= 0 s, got {base_seconds}")
        self.inner = inner
        self.multiple = multiple
        self.floor_s = base_seconds * multiple
        self._stepped = False
        self._clock, self._sleep = clock, sleep

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    @property
    def x_spec(self) -> TensorSpec:
        return self.inner.x_spec

    @property
    def y_spec(self) -> TensorSpec:
        return self.inner.y_spec

    @property
    def weight_specs(self) -> tuple[TensorSpec, ...]:
        return self.inner.weight_specs

    @property
    def supports_mu(self) -> bool:
        return self.inner.supports_mu

    def train_step(self, x: Array, y: Array, lr: float, mu: float | None = None) -> float:
        start = self._clock()
        loss = self.inner.train_step(x, y, lr, mu)
        took = max(0.0, self._clock() - start)
        extra = (self.multiple - 1.0) * took
        if not self._stepped:  # the training's floor, once (a deadline is checked after it)
            self._stepped = True
            extra = max(extra, self.floor_s - took)
        # One step's sleep at a time: a cancelled round (checked between steps) or a
        # stopped device waits at most one slowed step, as with a real slow step.
        if extra > 0:
            self._sleep(extra)
        return loss

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        return self.inner.evaluate(x, y)

    def infer(self, x: Array) -> Array:
        return self.inner.infer(x)

    def get_weights(self) -> list[Array]:
        return self.inner.get_weights()

    def set_weights(self, weights: Sequence[Array]) -> None:
        self.inner.set_weights(weights)

    def use_momentum(self, momentum: float) -> None:
        self.inner.use_momentum(momentum)

    def use_correction(self, correction: Array | None) -> None:
        self.inner.use_correction(correction)

    def close(self) -> None:
        self.inner.close()


def slow_trainer_factory(
    multiple: float, *, base_seconds: float = 0.0, num_threads: int | None = 1
) -> TrainerFactory | None:
    """The device's trainer factory for ``multiple`` and a training's ``base_seconds``
    (None at 1 and 0: the SDK's own LiteRT one)."""
    if multiple <= 1.0 and base_seconds <= 0.0:
        return None

    def make(path: Path, manifest: Manifest) -> TrainerBackend:
        model = LiteRTModel(path, manifest, num_threads=num_threads)
        return SlowTrainer(LiteRtTrainer(model, manifest), multiple, base_seconds=base_seconds)

    return make
