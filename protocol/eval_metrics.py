"""The metric names a device's ``EvalReport`` carries: SUMS over its evaluated examples.

``loss`` and ``accuracy`` (correct predictions) are the global model's on the device's
held-out examples. A device that personalizes (fine-tuning, personal layers) adds the same
sums for its personalized model under ``personalized_loss`` / ``personalized_accuracy``;
the coordinator turns them into ``personalized_accuracy`` figures (``coordinator.rounds.
eval_figures``). Names are free text on the wire, so adding one changes no message format.
"""

from __future__ import annotations

__all__ = ["ACCURACY", "LOSS", "PERSONALIZED_ACCURACY", "PERSONALIZED_LOSS"]

LOSS = "loss"
ACCURACY = "accuracy"
PERSONALIZED_LOSS = "personalized_loss"
PERSONALIZED_ACCURACY = "personalized_accuracy"
