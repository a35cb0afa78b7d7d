"""``fedrt bench device``'s children: one back-end's train step timed, with its peak RSS."""

from __future__ import annotations

import sys
import time
from typing import Any

from fedrt.benchmarks.rss import peak_rss_mib

__all__ = ["HEAVY", "child_litert", "child_tensorflow"]

HEAVY = ("tensorflow", "keras", "tf_keras")


def _batch(shape: list[int], dtype: str, classes: int, loss: str) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    if dtype == "int32":
        x = rng.integers(0, classes, size=shape).astype(np.int32)
    else:
        x = rng.normal(size=shape).astype(np.float32)
    if loss == "sparse_ce":
        y = rng.integers(0, classes, size=shape[:1]).astype(np.int32)
    else:
        y = rng.integers(0, 2, size=(shape[0], 1)).astype(np.float32)
    return x, y


def _timed(step: Any, warmup: int, steps: int) -> tuple[float, float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    return sum(times) / len(times) * 1e3, times[len(times) // 2] * 1e3


def child_litert(directory: str, warmup: int, steps: int, threads: int) -> dict[str, Any]:
    class _Block:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{name} is blocked in the LiteRT benchmark process")

    sys.meta_path.insert(0, _Block())
    from fedrt.model_export import LiteRTModel

    model = LiteRTModel.open(directory, num_threads=threads)
    manifest = model.manifest
    assert manifest is not None
    x_shape = list(model.input_shape("train", "x"))
    x, y = _batch(x_shape, manifest.input.dtype, manifest.output.shape[-1], manifest.loss)
    mean, median = _timed(lambda: model.train(x, y, 0.01), warmup, steps)
    return {"backend": "litert", "ms_mean": mean, "ms_median": median, "rss_mib": peak_rss_mib()}


def child_tensorflow(
    directory: str, spec: str, warmup: int, steps: int, threads: int
) -> dict[str, Any]:
    import tensorflow as tf

    from fedrt.model_export import Manifest
    from fedrt.model_export.cli import load_spec

    # Both pools: with only intra-op set, independent ops can still run concurrently on
    # the default (one per core) inter-op pool, so "--threads 1" would not be one thread.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    manifest = Manifest.load(directory)
    model = load_spec(spec, manifest.input.shape, manifest.output.shape[-1])
    x_np, y_np = _batch(
        [manifest.batch_size, *manifest.input.shape],
        manifest.input.dtype,
        manifest.output.shape[-1],
        manifest.loss,
    )
    x, y = tf.constant(x_np), tf.constant(y_np)
    import keras

    loss_fn = {
        "sparse_ce": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "binary_ce": keras.losses.BinaryCrossentropy(from_logits=True),
        "mse": keras.losses.MeanSquaredError(),
    }[manifest.loss]
    variables = model.trainable_variables

    def sgd_step() -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        for var, grad in zip(variables, tape.gradient(loss, variables), strict=True):
            var.assign_sub(0.01 * tf.convert_to_tensor(grad))
        return loss

    step = tf.function(sgd_step)
    mean, median = _timed(lambda: step().numpy(), warmup, steps)
    return {
        "backend": "tensorflow", "ms_mean": mean, "ms_median": median, "rss_mib": peak_rss_mib()
    }  # fmt: skip
