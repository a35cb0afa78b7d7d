"""SCAFFOLD's update layout, shared by devices and the coordinator: [delta, s * delta_c].

A device of a SCAFFOLD round sends its model delta y_i - x followed by its control-variate
update c_i+ - c_i multiplied by ``variate_scale`` s, in one vector (SecAgg+ sums both
halves at once). s = learning_rate * epochs puts the variate half near the model delta's
size (s * delta_c ~ delta_y * epochs / K with K the local steps): it shares the round's
clip and quantization range, and the quantization noise c picks up, which c keeps summing
round after round, is divided by s. At s = learning_rate (the variate half then about one
step's size) 8-bit rounds left c mostly noise (fedrt simulate zoo:cnn dirichlet:0.1).
"""

from __future__ import annotations

from fedrt.protocol.round_plan import TrainingConfig


def variate_scale(training: TrainingConfig) -> float:
    """s: what a device multiplies its variate update by, and the server divides by."""
    return float(training.learning_rate) * training.epochs


__all__ = ["variate_scale"]
