"""What the HTTP handlers may use, built by the service (``CoordinatorService.api_context``).

The handlers never see the service or its configuration, only this: the service (the
roof) assembles it from both, so nothing in ``api`` imports anything above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from fedrt.coordinator.api.ratelimit import RateLimiter
from fedrt.coordinator.devices.enrollment import Enrollment
from fedrt.coordinator.models.blobs import BlobStore
from fedrt.coordinator.models.catalog import ModelCatalog
from fedrt.coordinator.security.admin_token import AdminToken
from fedrt.coordinator.security.credentials import CheckedPasswords, Secret
from fedrt.coordinator.state_thread import StateThread
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.tasks.manager import TaskManager


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiContext:
    """The coordinator's parts and settings the REST API, metrics and dashboard serve."""

    store: Store
    blobs: BlobStore
    catalog: ModelCatalog
    tasks: TaskManager
    enrollment: Enrollment
    clock: Callable[[], float]
    # A file's token follows the file (rotation); a configured one is a plain Secret.
    admin_token: Secret | AdminToken
    # ``[metrics] token``: None leaves /metrics open (the admin token always works).
    metrics_token: Secret | None
    coordinator_public_key: bytes
    # Per-device allowance, shared with the MQTT ingest (``[limits] device_*``).
    device_limiter: RateLimiter
    # Enrollments per client address (``[limits] enroll_*``).
    enroll_rate_per_s: float
    enroll_burst: int
    max_upload_bytes: int
    # Requests by route and status (``fedrt_http_requests_total``).
    http_requests: Counter
    # /metrics: (body, Content-Type) for a scraper's Accept header.
    exposition: Callable[[str], tuple[bytes, str]]
    mqtt_connected: Callable[[], bool]
    # (host, port, tls) of the broker enrolled devices connect to.
    mqtt_endpoint: Callable[[], tuple[str, int, bool]]
    # The configuration as /v1/info shows it (secrets as ***).
    config_view: Callable[[], dict[str, Any]]
    # More MQTT listeners of the same broker cluster, for devices to fail over to
    # (``broker.nodes``), and the MQTT version they must speak (NATS: 4, 3.1.1); None: any.
    mqtt_nodes: tuple[tuple[str, int], ...] = ()
    mqtt_protocol: int | None = None
    # The QoS devices read their inbox at (``broker.device_inbox_qos``); None: 1, said by
    # leaving it out (what every SDK did before it was told).
    mqtt_inbox_qos: int | None = None
    # Where handlers that touch the store run (``state_thread``); None: on the server's loop.
    state: StateThread | None = None
    # Device passwords that matched before (HTTP Basic), so each is hashed once, not per request.
    passwords: CheckedPasswords = field(default_factory=CheckedPasswords)


__all__ = ["ApiContext"]
