"""Which weight tensors of a task's model are personal (FedPer): named, or the last N layers."""

from __future__ import annotations

from collections.abc import Sequence

from fedrt.coordinator.errors import BadRequestError


def layer_of(name: str) -> str:
    """The layer a weight tensor belongs to: its name up to the last ``_`` (``fc_kernel`` and
    ``fc_bias`` are layer ``fc``, as ``fedrt export`` names them)."""
    return name.rsplit("_", 1)[0] if "_" in name else name


def last_layers(names: Sequence[str], n: int) -> tuple[str, ...]:
    """The tensors of the last ``n`` layers (runs of consecutive tensors of one layer)."""
    groups: list[list[str]] = []
    for name in names:
        if groups and layer_of(groups[-1][-1]) == layer_of(name):
            groups[-1].append(name)
        else:
            groups.append([name])
    return tuple(name for group in groups[len(groups) - n :] for name in group) if n else ()


def resolve(names: Sequence[str], last_n: int, weight_names: Sequence[str]) -> tuple[str, ...]:
    """The personal tensors of a task (in manifest order); ``BadRequestError`` when one is not
    a weight of the model or when no tensor would be left to share."""
    if last_n:
        picked = set(last_layers(weight_names, last_n))
        layers = len({layer_of(n) for n in weight_names})
        if last_n >= layers:
            raise BadRequestError(
                f"personal_last_layers = {last_n}, and the model has {layers} layers: "
                "at least one must be shared"
            )
    else:
        unknown = sorted(set(names) - set(weight_names))
        if unknown:
            raise BadRequestError(
                f"personal_layers: {', '.join(unknown)} are not weights of the model "
                f"(its weights: {', '.join(weight_names)})"
            )
        picked = set(names)
    if picked and picked >= set(weight_names):
        raise BadRequestError("personal_layers names every weight: nothing would be shared")
    return tuple(n for n in weight_names if n in picked)


__all__ = ["last_layers", "layer_of", "resolve"]
