"""Whether a task's training settings fit its model: refused at creation, never ignored.

FedProx's proximal weight and the devices' SGD momentum are inputs of the model's ``train``
signature that ``fedrt export`` adds only when asked (``--fedprox``, ``--momentum``); the
manifest lists that signature's inputs. A task that asks for one of them on a model
without it would otherwise train without it on every device: it is refused instead, with
the export flag to use. SCAFFOLD (``strategy = "scaffold"``) needs the ``correction``
input that ``fedrt export --scaffold`` adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.tasks.personal_layers import resolve
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.model_export.manifest import CORRECTION_INPUT

# (task setting, the train input it needs, the export flag that adds it).
NEEDS: tuple[tuple[str, str, str], ...] = (
    ("fedprox_mu", "mu", "--fedprox"),
    ("client_momentum", "momentum", "--momentum"),
)
# SCAFFOLD's train input (c - c_i, flat).
SCAFFOLD_INPUT = CORRECTION_INPUT


def train_inputs(manifest: Mapping[str, Any]) -> frozenset[str]:
    """The input names of the manifest's ``train`` signature (empty if it lists none)."""
    signatures = manifest.get("signatures")
    train = signatures.get("train") if isinstance(signatures, Mapping) else None
    inputs = train.get("inputs") if isinstance(train, Mapping) else None
    if not isinstance(inputs, list):
        return frozenset()
    return frozenset(i["name"] for i in inputs if isinstance(i, Mapping) and "name" in i)


def check_model_fit(spec: TaskSpec, manifest: Mapping[str, Any], model_sha256: str) -> None:
    """``BadRequestError`` naming the setting and the export flag when ``spec`` asks the
    model (``manifest``, as stored with the model) for a train input it lacks."""
    weights = manifest.get("weights")
    listed = weights if isinstance(weights, list) else []
    names = [w["name"] for w in listed if isinstance(w, Mapping) and "name" in w]
    # Personal tensors must be weights of the model, leaving some to share (rounds.personal).
    resolve(spec.personal_layers, spec.personal_last_layers, names)
    inputs = train_inputs(manifest)
    for setting, name, flag in NEEDS:
        value = getattr(spec, setting)
        if value and name not in inputs:
            raise BadRequestError(
                f"{setting} = {value} needs a model whose train signature takes {name!r}, "
                f"and model {model_sha256[:12]} was exported without it: export it with "
                f"fedrt export {flag}, or set {setting} = 0"
            )
    if spec.strategy == "scaffold" and SCAFFOLD_INPUT not in inputs:
        raise BadRequestError(
            f"strategy = scaffold needs a model whose train signature takes "
            f"{SCAFFOLD_INPUT!r}, and model {model_sha256[:12]} was exported without it: "
            "export it with fedrt export --scaffold, or choose another strategy"
        )


__all__ = ["NEEDS", "SCAFFOLD_INPUT", "check_model_fit", "train_inputs"]
