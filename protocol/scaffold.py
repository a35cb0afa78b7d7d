"""SCAFFOLD's update layout, shared by devices and the coordinator: [delta, s * c_i+].

A device of a SCAFFOLD round sends its model delta y_i - x followed by its new control
variate c_i+ multiplied by ``variate_scale`` s, in one vector (SecAgg+ sums both halves at
once; the server's c is a running mean of them, ``strategies.scaffold``). s = learning_rate
* epochs puts the variate half near the model delta's size (s * c_i+ is about the sum of
the epochs' mean gradients times lr): it shares the round's clip and quantization range,
and the quantization noise c picks up is divided by s.
"""

from __future__ import annotations

from fedrt.protocol.round_plan import TrainingConfig


def variate_scale(training: TrainingConfig) -> float:
    """s: what a device multiplies its variate update by, and the server divides by."""
    return float(training.learning_rate) * training.epochs


__all__ = ["variate_scale"]
