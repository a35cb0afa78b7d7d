"""Federated evaluation figures: the fleet's accuracy, its spread over devices, and per label.

Devices report metric SUMS in plain ``EvalReport``s (evaluation rounds are not under SecAgg+,
so the coordinator sees each device's accuracy as a scalar; docs/evaluation.md). From them:

- ``federated_accuracy`` / ``federated_loss``: example-weighted, sum of sums over sum of
  counts (what a centralised evaluation of the pooled held-out sets would give);
- ``worst_decile_accuracy``: the mean accuracy of the worst 10 % of devices (at least one),
  the "worst 10 %" figure of Li et al. 2020 (q-FFL), each device counting once;
- ``accuracy_std``: the population standard deviation of the devices' accuracies (each device
  once: the fairness measure of q-FFL);
- ``eval_devices``: how many devices the figures cover;
- ``personalized_*``: the same from the ``personalized_*`` sums (devices that fine-tune or
  keep personal layers send them beside the global model's; absent otherwise).

Per device label (``key=value`` of the labels a device enrolled with) the same figures over
that label's devices only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedrt.protocol import round_messages as rm
from fedrt.protocol.eval_metrics import ACCURACY, LOSS, PERSONALIZED_ACCURACY, PERSONALIZED_LOSS

__all__ = [
    "ACCURACY_STD",
    "EVAL_DEVICES",
    "FEDERATED_ACCURACY",
    "FEDERATED_LOSS",
    "PERSONALIZED_ACCURACY_FIGURE",
    "PERSONALIZED_STD",
    "PERSONALIZED_WORST_DECILE",
    "WORST_DECILE_ACCURACY",
    "DeviceEval",
    "by_label",
    "device_evals",
    "figures",
    "round_figures",
]

# The names a federated evaluation round's figures carry in the round's ``evaluation``
# (API round detail, dashboard, simulate's report rows; gated rollout reads them).
FEDERATED_ACCURACY = "federated_accuracy"
FEDERATED_LOSS = "federated_loss"
WORST_DECILE_ACCURACY = "worst_decile_accuracy"
ACCURACY_STD = "accuracy_std"
EVAL_DEVICES = "eval_devices"
PERSONALIZED_ACCURACY_FIGURE = "personalized_accuracy"
PERSONALIZED_WORST_DECILE = "personalized_worst_decile_accuracy"
PERSONALIZED_STD = "personalized_accuracy_std"
# The worst-served share of devices that ``worst_decile_accuracy`` averages over.
WORST_SHARE = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEval:
    """One device's evaluation: its example count and metric sums as it reported them."""

    device_id: str
    n_examples: int
    sums: Mapping[str, float]

    def mean(self, name: str) -> float | None:
        """The device's mean of metric ``name`` (None: not reported, or no examples)."""
        value = self.sums.get(name)
        if value is None or self.n_examples <= 0:
            return None
        return value / self.n_examples


def device_evals(reports: Mapping[str, rm.EvalReport]) -> tuple[DeviceEval, ...]:
    """The reports as ``DeviceEval``s, sorted by device id (reports with no examples left out)."""
    return tuple(
        DeviceEval(
            device_id=d,
            n_examples=r.n_examples,
            sums={m.name: float(m.value) for m in r.metrics},
        )
        for d, r in sorted(reports.items())
        if r.n_examples > 0
    )


def _spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean of the worst ``WORST_SHARE`` of ``values``, population std) of a non-empty list."""
    arr = np.sort(np.asarray(values, dtype=np.float64))
    worst = max(1, math.ceil(WORST_SHARE * arr.size - 1e-9))
    return float(arr[:worst].mean()), float(arr.std())


def _weighted(devices: Sequence[DeviceEval], name: str) -> float | None:
    have = [d for d in devices if name in d.sums]
    n = sum(d.n_examples for d in have)
    return sum(d.sums[name] for d in have) / n if n else None


def figures(devices: Sequence[DeviceEval]) -> dict[str, float]:
    """The figures of the module docstring over ``devices`` (empty: no figures)."""
    if not devices:
        return {}
    out: dict[str, float] = {EVAL_DEVICES: float(len(devices))}
    for name, key in ((ACCURACY, FEDERATED_ACCURACY), (LOSS, FEDERATED_LOSS)):
        value = _weighted(devices, name)
        if value is not None:
            out[key] = value
    accs = [a for a in (d.mean(ACCURACY) for d in devices) if a is not None]
    if accs:
        out[WORST_DECILE_ACCURACY], out[ACCURACY_STD] = _spread(accs)
    personal = [a for a in (d.mean(PERSONALIZED_ACCURACY) for d in devices) if a is not None]
    if personal:
        out[PERSONALIZED_ACCURACY_FIGURE] = _weighted(devices, PERSONALIZED_ACCURACY) or 0.0
        out[PERSONALIZED_WORST_DECILE], out[PERSONALIZED_STD] = _spread(personal)
        loss = _weighted(devices, PERSONALIZED_LOSS)
        if loss is not None:
            out["personalized_loss"] = loss
    return out


def by_label(
    devices: Sequence[DeviceEval], labels: Mapping[str, Mapping[str, object]]
) -> dict[str, dict[str, float]]:
    """``"key=value"`` -> the figures over the devices enrolled with that label, sorted."""
    groups: dict[str, list[DeviceEval]] = {}
    for d in devices:
        for key, value in _labels(labels.get(d.device_id, {})):
            groups.setdefault(f"{key}={value}", []).append(d)
    return {name: figures(groups[name]) for name in sorted(groups)}


def _labels(labels: Mapping[str, object]) -> Iterable[tuple[str, str]]:
    return ((str(k), str(v)) for k, v in labels.items())


def round_figures(
    done_metrics: Sequence[tuple[str, float]],
    devices: Sequence[DeviceEval],
    labels: Mapping[str, Mapping[str, object]],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(the round's ``evaluation`` mapping, its figures by label) for an evaluation round:
    every reported mean as ``federated_<name>`` (as before), then the figures above."""
    evaluation = {f"federated_{k}": v for k, v in done_metrics}
    evaluation.update(figures(devices))
    return evaluation, by_label(devices, labels)
