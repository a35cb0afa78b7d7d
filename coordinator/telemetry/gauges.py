"""Gauges read from the store at scrape time: tasks, devices, the latest rounds, epsilon."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from fedrt.coordinator.records import TaskStatus
from fedrt.coordinator.store.base import Store


class StoreGauges:
    """Gauges read from the store at scrape time (a ``prometheus_client`` collector), so a
    restarted coordinator reports the same figures and a deleted task's series go away."""

    def __init__(self, store: Store, link_up: Callable[[], bool]) -> None:
        self._store = store
        self._link_up = link_up

    def describe(self) -> Iterable[Metric]:
        return _families()

    def collect(self) -> Iterable[Metric]:
        (tasks, devices, roles, connected, bad_holders, participation, dropout, epsilon) = (
            _families()
        )
        all_tasks = self._store.list_tasks()
        for status in TaskStatus:
            tasks.add_metric([status.value], sum(t.status is status for t in all_tasks))
        all_devices = self._store.list_devices()
        revoked = sum(d.revoked for d in all_devices)
        devices.add_metric(["active"], len(all_devices) - revoked)
        devices.add_metric(["revoked"], revoked)
        connected.add_metric([], 1.0 if self._link_up() else 0.0)
        for task in all_tasks:
            task_id = task.task_id
            rounds = self._store.list_rounds(task_id)
            if rounds:
                for role in ("checked_in", "selected", "reporting", "dropped"):
                    roles.add_metric([task_id, role], getattr(rounds[-1], role))
            # Ended here: rounds a restart abandoned have no metrics and say nothing.
            ended = [r for r in rounds if "metrics" in r.detail]
            if ended:
                bad = ended[-1].detail["metrics"].get("bad_holders", [])
                bad_holders.add_metric([task_id], len(bad))
            # A round nobody was selected for has no ratio; the one before it stands.
            chosen = [r for r in ended if r.selected > 0]
            if chosen:
                last = chosen[-1]
                participation.add_metric([task_id], last.reporting / last.selected)
                dropout.add_metric([task_id], last.dropped / last.selected)
            spent = [r.epsilon for r in rounds if r.epsilon is not None]
            if spent:
                epsilon.add_metric([task_id], spent[-1])
        return (tasks, devices, roles, connected, bad_holders, participation, dropout, epsilon)


def _families() -> tuple[GaugeMetricFamily, ...]:
    return (
        GaugeMetricFamily("fedrt_tasks", "Tasks by status.", labels=["status"]),
        GaugeMetricFamily("fedrt_devices", "Enrolled devices by state.", labels=["state"]),
        GaugeMetricFamily(
            "fedrt_round_devices",
            "Devices in the latest round of each task, by role.",
            labels=["task", "role"],
        ),
        GaugeMetricFamily("fedrt_mqtt_connected", "1 while the MQTT link is up.", labels=[]),
        GaugeMetricFamily(
            "fedrt_round_secagg_bad_holders",
            "Devices found revealing wrong SecAgg+ shares in the latest ended round of each task.",
            labels=["task"],
        ),
        GaugeMetricFamily(
            "fedrt_round_participation_ratio",
            "Reporting over selected devices in the latest ended round of each task.",
            labels=["task"],
        ),
        GaugeMetricFamily(
            "fedrt_round_dropout_ratio",
            "Dropped over selected devices in the latest ended round of each task.",
            labels=["task"],
        ),
        GaugeMetricFamily(
            "fedrt_privacy_epsilon_spent",
            "Differential privacy: the epsilon a DP task has spent so far, at its delta.",
            labels=["task"],
        ),
    )


__all__ = ["StoreGauges"]
