"""Personal layers (FedPer) in a round: the update leaves them out, the aggregate skips them.

A task names them (``tasks.personal_layers``); the round's update vector holds
only the other, shared tensors, and the aggregate is put back around the personal ones
with zeros, so every server optimizer leaves them exactly as they are (a zero delta moves
neither FedAvg's weights nor FedAdam's or FedAvgM's state, which also start at zero).
"""

from __future__ import annotations

from dataclasses import replace

from fedrt.coordinator.rounds.commands import RoundConfig
from fedrt.coordinator.rounds.personal_spans import embed, shared_mask, shared_size, spans
from fedrt.coordinator.tasks.personal_layers import resolve
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.model_export.manifest import Manifest


def with_personal(config: RoundConfig, spec: TaskSpec, manifest: Manifest) -> RoundConfig:
    """``config`` with the task's personal tensors (names, spans) and fine-tuning steps."""
    personal = resolve(spec.personal_layers, spec.personal_last_layers, manifest.weight_names)
    if not personal and not spec.finetune_steps:
        return config
    return replace(
        config,
        personal_layers=personal,
        personal_spans=spans(manifest, personal),
        finetune_steps=spec.finetune_steps,
    )


__all__ = ["embed", "shared_mask", "shared_size", "spans", "with_personal"]
