"""Federated evaluation figures: weighted accuracy, worst decile, spread, per label."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.coordinator.rounds.eval_figures import (
    DeviceEval,
    by_label,
    device_evals,
    figures,
    round_figures,
)
from fedrt.protocol import round_messages as rm


def _dev(name: str, n: int, correct: float, loss: float = 1.0, **more: float) -> DeviceEval:
    return DeviceEval(
        device_id=name, n_examples=n, sums={"accuracy": correct, "loss": loss, **more}
    )


def test_figures_match_a_numpy_reference() -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 50, size=23)
    accs = rng.uniform(0.2, 1.0, size=23)
    devices = [
        _dev(f"d{i}", int(n), float(a * n))
        for i, (n, a) in enumerate(zip(counts, accs, strict=True))
    ]
    got = figures(devices)
    per_device = np.array([d.sums["accuracy"] / d.n_examples for d in devices])
    assert got["federated_accuracy"] == pytest.approx(per_device @ counts / counts.sum())
    # 23 devices: the worst 10 % is the worst 3 (ceil 2.3).
    assert got["worst_decile_accuracy"] == pytest.approx(np.sort(per_device)[:3].mean())
    assert got["accuracy_std"] == pytest.approx(per_device.std())
    assert got["eval_devices"] == 23
    assert "personalized_accuracy" not in got


def test_worst_decile_is_the_worst_device_below_ten_devices() -> None:
    got = figures([_dev("a", 10, 9.0), _dev("b", 10, 3.0), _dev("c", 20, 20.0)])
    assert got["worst_decile_accuracy"] == pytest.approx(0.3)
    assert got["federated_accuracy"] == pytest.approx(32 / 40)
    assert got["accuracy_std"] == pytest.approx(np.std([0.9, 0.3, 1.0]))


def test_personalized_figures_come_from_the_personalized_sums() -> None:
    devices = [
        _dev("a", 10, 5.0, personalized_accuracy=9.0, personalized_loss=2.0),
        _dev("b", 30, 15.0, personalized_accuracy=21.0, personalized_loss=6.0),
    ]
    got = figures(devices)
    assert got["personalized_accuracy"] == pytest.approx(30 / 40)
    assert got["personalized_worst_decile_accuracy"] == pytest.approx(0.7)
    assert got["personalized_accuracy_std"] == pytest.approx(np.std([0.9, 0.7]))
    assert got["personalized_loss"] == pytest.approx(8 / 40)
    assert got["federated_accuracy"] == pytest.approx(0.5)


def test_by_label_groups_devices_by_each_label_value() -> None:
    devices = [_dev("a", 10, 10.0), _dev("b", 10, 5.0), _dev("c", 10, 0.0)]
    labels = {"a": {"region": "eu", "os": "ios"}, "b": {"region": "eu"}, "c": {"region": "us"}}
    got = by_label(devices, labels)
    assert list(got) == ["os=ios", "region=eu", "region=us"]
    assert got["region=eu"]["federated_accuracy"] == pytest.approx(0.75)
    assert got["region=eu"]["worst_decile_accuracy"] == pytest.approx(0.5)
    assert got["region=eu"]["eval_devices"] == 2
    assert got["region=us"]["accuracy_std"] == 0.0
    assert got["os=ios"]["federated_accuracy"] == 1.0


def test_round_figures_keep_the_federated_means_and_drop_empty_reports() -> None:
    reports = {
        "b": rm.EvalReport(msg_id=1, task_id="t", round_id=2, n_examples=4,
                           metrics=(rm.Metric(name="accuracy", value=3.0),
                                    rm.Metric(name="loss", value=2.0))),
        "a": rm.EvalReport(msg_id=1, task_id="t", round_id=2, n_examples=0, metrics=()),
    }  # fmt: skip
    devices = device_evals(reports)
    assert [d.device_id for d in devices] == ["b"]
    evaluation, labelled = round_figures((("accuracy", 0.75), ("loss", 0.5)), devices, {})
    assert evaluation["federated_accuracy"] == 0.75
    assert evaluation["federated_loss"] == 0.5
    assert evaluation["worst_decile_accuracy"] == 0.75
    assert labelled == {}
    assert figures([]) == {}
