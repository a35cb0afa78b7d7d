"""Every device's global and personalized model on its own held-out share, after a simulation.

Federated evaluation rounds see only the devices a round selects; this looks at all of
them, once the last round is over, through the SDK's own code: each device's example store
(its held-out split, ``sdk.holdout``) and its personal layers on disk (``sdk.personal_layers``)
over the last committed global model, then the task's fine-tuning steps on its training
examples. The figures are ``coordinator.rounds.eval_figures``' plus the plain mean over
devices (each device counts once, whatever its number of examples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.rounds.eval_figures import DeviceEval, figures
from fedrt.coordinator.tasks.personal_layers import resolve
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest
from fedrt.protocol.eval_metrics import ACCURACY, PERSONALIZED_ACCURACY
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.personal_layers import PersonalLayers, personalize
from fedrt.sdk.trainer import LiteRtTrainer
from fedrt.simulation.sim_config import SimConfig
from fedrt.simulation.stack import LocalStack

__all__ = ["evaluate_devices", "evaluate_run", "personalization_line"]


def _correct(trainer: LiteRtTrainer, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> int:
    b = trainer.batch_size
    right = 0
    for start in range(0, len(x), b):
        chunk = x[start : start + b]
        n = len(chunk)
        if n < b:  # static batch: pad, then count the real rows only
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
        logits = np.asarray(trainer.infer(chunk))[:n]
        right += int((logits.argmax(axis=1) == y[start : start + n]).sum())
    return right


def _summary(devices: Sequence[DeviceEval], metric: str) -> dict[str, float]:
    accs = [d.sums[metric] / d.n_examples for d in devices]
    named = figures([DeviceEval(device_id=d.device_id, n_examples=d.n_examples,
                                sums={ACCURACY: d.sums[metric]}) for d in devices])  # fmt: skip
    return {
        "mean_device_accuracy": float(np.mean(accs)),
        "worst_decile_accuracy": named["worst_decile_accuracy"],
        "accuracy_std": named["accuracy_std"],
        "weighted_accuracy": named["federated_accuracy"],
    }


def evaluate_devices(
    *,
    model_bytes: bytes,
    manifest: Manifest,
    device_dirs: Sequence[Path],
    task_id: str,
    personal_layers: Sequence[str],
    finetune_steps: int,
    lr: float,
    holdout: float,
) -> dict[str, Any]:
    """The global model's and each device's personalized model's accuracy on the device's
    held-out examples (devices holding none out are left out), summarised over devices."""
    trainer = LiteRtTrainer(LiteRTModel(model_bytes, manifest, num_threads=1), manifest)
    x_spec = trainer.x_spec
    start = trainer.get_weights()
    evals: list[DeviceEval] = []
    for directory in device_dirs:
        store = ExampleStore(
            directory / "examples.sqlite3",
            x_shape=x_spec.shape[1:],
            x_dtype=np.dtype(x_spec.dtype),
            y_dtype=np.int32,
        )
        try:
            held, train = store.part(holdout, held_out=True), store.part(holdout, held_out=False)
            n = len(held)
            if n == 0 or len(train) == 0:
                continue
            test = held.batch(n)
            trainer.set_weights(start)
            plain = _correct(trainer, test.x, test.y)
            mine = PersonalLayers(directory / "personal", task_id, personal_layers)
            personalize(trainer, mine, train.batch, finetune_steps=finetune_steps, lr=lr)
            personal = _correct(trainer, test.x, test.y)
        finally:
            store.close()
        sums = {ACCURACY: float(plain), PERSONALIZED_ACCURACY: float(personal)}
        evals.append(DeviceEval(device_id=directory.name, n_examples=n, sums=sums))
    trainer.close()
    if not evals:
        return {"devices": 0}
    return {
        "devices": len(evals),
        "personal_layers": list(personal_layers),
        "finetune_steps": finetune_steps,
        "global": _summary(evals, ACCURACY),
        "personalized": _summary(evals, PERSONALIZED_ACCURACY),
    }


def personalization_line(result: dict[str, Any]) -> str:
    """One progress line: mean and worst-decile device accuracy, global vs personalized."""
    if not result.get("devices"):
        return "per-device evaluation: no device held examples out"
    g, p = result["global"], result["personalized"]
    how = []
    if result["personal_layers"]:
        how.append(f"personal layers {','.join(result['personal_layers'])}")
    if result["finetune_steps"]:
        how.append(f"{result['finetune_steps']} fine-tuning steps")
    return (
        f"per-device held-out accuracy over {result['devices']} devices: global mean "
        f"{g['mean_device_accuracy']:.3f} (worst decile {g['worst_decile_accuracy']:.3f}); "
        f"personalized ({'; '.join(how)}) mean {p['mean_device_accuracy']:.3f} "
        f"(worst decile {p['worst_decile_accuracy']:.3f})"
    )


def evaluate_run(
    config: SimConfig,
    stack: LocalStack,
    device_dirs: Sequence[Path],
    task_id: str,
    versions: Sequence[Mapping[str, Any]],
    line: Callable[[str], None],
) -> dict[str, Any] | None:
    """``evaluate_devices`` on the run's last committed version (None when the run does not
    personalize); prints its ``personalization_line``."""
    svc = stack.service
    if not (config.personal_layers or config.finetune_steps) or svc is None or not versions:
        return None
    sha = str(versions[-1]["sha256"])
    manifest = Manifest.from_dict(svc.store.get_model(sha).manifest)
    result = evaluate_devices(
        model_bytes=svc.blobs.read(sha),
        manifest=manifest,
        device_dirs=device_dirs,
        task_id=task_id,
        personal_layers=resolve([], config.personal_layers, manifest.weight_names),
        finetune_steps=config.finetune_steps,
        lr=config.learning_rate,
        holdout=config.holdout,
    )
    line(personalization_line(result))
    return result
