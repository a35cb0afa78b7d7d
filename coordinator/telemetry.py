"""The coordinator's Prometheus series, in one ``prometheus_client`` registry per service."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from fedrt.coordinator.driver.base import RoundObserver
from fedrt.coordinator.errors import NotFoundError
from fedrt.coordinator.records import RoundRecord, TaskStatus
from fedrt.coordinator.store.base import Store

# Rounds take seconds (a small fleet on a LAN) to minutes (check-in and training deadlines
# of 10 min each by default), up to an hour for slow cohorts: 1 s .. 1 h, about x2 a step.
ROUND_SECONDS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# Stages are shorter: SecAgg+ key and unmask stages finish in well under a second on a LAN,
# training and check-in take up to their deadlines (minutes).
STAGE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Per-device traffic runs from a few KB (a quantized update of a small model, the protocol's
# acknowledgements) to tens of MB (downloading a large model): 1 KiB .. 64 MiB, x4 a step.
DEVICE_BYTES = tuple(float(1024 * 4**i) for i in range(9))
# Round stages after which nothing more is timed (the round machine's final states).
_FINAL = frozenset({"committed", "abandoned"})


class RoundSeries(RoundObserver):
    """Histograms of round and stage durations and of per-device traffic, observed by the
    round driver (``DriverContext.observer``) as rounds move and end.

    A stage's duration runs from the change that entered it to the one that left it, so
    only stages entered in this process are observed (a round a restart abandoned is not).
    """

    def __init__(self, registry: CollectorRegistry, store: Store) -> None:
        self._store = store
        self.round_seconds = Histogram(
            "fedrt_round_duration_seconds",
            "Duration of ended rounds, by task and outcome (committed, abandoned).",
            ("task", "outcome"),
            buckets=ROUND_SECONDS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "fedrt_round_stage_duration_seconds",
            "Time rounds spent in each stage, by task and stage.",
            ("task", "stage"),
            buckets=STAGE_SECONDS,
            registry=registry,
        )
        self.device_bytes = Histogram(
            "fedrt_round_device_bytes",
            "Bytes per device in a round: up = received per reporting device, down = model "
            "plus protocol messages sent per selected device.",
            ("task", "direction"),
            buckets=DEVICE_BYTES,
            registry=registry,
        )
        # (task, round) -> when the round entered its current stage.
        self._entered: dict[tuple[str, int], float] = {}

    def stage_changed(
        self, task_id: str, round_no: int, previous: str, stage: str, at: float
    ) -> None:
        since = self._entered.pop((task_id, round_no), None)
        if since is not None:
            self.stage_seconds.labels(task=task_id, stage=previous).observe(max(0.0, at - since))
        if stage not in _FINAL:
            self._entered[(task_id, round_no)] = at

    def round_ended(self, record: RoundRecord) -> None:
        task = record.task_id
        self._entered.pop((task, record.round_no), None)  # left by its final stage already
        if record.ended_at is not None:
            seconds = max(0.0, record.ended_at - record.started_at)
            self.round_seconds.labels(task=task, outcome=record.status.value).observe(seconds)
        metrics = record.detail.get("metrics", {})
        reported = int(metrics.get("reported", record.reporting))
        # Evaluation rounds carry no update bytes: nothing to say about uploads then.
        if record.bytes_in > 0 and reported > 0:
            self.device_bytes.labels(task=task, direction="up").observe(record.bytes_in / reported)
        if record.selected > 0:
            sent = int(record.detail.get("bytes_out", 0)) / record.selected
            self.device_bytes.labels(task=task, direction="down").observe(
                self._model_bytes(record.model_sha256) + sent
            )

    def _model_bytes(self, sha256: str) -> int:
        try:
            return self._store.get_model(sha256).size
        except NotFoundError:
            return 0


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


class Telemetry:
    """A service's counters, round histograms and store gauges, and their exposition.

    Each service has its own ``CollectorRegistry`` (never the process-wide default), so
    several services can run in one process, as the tests do.
    """

    def __init__(self, store: Store, *, link_up: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.mqtt_messages = Counter(
            "fedrt_mqtt_messages_total",
            "Device messages received, by channel and outcome.",
            ("channel", "outcome"),
            registry=r,
        )
        self.mqtt_bytes = Counter(
            "fedrt_mqtt_received_bytes_total",
            "Payload bytes received from devices.",
            ("channel",),
            registry=r,
        )
        self.http_requests = Counter(
            "fedrt_http_requests_total",
            "HTTP requests, by route and status.",
            ("route", "status"),
            registry=r,
        )
        self.artifact_corrupt = Counter(
            "fedrt_artifact_corrupt_total",
            "Stored files found not to hash to their name, once per corrupt state, by kind.",
            ("kind",),
            registry=r,
        )
        self.rounds = RoundSeries(r, store)
        r.register(StoreGauges(store, link_up))

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """(body, Content-Type) for a scraper's ``Accept`` header: OpenMetrics when it asks
        for it, else the Prometheus text format (prometheus_client's negotiation)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def render(self) -> str:
        """The Prometheus text format, as a scraper that asks for nothing else gets it."""
        return generate_latest(self.registry).decode()


__all__ = [
    "DEVICE_BYTES",
    "ROUND_SECONDS",
    "STAGE_SECONDS",
    "RoundSeries",
    "StoreGauges",
    "Telemetry",
]
