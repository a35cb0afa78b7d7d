"""/metrics through prometheus_client: exposition, round histograms, store gauges."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from fedrt.coordinator.privacy.config import DpConfig, DpMode
from fedrt.coordinator.records import RoundRecord, RoundStatus
from fedrt.coordinator.store import MemoryStore
from fedrt.coordinator.telemetry import RoundSeries, StoreGauges, Telemetry
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets
from tests.coordinator.harness import ServiceThread, make_config
from tests.coordinator.store_conformance import model, round_, sha, task

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Every family the coordinator exports, by its exposition name (counters without _total).
FAMILIES = {
    "fedrt_artifact_corrupt": "counter",
    "fedrt_devices": "gauge",
    "fedrt_http_requests": "counter",
    "fedrt_mqtt_connected": "gauge",
    "fedrt_mqtt_messages": "counter",
    "fedrt_mqtt_received_bytes": "counter",
    "fedrt_privacy_epsilon_spent": "gauge",
    "fedrt_round_device_bytes": "histogram",
    "fedrt_round_devices": "gauge",
    "fedrt_round_dropout_ratio": "gauge",
    "fedrt_round_duration_seconds": "histogram",
    "fedrt_round_norm_outliers": "counter",
    "fedrt_round_participation_ratio": "gauge",
    "fedrt_round_robust_discarded": "counter",
    "fedrt_round_secagg_bad_holders": "gauge",
    "fedrt_round_stage_duration_seconds": "histogram",
    "fedrt_tasks": "gauge",
}


def flat(families: Iterable[Metric]) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def families_of(parsed: Iterable[Metric]) -> dict[str, str]:
    """name -> type, without the text format's ``_created`` gauges (series start times)."""
    return {f.name: f.type for f in parsed if not f.name.endswith("_created")}


def samples(text: str) -> Samples:
    """Every sample of a text exposition, parsed by prometheus_client's own parser."""
    return flat(text_string_to_metric_families(text))


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_rounds_fill_the_histograms_and_the_gauges(tmp_path: Path) -> None:
    fleet = Fleet(4, pull_to_targets)
    coordinator = fleet.open(tmp_path / "data")
    try:
        dp = DpConfig(mode=DpMode.CENTRAL, noise_multiplier=1.0, budget_epsilon=100.0)
        fleet.create_task(max_rounds=3, dp=dp)
        fleet.run_until(fleet.done)
        svc = fleet.svc
        rounds = svc.store.list_rounds(TASK)
        found = samples(svc.metrics.render())
    finally:
        coordinator.close()
    assert [r.status for r in rounds] == [RoundStatus.COMMITTED] * 3
    t = {"task": TASK}
    count = value(found, "fedrt_round_duration_seconds_count", **t, outcome="committed")
    assert count == len(rounds)
    durations = [(r.ended_at or 0.0) - r.started_at for r in rounds]
    assert value(found, "fedrt_round_duration_seconds_sum", **t, outcome="committed") == (
        pytest.approx(sum(durations))
    )
    # Each round went check-in -> training -> committed; the stages fill the round.
    stage_sum = 0.0
    for stage in ("check_in", "training"):
        assert value(found, "fedrt_round_stage_duration_seconds_count", **t, stage=stage) == 3
        stage_sum += value(found, "fedrt_round_stage_duration_seconds_sum", **t, stage=stage)
    assert stage_sum == pytest.approx(sum(durations))
    assert not any(n.startswith("fedrt_round_stage") and dict(ls).get("stage") == "share_keys"
                   for n, ls in found)  # fmt: skip
    up = [r.bytes_in / r.detail["metrics"]["reported"] for r in rounds]
    # Down: what the coordinator counted per selected device (model-forms); these devices
    # take no model over HTTP, so only the round's messages to them.
    down = [sum(r.detail["traffic"]["down_per_device"].values()) for r in rounds]
    for r in rounds:
        assert r.detail["traffic"]["down_per_device"]["protocol"] == round(
            r.detail["bytes_out"] / r.selected
        )
    assert min(up) > 0
    for direction, expected in (("up", up), ("down", down)):
        d = {**t, "direction": direction}
        assert value(found, "fedrt_round_device_bytes_count", **d) == 3
        assert value(found, "fedrt_round_device_bytes_sum", **d) == pytest.approx(sum(expected))
    last = rounds[-1]
    assert value(found, "fedrt_round_participation_ratio", **t) == last.reporting / last.selected
    assert value(found, "fedrt_round_dropout_ratio", **t) == last.dropped / last.selected
    assert last.epsilon is not None
    assert last.epsilon > 0
    assert value(found, "fedrt_privacy_epsilon_spent", **t) == pytest.approx(last.epsilon)
    assert value(found, "fedrt_tasks", status="completed") == 1
    assert value(found, "fedrt_devices", state="active") == 4
    assert value(found, "fedrt_round_devices", **t, role="selected") == last.selected


