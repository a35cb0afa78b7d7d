"""``fedrt simulate --coordinators N``: coordinator instances as separate processes.

Each instance is a ``fedrt coordinator serve`` of its own on one PostgreSQL store and the
run's broker, with its own data dir (the signing key copied in, as an operator would), HTTP
port and public URL, and instance id ``sim-K``. Which instance runs the task is decided by
their leases (``coordinator.tasks.ownership``); the simulation's own coordinator serves only
the API (enrollment, models) and reads the rounds from the store. ``kill`` is kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from fedrt.benchmarks.processes import ManagedProcess, http_ok
from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.coordinator.security.credentials import Secret
from fedrt.coordinator.security.signing import KEY_FILE
from fedrt.coordinator.selection.pace import PaceConfig

__all__ = ["Instances", "instance_id"]

_START_TIMEOUT_S = 60.0


def instance_id(index: int) -> str:
    return f"sim-{index + 1}"


def mosquitto_accounts(broker: BrokerConfig, count: int) -> BrokerConfig:
    """A managed Mosquitto ties client ids to usernames: each instance logs in as a user of
    its own (``coordinator_accounts``); the simulation's own coordinator keeps ``username``."""
    if broker.password_file is None or broker.username is None:
        return broker
    names = tuple(_username(broker.username, i) for i in range(count))
    return broker.model_copy(update={"coordinator_accounts": (broker.username, *names)})


def _username(base: str, index: int) -> str:
    return f"{base}-{instance_id(index)}"


def _as_instance(broker: BrokerConfig, index: int) -> BrokerConfig:
    if not broker.coordinator_accounts or broker.username is None:
        return broker
    return broker.model_copy(update={"username": _username(broker.username, index)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def broker_toml(broker: BrokerConfig) -> str:
    """``[broker]`` as set for this run (the coordinator's broker password included)."""
    # Attribute values, not model_dump: a dump shows a Secret as "***".
    fields = {
        name: getattr(broker, name)
        for name, info in BrokerConfig.model_fields.items()
        if getattr(broker, name) != info.default
    }
    return "[broker]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in sorted(fields.items()))


class Instances:
    """The run's coordinator processes; ``start`` them, ``kill`` one, ``stop`` all."""

    def __init__(
        self,
        directory: Path,
        count: int,
        *,
        store_url: str,
        broker: BrokerConfig,
        admin_token: str,
        key_from: Path,
        tick_interval_s: float,
        pace: PaceConfig | None = None,
    ) -> None:
        self.directory = directory
        self.count = count
        self._store_url = store_url
        self._broker = broker
        self._admin_token = admin_token
        self._key_from = key_from
        self._tick_interval_s = tick_interval_s
        self._pace = pace or PaceConfig()
        self.procs: dict[str, ManagedProcess] = {}
        self.urls: dict[str, str] = {}

    def start(self) -> None:
        for index in range(self.count):
            self._start(index)
        for name, proc in self.procs.items():
            proc.wait_ready(http_ok(self.urls[name] + "/healthz"), _START_TIMEOUT_S)

    def _start(self, index: int) -> None:
        name = instance_id(index)
        broker = _as_instance(self._broker, index)
        home = self.directory / name
        (home / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy2(self._key_from, home / "data" / KEY_FILE)
        config = home / "coordinator.toml"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # broker password
        with os.fdopen(fd, "w") as fh:
            fh.write(f"tick_interval_s = {self._tick_interval_s}\n" + broker_toml(broker))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "fedrt", "coordinator", "serve", "--config", str(config),
                "--http", f"127.0.0.1:{port}", "--public-url", url,
                "--data-dir", str(home / "data"), "--instance-id", name,
                "--pace-min-delay", str(self._pace.min_delay),
                "--pace-spread", str(self._pace.spread),
                "--pace-rate", str(self._pace.target_rate)]  # fmt: skip
        env = {**os.environ, "FEDRT_STORE_URL": self._store_url,
               "FEDRT_ADMIN_TOKEN": self._admin_token}  # fmt: skip
        self.urls[name] = url
        self.procs[name] = ManagedProcess(argv, log_path=home / "serve.log", env=env).start()

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def running(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.running]

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=10)

    def log_tail(self, name: str, lines: int = 30) -> str:
        return self.procs[name].log_tail(lines)
