"""What a federated evaluation round adds to a simulation's report row (issue 18)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrt.coordinator.rounds.eval_figures import (
    ACCURACY_STD,
    EVAL_DEVICES,
    FEDERATED_ACCURACY,
    PERSONALIZED_ACCURACY_FIGURE,
    WORST_DECILE_ACCURACY,
)

__all__ = ["eval_fields"]

_FIGURES = (
    FEDERATED_ACCURACY,
    PERSONALIZED_ACCURACY_FIGURE,
    WORST_DECILE_ACCURACY,
    ACCURACY_STD,
)


def eval_fields(
    evaluation: Mapping[str, float], detail: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The figures of an evaluation round (``eval_figures``) as RoundRow fields, with the
    per-label ones from its record detail; nothing for a training round."""
    if FEDERATED_ACCURACY not in evaluation:
        return {}
    by_label = (detail or {}).get("evaluation_by_label")
    devices = evaluation.get(EVAL_DEVICES)
    return {
        **{name: evaluation.get(name) for name in _FIGURES},
        "eval_devices": int(devices) if devices is not None else None,
        "by_label": dict(by_label) if isinstance(by_label, Mapping) else None,
    }
