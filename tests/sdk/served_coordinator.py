"""``fedrt coordinator serve`` as a child process on a real broker, driven through ``fedrt.ops``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fedrt.ops.client import OpsClient
from fedrt.ops.connection import Connection
from tests.conftest import SpawnFn
from tests.support.process import ManagedProcess, free_port, http_ok

ADMIN_TOKEN = "served-admin-token-0123456789"
# One device, one plain (no SecAgg) round: what these tests need to see a round commit.
ONE_DEVICE_SPEC: dict[str, Any] = {
    "goal_count": 1,
    "over_selection": 1.0,
    "min_reports": 1,
    "secagg": False,
    "eval_every": 0,
    "max_rounds": 1,
    "checkin_deadline_s": 30.0,
    "training_deadline_s": 30.0,
}
T = TypeVar("T")


class Broker(Protocol):
    """The ``mosquitto`` fixture's broker, as far as these tests need it."""

    @property
    def url(self) -> str: ...


def until(
    check: Callable[[], T], timeout: float, what: str, proc: ManagedProcess | None = None
) -> T:
    """``check()``'s first truthy value, polled for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and not proc.running:
            raise AssertionError(f"{what}: {proc.argv[2:5]} exited:\n{proc.log_tail()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class ServedCoordinator:
    url: str
    ops: OpsClient
    proc: ManagedProcess

    def token(self) -> str:
        return str(self.ops.create_enrollment_token(note="test")["token"])

    def start_task(self, model_dir: Path, **spec: Any) -> str:
        """A task on ``model_dir`` (an export folder on this host), started."""
        task = self.ops.create_task(name="t", model_dir=str(model_dir), spec=ONE_DEVICE_SPEC | spec)
        task_id = str(task["task_id"])
        self.ops.task_action(task_id, "start")
        return task_id

    def committed(self, task_id: str) -> list[dict[str, Any]]:
        reply = self.ops.list_rounds(task_id)
        rounds = reply["rounds"] if isinstance(reply, dict) else reply
        return [r for r in rounds if r["status"] == "committed"]


def serve_coordinator(spawn: SpawnFn, broker_url: str, data_dir: Path) -> ServedCoordinator:
    """The coordinator's own command, with pace steering and ticks shortened for a test."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "fedrt", "coordinator", "serve", "--data-dir", str(data_dir),
            "--http", f"127.0.0.1:{port}", "--broker", broker_url,
            "--pace-min-delay", "0.3", "--pace-spread", "0.5"]  # fmt: skip
    env = {"FEDRT_ADMIN_TOKEN": ADMIN_TOKEN, "FEDRT_TICK_INTERVAL_S": "0.1"}
    proc = spawn(argv, name="coordinator", env=env)
    proc.wait_ready(http_ok(f"{url}/healthz"), timeout=60)
    return ServedCoordinator(
        url=url, ops=OpsClient(Connection(url=url, token=ADMIN_TOKEN)), proc=proc
    )
