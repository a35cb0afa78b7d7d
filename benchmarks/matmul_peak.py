"""LiteRT's best matmul rate on this machine: the arithmetic ceiling of a train step.

``fedrt bench device`` divides a train graph's matmul/convolution FLOPs
(``fedrt.model_export.signature_flops``) by this rate: no arrangement of that graph runs a
step in less time. Both operands of the probe are inputs, as a training graph's weights are
variables, so XNNPACK packs the second operand on every call as it does there. The two
children run through ``fedrt.benchmarks.device``'s entry point (kinds ``probe-export``, with
TensorFlow, and ``peak``, LiteRT only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_MNK = (1024, 1024, 1024)


def child_probe_export(path: str) -> dict[str, Any]:
    import tensorflow as tf

    m, k, n = PROBE_MNK
    spec = [tf.TensorSpec([1, m, k], tf.float32), tf.TensorSpec([1, k, n], tf.float32)]
    product = tf.function(tf.matmul, input_signature=spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [product.get_concrete_function()], product
    )
    Path(path).write_bytes(converter.convert())
    return {"probe": path}


def child_peak(path: str, threads: int) -> dict[str, Any]:
    """The best rate of LiteRT's matmul here: the arithmetic ceiling of a train step."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    m, k, n = PROBE_MNK
    interpreter = Interpreter(
        model_path=path, num_threads=threads, experimental_default_delegate_latest_features=True
    )
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], rng.random(detail["shape"], dtype=np.float32))
    best = float("inf")
    for round_ in range(25):
        start = time.perf_counter()
        interpreter.invoke()
        if round_ >= 3:  # warm-up: weight packing buffers, thread pool
            best = min(best, time.perf_counter() - start)
    return {"matmul_gflops": 2 * m * k * n / best / 1e9, "shape": [m, k, n]}


def measure_peak(threads: int, work: Path, child: Callable[[list[str]], dict[str, Any]]) -> float:
    """GFLOP/s: the best of 3 LiteRT processes (other load only ever slows one down)."""
    probe = str(work / "matmul_probe.tflite")
    child(["probe-export", probe])
    return max(float(child(["peak", probe, str(threads)])["matmul_gflops"]) for _ in range(3))
