"""Round histograms (round and stage durations, per-device traffic) and the robust
aggregation counters (updates discarded, norm outliers), as rounds move and end."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from fedrt.coordinator.driver.base import RoundObserver
from fedrt.coordinator.errors import NotFoundError
from fedrt.coordinator.records import RoundRecord
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
        self.robust_discarded = Counter(
            "fedrt_round_robust_discarded",
            "Updates the robust aggregation rule of committed rounds discarded (whole updates "
            "for krum and bulyan, values per coordinate for median and trimmed_mean), by task "
            "and rule.",
            ("task", "rule"),
            registry=registry,
        )
        self.norm_outliers = Counter(
            "fedrt_round_norm_outliers",
            "Updates whose norm stood out of their round's (modified z-score above 3.5, before "
            "the clip), rounds without SecAgg: the attack-detection count, by task.",
            ("task",),
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
        rule = metrics.get("aggregator")
        if rule and record.status.value == "committed":
            discarded = int(metrics.get("robust_discarded", 0))
            self.robust_discarded.labels(task=task, rule=str(rule)).inc(discarded)
            self.norm_outliers.labels(task=task).inc(int(metrics.get("norm_outliers", 0)))
        reported = int(metrics.get("reported", record.reporting))
        # Evaluation rounds carry no update bytes: nothing to say about uploads then.
        if record.bytes_in > 0 and reported > 0:
            self.device_bytes.labels(task=task, direction="up").observe(record.bytes_in / reported)
        counted = record.detail.get("traffic", {}).get("down_per_device")  # model-forms
        if counted:  # model-forms: what was served, by kind
            self.device_bytes.labels(task=task, direction="down").observe(sum(counted.values()))
        elif record.selected > 0:
            sent = int(record.detail.get("bytes_out", 0)) / record.selected
            self.device_bytes.labels(task=task, direction="down").observe(
                self._model_bytes(record.model_sha256) + sent
            )

    def _model_bytes(self, sha256: str) -> int:
        try:
            return self._store.get_model(sha256).size
        except NotFoundError:
            return 0


__all__ = ["DEVICE_BYTES", "ROUND_SECONDS", "STAGE_SECONDS", "RoundSeries"]
