"""A coordinator and its MQTT broker on loopback, run from this process for a simulation.

The broker is a managed Mosquitto when one is installed (the coordinator writes its
password and ACL files and reloads it, as in production), else the coordinator's embedded
broker; ``broker`` may also name an external ``mqtt://`` URL, or ``nats-cluster``: three
NATS nodes of its own (JetStream, MQTT 3.1.1), whose users the coordinator manages. The
coordinator service runs its own asyncio loop on a thread; everything that touches its
store goes through ``call`` so it runs on that loop's thread.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from fedrt.coordinator.broker.mosquitto import BrokerConfig as MosquittoConfig
from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.broker.nats import NatsCluster
from fedrt.coordinator.broker.nats_auth import NatsAuth
from fedrt.coordinator.config import (
    BrokerConfig,
    ClusterConfig,
    CoordinatorConfig,
    HttpConfig,
    LimitsConfig,
    Secret,
    StoreConfig,
)
from fedrt.coordinator.driver import DriverFactory
from fedrt.coordinator.driver_registry import default_driver_factory
from fedrt.coordinator.security.credentials import bcrypt_hash, hash_password
from fedrt.coordinator.security.signing import KEY_FILE
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.service import ADMIN_TOKEN_FILE, COORDINATOR_USERNAME, CoordinatorService
from fedrt.errors import UsageError
from fedrt.simulation.instances import Instances, instance_id, mosquitto_accounts

T = TypeVar("T")
NATS_CLUSTER = "nats-cluster"
_START_TIMEOUT_S = 30.0


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


class LocalStack:
    """Broker + coordinator for one simulation; ``start()`` then ``stop()``."""

    def __init__(
        self,
        directory: Path,
        *,
        broker: str = "auto",
        driver_factory: DriverFactory | None = None,
        http_host: str = "127.0.0.1",
        http_port: int = 0,
        tick_interval_s: float = 0.1,
        coordinators: int = 1,
        store_url: str | None = None,
        pace: PaceConfig | None = None,
        inbox_qos: int = 1,
    ) -> None:
        self.directory = directory
        self.coordinators = coordinators
        self.store_url = store_url
        # Pace steering of instances of their own (the in-process driver gets its own).
        self.pace = pace
        self.inbox_qos = inbox_qos
        # coordinators > 1: the instances running rounds, processes of their own.
        self.instances: Instances | None = None
        self.broker_choice = broker
        self.driver_factory = driver_factory
        self.http_host, self.http_port = http_host, http_port
        self.tick_interval_s = tick_interval_s
        self.mosquitto: MosquittoBroker | None = None
        self.nats: NatsCluster | None = None
        self.service: CoordinatorService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.broker_kind = ""
        # Devices speak MQTT 5 to Mosquitto; the embedded amqtt broker knows only 3.1.1.
        self.mqtt_protocol = 5

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        choice = self.broker_choice
        if choice == "auto":
            choice = "mosquitto" if mosquitto_available() else "embedded"
        many = self.coordinators > 1
        broker = self._broker_config(choice)
        if self.inbox_qos != broker.device_inbox_qos:
            broker = broker.model_copy(update={"device_inbox_qos": self.inbox_qos})
        if many:
            broker = mosquitto_accounts(broker, self.coordinators)
        config = CoordinatorConfig(
            data_dir=self.directory / "coordinator",
            tick_interval_s=self.tick_interval_s,
            http=HttpConfig(host=self.http_host, port=self.http_port),
            broker=broker,
            # Every simulated device enrolls and talks from 127.0.0.1.
            limits=LimitsConfig(enroll_rate_per_s=10_000.0, enroll_burst=10_000),
            store=StoreConfig(url=Secret(self.store_url) if self.store_url else None),
            cluster=ClusterConfig(instance_id="sim-api" if many else instance_id(0)),
        )
        # With several instances this one serves the API only; they run the rounds.
        factory = None if many else self.driver_factory or default_driver_factory()
        self.service = CoordinatorService(config, driver_factory=factory)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fedrt-coordinator")
        self._thread.daemon = True
        self._thread.start()
        self._await(self.service.start(), _START_TIMEOUT_S)
        if many:
            assert self.store_url is not None
            data = config.data_dir
            self.instances = Instances(
                self.directory / "instances",
                self.coordinators,
                store_url=self.store_url,
                broker=broker,
                admin_token=(data / ADMIN_TOKEN_FILE).read_text().strip(),
                key_from=data / KEY_FILE,
                tick_interval_s=self.tick_interval_s,
                pace=self.pace,
            )
            self.instances.start()

    def _broker_config(self, choice: str) -> BrokerConfig:
        if choice == "embedded":
            self.broker_kind, self.mqtt_protocol = "embedded", 4
            return BrokerConfig(url="embedded", embedded_port=0)
        if choice == NATS_CLUSTER:
            return self._nats_cluster()
        if choice != "mosquitto":
            if not choice.startswith(("mqtt://", "mqtts://")):
                raise UsageError(
                    f"--broker must be mosquitto, embedded, {NATS_CLUSTER} or an mqtt:// URL:"
                    f" {choice}"
                )
            self.broker_kind = choice
            return BrokerConfig(url=choice)
        # A managed Mosquitto: the coordinator owns its password and ACL files. They must
        # exist (with the coordinator's own account) before the broker starts.
        directory = self.directory / "mosquitto"
        directory.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        auth = MosquittoFileAuth(
            password_file=directory / "passwords",
            acl_file=directory / "acl",
            coordinator_username=COORDINATOR_USERNAME,
            coordinator_password_hash=hash_password(password),
        )
        auth.sync([])
        self.mosquitto = MosquittoBroker(
            MosquittoConfig(
                directory=directory,
                allow_anonymous=False,
                password_file=auth.password_file,
                acl_file=auth.acl_file,
            )
        )
        self.mosquitto.start()
        self.broker_kind = "mosquitto"
        return BrokerConfig(
            url=f"mqtt://{self.mosquitto.host}:{self.mosquitto.port}",
            username=COORDINATOR_USERNAME,
            password=Secret(password),
            password_file=auth.password_file,
            acl_file=auth.acl_file,
            pid_file=self.mosquitto.pid_file,
        )

    def _nats_cluster(self) -> BrokerConfig:
        """Three NATS nodes of our own; the coordinator writes their users (NatsAuth)."""
        cluster = NatsCluster(self.directory / "nats")
        cluster.directory.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        NatsAuth(
            auth_file=cluster.auth_path,
            coordinator_username=COORDINATOR_USERNAME,
            coordinator_password_hash=bcrypt_hash(password),
        ).sync([])
        self.nats = cluster
        cluster.start()
        # NATS 2.9 speaks MQTT 3.1.1 only (a v5 CONNECT gets CONNACK 132).
        self.broker_kind, self.mqtt_protocol = NATS_CLUSTER, 4
        (host, port), *others = cluster.mqtt_addresses
        return BrokerConfig(
            url=f"mqtt://{host}:{port}",
            nodes=tuple(f"{h}:{p}" for h, p in others),
            username=COORDINATOR_USERNAME,
            password=Secret(password),
            nats_auth_file=cluster.auth_path,
            nats_pid_files=tuple(str(p) for p in cluster.pid_files),
            # Instances read the device topics in a queue group (broker/reading.py).
            nats_urls=tuple(f"nats://{n.host}:{n.ports.client}" for n in cluster.nodes),
        )

    def stop(self) -> None:
        if self.instances is not None:
            self.instances.stop()
            self.instances = None
        if self.service is not None and self._loop is not None and self._loop.is_running():
            try:
                self._await(self.service.stop(), 20.0)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(10.0)
                self._loop.close()
        self.service = None
        if self.mosquitto is not None:
            self.mosquitto.stop()
            self.mosquitto = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ access
    @property
    def http_url(self) -> str:
        assert self.service is not None
        return f"http://{self.http_host}:{self.service.http_port}"

    def call(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Run ``fn`` on the coordinator's loop thread and return its result."""
        assert self._loop is not None
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def _await(self, coro: object, timeout: float) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]