def test_metrics_route_answers_in_the_format_the_scraper_asks_for(tmp_path: Path) -> None:
    with ServiceThread(make_config(tmp_path / "data")) as svc:
        svc.request("GET", "/healthz", token=None)
        plain = svc.request("GET", "/metrics", token=None)
        open_metrics = svc.request(
            "GET",
            "/metrics",
            token=None,
            # What Prometheus sends: OpenMetrics preferred, the text format as a fallback.
            headers={"Accept": "application/openmetrics-text;version=1.0.0;q=0.9,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"},
        )  # fmt: skip
    assert plain.status == 200
    assert plain.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert "X-Prometheus-Format" not in plain.headers
    families = families_of(text_string_to_metric_families(plain.body.decode()))
    assert families == FAMILIES
    found = samples(plain.body.decode())
    assert value(found, "fedrt_http_requests_total", route="/healthz", status="200") == 1
    assert value(found, "fedrt_mqtt_connected") == 1
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text;")
    text = open_metrics.body.decode()
    assert text.endswith("# EOF\n")
    parsed = openmetrics_parser.text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    assert families_of(parsed) == FAMILIES


def test_label_values_and_help_survive_escaping() -> None:
    telemetry = Telemetry(MemoryStore(), link_up=lambda: False)
    weird = 'we"ird\\\nroute'
    telemetry.http_requests.labels(route=weird, status="200").inc(3)
    found = samples(telemetry.render())
    assert value(found, "fedrt_http_requests_total", route=weird, status="200") == 3
    assert value(found, "fedrt_mqtt_connected") == 0


def test_each_service_has_its_own_registry_and_names_are_taken_once() -> None:
    store = MemoryStore()
    first, second = Telemetry(store, link_up=lambda: True), Telemetry(store, link_up=lambda: True)
    first.artifact_corrupt.labels(kind="model").inc()
    assert 'fedrt_artifact_corrupt_total{kind="model"} 1.0' in first.render()
    assert "fedrt_artifact_corrupt_total{" not in second.render()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        first.registry.register(StoreGauges(store, lambda: True))


def _ended(rnd: RoundRecord, **changes: object) -> RoundRecord:
    return dataclasses.replace(rnd, **{"status": RoundStatus.COMMITTED, **changes})  # type: ignore[arg-type]


def test_ratios_come_from_the_latest_round_that_selected_devices() -> None:
    store = MemoryStore()
    store.add_model(model("m0"))
    store.create_task(task("a", sha("m0")))
    store.create_task(task("b", sha("m0")))
    metrics = {"metrics": {"bad_holders": ["d1"]}}
    store.create_round(_ended(round_("a", 1, sha("m0")), selected=8, reporting=6, dropped=2,
                              detail=metrics, epsilon=0.5))  # fmt: skip
    # Nobody came to round 2: no ratio, the first round's stands; epsilon unchanged.
    store.create_round(_ended(round_("a", 2, sha("m0")), detail={"metrics": {}}, epsilon=0.5))
    store.create_round(round_("a", 3, sha("m0")))  # running: not ended yet
    store.create_round(_ended(round_("b", 1, sha("m0")), selected=4, reporting=1, dropped=3,
                              detail={"metrics": {}}))  # fmt: skip
    registry = CollectorRegistry()
    registry.register(StoreGauges(store, lambda: True))
    found = flat(registry.collect())
    assert value(found, "fedrt_round_participation_ratio", task="a") == 0.75
    assert value(found, "fedrt_round_dropout_ratio", task="a") == 0.25
    assert value(found, "fedrt_round_participation_ratio", task="b") == 0.25
    assert value(found, "fedrt_round_dropout_ratio", task="b") == 0.75
    assert value(found, "fedrt_privacy_epsilon_spent", task="a") == 0.5
    assert ("fedrt_privacy_epsilon_spent", frozenset({("task", "b")})) not in found
    assert value(found, "fedrt_round_secagg_bad_holders", task="a") == 0  # round 2's list
    assert value(found, "fedrt_round_devices", task="a", role="selected") == 0  # round 3


def test_stage_times_run_from_change_to_change_and_an_empty_round_has_no_bytes() -> None:
    store = MemoryStore()
    store.add_model(model("m0"))
    registry = CollectorRegistry()
    series = RoundSeries(registry, store)
    for previous, stage, at in (("created", "check_in", 10.0), ("check_in", "training", 14.0),
                                ("training", "abandoned", 20.5)):  # fmt: skip
        series.stage_changed("a", 1, previous, stage, at)
    series.round_ended(_ended(round_("a", 1, sha("m0")), status=RoundStatus.ABANDONED,
                              started_at=10.0, ended_at=20.5))  # fmt: skip
    found = flat(registry.collect())
    stage = "fedrt_round_stage_duration_seconds_sum"
    assert value(found, stage, task="a", stage="check_in") == 4.0
    assert value(found, stage, task="a", stage="training") == 6.5
    assert ("fedrt_round_stage_duration_seconds_count",
            frozenset({("task", "a"), ("stage", "created")})) not in found  # fmt: skip
    assert value(found, "fedrt_round_duration_seconds_sum", task="a", outcome="abandoned") == 10.5
    assert not any(name.startswith("fedrt_round_device_bytes") for name, _ in found)
