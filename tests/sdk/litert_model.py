"""Builds a tiny softmax-regression training model in the `fedrt export` signature layout.

Test-only (imports TensorFlow): it stands in for `fedrt export` so the trainer is tested on a
real LiteRT interpreter. Run as a script it writes model.tflite to the path given.
"""

from __future__ import annotations

import sys
from pathlib import Path

BATCH = 4
FEATURES = 3
CLASSES = 2


def build_model_bytes(*, with_mu: bool = True) -> bytes:
    import tensorflow as tf

    class Softmax(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.fill([FEATURES, CLASSES], 0.1), name="w")
            self.b = tf.Variable(tf.zeros([CLASSES]), name="b")
            self.w0 = tf.Variable(tf.fill([FEATURES, CLASSES], 0.1), name="w0")
            self.b0 = tf.Variable(tf.zeros([CLASSES]), name="b0")

        def _loss(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            logits = tf.matmul(x, self.w) + self.b
            ce = -tf.reduce_sum(tf.one_hot(y, CLASSES) * tf.nn.log_softmax(logits), axis=1)
            return tf.reduce_mean(ce)

        def _train(
            self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor, mu: tf.Tensor
        ) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                loss = self._loss(x, y)
                prox = tf.reduce_sum(tf.square(self.w - self.w0)) + tf.reduce_sum(
                    tf.square(self.b - self.b0)
                )
                total = loss + 0.5 * mu[0] * prox
            gw, gb = tape.gradient(total, [self.w, self.b])
            self.w.assign_sub(lr[0] * gw)
            self.b.assign_sub(lr[0] * gb)
            return {"loss": loss}

    m = Softmax()
    spec_x = tf.TensorSpec([BATCH, FEATURES], tf.float32, name="x")
    spec_y = tf.TensorSpec([BATCH], tf.int32, name="y")
    spec_s = tf.TensorSpec([1], tf.float32)

    if with_mu:

        @tf.function(
            input_signature=[
                spec_x,
                spec_y,
                tf.TensorSpec([1], tf.float32, "lr"),
                tf.TensorSpec([1], tf.float32, "mu"),
            ]
        )
        def train(x, y, lr, mu):  # type: ignore[no-untyped-def]
            return m._train(x, y, lr, mu)
    else:

        @tf.function(input_signature=[spec_x, spec_y, tf.TensorSpec([1], tf.float32, "lr")])
        def train(x, y, lr):  # type: ignore[no-untyped-def]
            return m._train(x, y, lr, tf.zeros([1]))

    del spec_s

    @tf.function(input_signature=[spec_x, spec_y])
    def evaluate(x, y):  # type: ignore[no-untyped-def]
        logits = tf.matmul(x, m.w) + m.b
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.int32)
        )
        return {"loss": m._loss(x, y), "correct": correct}

    @tf.function(input_signature=[spec_x])
    def infer(x):  # type: ignore[no-untyped-def]
        return {"logits": tf.matmul(x, m.w) + m.b}

    @tf.function(input_signature=[])
    def get_weights():  # type: ignore[no-untyped-def]
        return {"dense_kernel": tf.identity(m.w), "dense_bias": tf.identity(m.b)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([FEATURES, CLASSES], tf.float32, "dense_kernel"),
            tf.TensorSpec([CLASSES], tf.float32, "dense_bias"),
        ]
    )
    def set_weights(dense_kernel, dense_bias):  # type: ignore[no-untyped-def]
        m.w.assign(dense_kernel)
        m.b.assign(dense_bias)
        m.w0.assign(dense_kernel)
        m.b0.assign(dense_bias)
        return {"done": tf.constant(0)}

    funcs = [
        train.get_concrete_function(),
        evaluate.get_concrete_function(),
        infer.get_concrete_function(),
        get_weights.get_concrete_function(),
        set_weights.get_concrete_function(),
    ]
    conv = tf.lite.TFLiteConverter.from_concrete_functions(funcs, m)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.experimental_enable_resource_variables = True
    return bytes(conv.convert())


if __name__ == "__main__":
    Path(sys.argv[1]).write_bytes(build_model_bytes(with_mu="--no-mu" not in sys.argv))
