"""SCAFFOLD's variate scale: one value that devices and the coordinator derive alike."""

from __future__ import annotations

import pytest

from fedrt.protocol.round_plan import TrainingConfig
from fedrt.protocol.scaffold import variate_scale


def test_the_scale_is_the_learning_rate_times_the_epochs() -> None:
    assert variate_scale(TrainingConfig(learning_rate=0.1, epochs=5)) == pytest.approx(0.5)
    assert variate_scale(TrainingConfig(learning_rate=0.02)) == pytest.approx(0.02)
