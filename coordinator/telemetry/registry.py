"""The coordinator's Prometheus series, in one ``prometheus_client`` registry per service."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import choose_encoder

from fedrt.coordinator.store.base import Store
from fedrt.coordinator.telemetry.gauges import StoreGauges
from fedrt.coordinator.telemetry.series import RoundSeries


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


__all__ = ["Telemetry"]
