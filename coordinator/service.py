"""The coordinator service: assembles store, models, enrollment, MQTT link, HTTP and a driver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence

from fedrt.coordinator.api.context import ApiContext
from fedrt.coordinator.api.ratelimit import RateLimiter
from fedrt.coordinator.api.tls import https_setup
from fedrt.coordinator.broker.embedded import EmbeddedAuth, EmbeddedBroker
from fedrt.coordinator.broker.link import LinkSettings
from fedrt.coordinator.broker.link_pool import LinkPool
from fedrt.coordinator.broker.nats_queue import NatsQueueReader, QueueSettings
from fedrt.coordinator.broker.reading import QUEUE_GROUP, reading_plan
from fedrt.coordinator.config import CoordinatorConfig, describe
from fedrt.coordinator.devices.broker_login import embedded_verifier
from fedrt.coordinator.devices.enrollment import CoordinatorEndpoint, Enrollment
from fedrt.coordinator.driver.base import DriverContext, DriverFactory, RoundDriver
from fedrt.coordinator.errors import ConfigError, retry_races
from fedrt.coordinator.models.blobs import BlobStore
from fedrt.coordinator.models.catalog import ModelCatalog
from fedrt.coordinator.records import TaskRecord
from fedrt.coordinator.rounds.relay import DeviceRelay
from fedrt.coordinator.rounds.rollout import creation_check
from fedrt.coordinator.rounds.routing import DeviceRouter, Offered, Refused, Route
from fedrt.coordinator.security.admin_token import AdminToken
from fedrt.coordinator.security.signing import ModelSigner
from fedrt.coordinator.startup import (
    ADMIN_TOKEN_FILE,
    COORDINATOR_USERNAME,
    broker_auth,
    broker_tls_context,
    load_admin_token,
    open_held_out,
    open_store,
    running_loop,
)
from fedrt.coordinator.state_thread import StateThread
from fedrt.coordinator.tasks.manager import TaskManager
from fedrt.coordinator.tasks.ownership import TaskOwnership, instance_id
from fedrt.coordinator.telemetry.registry import Telemetry
from fedrt.errors import FedrtError
from fedrt.protocol.topics import coordinator_status

log = logging.getLogger(__name__)

# last_seen is for dashboards: writing it once per 10 s per device spares the disk.
_SEEN_FLUSH_S = 10.0
# In data_dir: the cohort topics the MQTT link follows (broker/followed.py).
FOLLOWED_FILE = "mqtt-followed.json"


class CoordinatorService:
    """Everything ``fedrt coordinator serve`` runs, in one asyncio loop.

    ``start()`` opens the store, starts the embedded broker if configured, connects to MQTT,
    starts the tick loop and the HTTP server; ``stop()`` undoes it in reverse order after
    letting the driver persist its in-flight state.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        *,
        clock: Callable[[], float] = time.time,
        driver_factory: DriverFactory | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        data = config.data_dir
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {data}: {exc.strerror}") from None
        # A token from the file follows the file (``rotate-admin-token``); a configured one
        # changes only with the configuration, at a restart.
        self.admin_token = AdminToken(
            load_admin_token(config),
            path=None if config.admin_token is not None else data / ADMIN_TOKEN_FILE,
            grace_s=config.admin_token_grace_s,
        )
        # Before anything listens: a bad certificate or key stops the start here.
        self.https = https_setup(config.http, data)
        self.store = open_store(config)
        self.signer = ModelSigner.load_or_create(data)
        # On PostgreSQL (several instances) artifacts live in the store, cached here by hash.
        shared = self.store if config.store.url is not None else None
        self.blobs = BlobStore(data / "artifacts", mirror=shared)
        self.catalog = ModelCatalog(self.store, self.blobs, self.signer, clock=clock)
        self.held_out = open_held_out(config)
        self.tasks = TaskManager(self.store, clock=clock, on_change=self._task_changed,
                                 model_checks=(creation_check(self.held_out),))  # fmt: skip
        cluster = config.cluster
        self.ownership = TaskOwnership(
            self.store, instance_id(data, cluster.instance_id), lease_s=cluster.lease_s
        )
        self.enrollment = Enrollment(
            self.store,
            broker_auth(config.broker),
            coordinator_public_key=self.signer.public_key_bytes(),
            clock=clock,
        )
        limits = config.limits
        self.device_limiter = RateLimiter(
            rate=limits.device_rate_per_s, burst=limits.device_burst, clock=time.monotonic
        )
        self.router = DeviceRouter(
            instance_id=self.ownership.instance_id,
            max_message_bytes=limits.max_message_bytes,
            over_rate=lambda device_id: self.device_limiter.try_acquire("mqtt:" + device_id) > 0,
            enrolled=self.enrollment.is_active,
        )
        self.metrics = Telemetry(
            self.store, link_up=lambda: self.link is not None and self.link.connected
        )
        corrupt = self.metrics.artifact_corrupt
        self.blobs.on_corrupt.append(lambda kind, _sha: corrupt.labels(kind=kind).inc())
        self.embedded: EmbeddedBroker | None = None
        self.link: LinkPool | None = None
        # Several instances on one store: each device message reaches one (broker.reading).
        self.queue: NatsQueueReader | None = None
        self.relay: DeviceRelay | None = None
        self.driver: RoundDriver | None = None
        self._driver_factory = driver_factory
        self._seen: dict[str, float] = {}
        self._seen_flushed = 0.0
        self._tick_task: asyncio.Task[None] | None = None
        self._runner: object | None = None
        self.http_port: int | None = None
        # Store work runs on the state thread, network I/O on the loop ``start`` runs in.
        self.state = StateThread()
        self._net_loop: asyncio.AbstractEventLoop | None = None
        self._next_refresh = 0.0

    # ---------------------------------------------------------------- wiring
    @property
    def public_url(self) -> str:
        """The URL devices reach this coordinator at (``http.public_url``, else the bind)."""
        return self.config.http.base_url(self.http_port)

    def driver_context(self) -> DriverContext:
        return DriverContext(
            store=self.store,
            catalog=self.catalog,
            tasks=self.tasks,
            enrollment=self.enrollment,
            clock=self.clock,
            publish=self.publish,
            model_url_prefix=f"{self.public_url}/v1/models/",
            pace=self.config.pace,
            observer=self.metrics.rounds,
            ownership=self.ownership,
            follow=self.follow,
            held_out=self.held_out,
            spread_cohorts=self.config.cluster.spread_cohorts,
        )

    def api_context(self) -> ApiContext:
        """What the HTTP handlers may use (``api.context``): they never see the service."""
        limits = self.config.limits
        return ApiContext(
            store=self.store,
            blobs=self.blobs,
            catalog=self.catalog,
            tasks=self.tasks,
            enrollment=self.enrollment,
            clock=self.clock,
            admin_token=self.admin_token,
            metrics_token=self.config.metrics.token,
            coordinator_public_key=self.signer.public_key_bytes(),
            device_limiter=self.device_limiter,
            enroll_rate_per_s=limits.enroll_rate_per_s,
            enroll_burst=limits.enroll_burst,
            max_upload_bytes=self.config.http.max_upload_bytes,
            http_requests=self.metrics.http_requests,
            exposition=self.metrics.exposition,
            mqtt_connected=lambda: self.link is not None and self.link.connected,
            mqtt_endpoint=self._mqtt_endpoint,
            config_view=lambda: describe(self.config),
            state=self.state,
            mqtt_nodes=() if self.embedded else tuple(self.config.broker.addresses[1:]),
            mqtt_protocol=4 if self.config.broker.nats else None,
            mqtt_inbox_qos=None if self.config.broker.device_inbox_qos == 1 else 0,
        )

    def _mqtt_client_id(self, username: str) -> str:
        """On NATS, several instances log in as one user: a shared client id would make each
        login end the other's session (MQTT's takeover), so each adds its instance id."""
        if self.config.broker.nats:
            return f"{username}-{self.ownership.instance_id}"
        return username

    def _mqtt_endpoint(self) -> tuple[str, int, bool]:
        """(host, port, tls) of the broker devices connect to: the embedded one, or ``broker``."""
        b = self.config.broker
        host, port = (self.embedded.host, self.embedded.port) if self.embedded else (b.host, b.port)
        return host, port, b.tls

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from fedrt.coordinator.api.app import start_http

        self._net_loop = asyncio.get_running_loop()
        self.state.start()
        self.enrollment.sync_broker()
        b = self.config.broker
        host, port = b.host, b.port
        username = b.username or (COORDINATOR_USERNAME if b.password else None)
        password = b.password.reveal() if b.password else None
        if b.embedded:
            auth = None
            if not b.embedded_anonymous:
                username, password = COORDINATOR_USERNAME, secrets.token_urlsafe(24)
                auth = EmbeddedAuth(
                    verify=embedded_verifier(
                        self.state, self.store, coordinator=(COORDINATOR_USERNAME, password)
                    ),
                    coordinator_username=COORDINATOR_USERNAME,
                )
            self.embedded = EmbeddedBroker(b.embedded_host, b.embedded_port, auth=auth)
            await self.embedded.start()
            host, port = self.embedded.host, self.embedded.port
        http = self.config.http
        self._runner, self.http_port = await start_http(
            self.api_context(),
            host=http.host,
            port=http.port,
            ssl_context=self.https.context if self.https is not None else None,
        )
        self.enrollment.endpoint = CoordinatorEndpoint(
            url=self.public_url, ca_pem=self.https.ca_pem if self.https is not None else None
        )
        if self._driver_factory is not None:
            # Made on the state thread: it claims its tasks and recovers them from the store.
            self.driver = await self.state.call(self._driver_factory, self.driver_context())
        # The fleet's presence value (``tasks.ownership``): it changes when rounds were lost,
        # here at a restart (the driver took its tasks back) or by a takeover.
        self.incarnation = self.ownership.incarnation
        plan = reading_plan(b, shared_store=self.config.store.url is not None,
                            instance_id=self.ownership.instance_id,
                            runs_rounds=self.driver is not None)  # fmt: skip
        if plan.split:
            self.relay = DeviceRelay(self.store, self.ownership.instance_id, self.publish,
                                     self.config.pace, clock=self.clock)  # fmt: skip
        self.link = LinkPool(
            LinkSettings(
                host=host,
                port=port,
                username=username,
                password=password,
                # Brokers bind a client id to its username (use_username_as_clientid).
                identifier=self._mqtt_client_id(username or COORDINATOR_USERNAME),
                tls=broker_tls_context(b) if b.tls else None,
                subscriptions=plan.subscriptions,
                protocol=plan.protocol,
                fallbacks=() if b.embedded else b.addresses[1:],
                max_qos=b.max_qos,
                status_topic=coordinator_status(),
                incarnation=self.incarnation,
                followed_file=self.config.data_dir / FOLLOWED_FILE,
            ),
            self._on_mqtt_message,
            connections=b.connections,
        )
        await self.link.start()
        if plan.queue_subject is not None:
            self.queue = NatsQueueReader(
                QueueSettings(servers=b.nats_urls, subject=plan.queue_subject, queue=QUEUE_GROUP,
                              direct=(plan.relay_subject,) if plan.relay_subject else (),
                              username=username, password=password,
                              tls=broker_tls_context(b) if b.tls else None,
                              name=self._mqtt_client_id(username or COORDINATOR_USERNAME)),
                self._on_mqtt_message,
            )  # fmt: skip
            await self.queue.start()
            if self.relay is not None and plan.relay_subject is not None:
                self.relay.forward = self._forward_core
        log.info("device traffic: %s", plan.why)
        self._tick_task = asyncio.create_task(self._tick_loop(), name="fedrt-tick")
        log.info("coordinator up: %s (listening on %s:%d), mqtt %s:%d (%d publishing"
                 " connections)", self.public_url, self.config.http.host, self.http_port, host,
                 port, len(self.link.links))  # fmt: skip

    async def stop(self) -> None:
        """Graceful: stop ticking, let the driver persist, flush the outbox, close all."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self.driver is not None:
            await self.state.call(self.driver.on_shutdown, self.clock())
        await self.state.call(self._flush_seen, force=True)
        if self.queue is not None:
            await self.queue.stop()
        if self.relay is not None:
            log.info("device relay: %d forwarded to their task's owner, %d answered here",
                     self.relay.forwarded, self.relay.answered)  # fmt: skip
        if self.link is not None:
            await self.link.flush(timeout=2.0)
            await self.link.stop()
        if self._runner is not None:
            from fedrt.coordinator.api.app import stop_http

            await stop_http(self._runner)
            self._runner = None
        if self.embedded is not None:
            await self.embedded.stop()
        self.state.stop()
        self.store.close()
        log.info("coordinator stopped")

    # ---------------------------------------------------------------- the driver hook
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message for the broker (sent in order, resent across reconnects)."""
        if self.link is None:
            raise ConfigError("the MQTT link is not started")
        loop = self._net_loop
        if loop is None or running_loop() is loop:
            self.link.enqueue(topic, payload, qos, retain)
        else:  # from the state thread: the link belongs to the network loop (in order)
            loop.call_soon_threadsafe(self._enqueue, topic, payload, qos, retain)

    def _enqueue(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if self.link is None:
            return  # stopped meanwhile
        try:
            self.link.enqueue(topic, payload, qos, retain)
        except FedrtError as exc:
            log.error("cannot queue a message for %s: %s", topic, exc)

    def follow(self, filters: Sequence[str], on: bool) -> None:
        """(Un)subscribe the link to topic filters (the cohort topics of the rounds this
        instance runs), in order with ``publish``: a cohort's SUBSCRIBE precedes its plans."""
        loop = self._net_loop
        if self.link is None:
            return  # no round forms before the link is up
        if loop is None or running_loop() is loop:
            self.link.follow(filters, on)
        else:
            loop.call_soon_threadsafe(self.link.follow, tuple(filters), on)

    async def _on_mqtt_message(self, topic: str, payload: bytes) -> None:
        # Acknowledged to the broker only once handled (the link awaits this): at least once.
        await self.state.call(self.on_device_message, topic, payload)

    def on_device_message(self, topic: str, payload: bytes) -> str:
        """Authenticate, meter and route one device message (``rounds.routing``); returns
        the outcome label. Each rejection is logged and counted, and changes nothing."""
        routing = self.router.route(
            topic, payload, relaying=self.relay is not None, driving=self.driver is not None
        )
        size = len(payload)
        if isinstance(routing, Refused):
            return self._count(routing.channel, routing.outcome, size, routing.why)
        driver = self.driver
        if isinstance(routing, Offered):
            assert driver is not None
            task_id = routing.task_id
            return self._drive(
                "offer", size, task_id, lambda: driver.on_cohorts_offered(task_id, self.clock())
            )
        up, ch = routing.up, routing.up.channel.value
        now = self.clock()
        self._seen[up.device_id] = now
        if routing.route is Route.NO_DRIVER:
            return self._count(ch, "no_driver", size, None)
        assert driver is not None
        if routing.route is Route.RELAY:
            assert self.relay is not None
            routed = self.relay.route(up.device_id, up.channel, payload, now)
            if routed is not None:  # another instance's task: forwarded, or answered here
                return self._count(ch, routed, size, None)
        return self._drive(
            ch, size, up.device_id, lambda: driver.on_device_message(up, payload, now)
        )

    def _drive(self, channel: str, size: int, who: str, call: Callable[[], None]) -> str:
        """Hand a message to the driver: "accepted", or "rejected" if it raises."""
        try:
            call()
        except FedrtError as exc:
            return self._count(channel, "rejected", size, f"{who}: {exc!r}")
        return self._count(channel, "accepted", size, None)

    def _forward_core(self, topic: str, payload: bytes) -> None:
        """A receiver's forward to the owner over core NATS (``broker.reading``)."""
        loop, queue = self._net_loop, self.queue
        if loop is not None and queue is not None:
            loop.call_soon_threadsafe(queue.publish_soon, topic, payload)

    def _count(self, channel: str, outcome: str, size: int, why: object) -> str:
        self.metrics.mqtt_messages.labels(channel=channel, outcome=outcome).inc()
        self.metrics.mqtt_bytes.labels(channel=channel).inc(size)
        if why is not None:
            log.warning("device message %s: %s", outcome, why)
        return outcome

    def tick(self) -> None:
        """One periodic step: deadlines (driver), last-seen bookkeeping."""
        now = self.clock()
        if self.driver is not None:
            try:
                self.driver.on_tick(now)
            except FedrtError as exc:
                log.error("round driver tick failed: %r", exc)
        self._flush_seen()
        # On a shared store other instances enroll and revoke devices too.
        if self.config.store.url is not None and time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + self.config.cluster.lease_s / 3
            try:
                self.enrollment.refresh()
            except FedrtError as exc:
                log.error("cannot refresh the broker's device accounts: %r", exc)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            try:
                await self.state.call(self.tick)
            except Exception:  # the loop must outlive any one tick: rounds depend on it
                log.exception("coordinator tick failed")
            if self.link is not None:
                self.link.set_incarnation(self.ownership.incarnation)

    def _flush_seen(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._seen or (not force and now - self._seen_flushed < _SEEN_FLUSH_S):
            return
        seen, self._seen, self._seen_flushed = self._seen, {}, now

        def touch() -> None:
            with self.store.transaction():
                for device_id, at in seen.items():
                    with contextlib.suppress(FedrtError):
                        self.store.touch_device(device_id, at=at)

        try:
            retry_races(touch)
        except FedrtError as exc:  # last-seen times are advisory: the next flush has them
            log.warning("cannot record when devices were last seen: %r", exc)

    def _task_changed(self, task: TaskRecord) -> None:
        if self.driver is not None:
            self.driver.on_task_change(task)


__all__ = [
    "ADMIN_TOKEN_FILE", "COORDINATOR_USERNAME", "CoordinatorService", "load_admin_token",
    "open_store",
]  # fmt: skip
