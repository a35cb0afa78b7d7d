"""Seconds from a coordinator killed -9 mid-round to the next committed round, on loopback.

``python -m fedrt.benchmarks.coordinator_restart [--stage training] [--devices 3]``

Mosquitto and ``fedrt coordinator serve`` run as processes on 127.0.0.1; the devices are
SDK ``Device``s in this process with the SDK's default timers (``ParticipantConfig``) and
the coordinator's default pace steering. One device withholds its answer of the chosen
stage (its transport drops the publish, its outbox keeps it), so the round waits in that
stage; the coordinator is killed -9 there and started again on the same data dir, the
device stops withholding, and the clock runs from the kill until a later round commits with
every device in it. Target (issue 16): at most 60 s. ``tests/coordinator/
test_coordinator_restart.py`` runs the same scenario with a bound instead of a clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fedrt.benchmarks.deployment import DEFAULT_MODEL_DIR, FEATURES, until
from fedrt.benchmarks.processes import ManagedProcess, free_port, http_ok
from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.device_hub import DeviceHub
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.sdk.transport import MqttConfig, PahoTransport

__all__ = ["STAGES", "RestartFigures", "RestartScenario", "main"]

TOKEN = "restart-admin-token-0123456789"
TARGET_S = 60.0
# Round states a round can be held in (``RoundState`` values), and the answers that close them.
STAGES = ("check_in", "training", "share_keys", "masked_input", "consistency_check", "unmask")


@dataclass(frozen=True, slots=True)
class RestartFigures:
    stage: str
    kill_to_commit_s: float
    # Rounds the restarted coordinator opened until one committed (1 is the least).
    rounds_after_kill: int


def _answers(payload: bytes, stage: str) -> bool:
    """Whether ``payload`` is what a device sends to get a round out of ``stage``."""
    msg = decode_from_device(payload)
    if stage == "check_in":
        return isinstance(msg, rm.CheckIn)
    if not isinstance(msg, rm.StageResponse):
        return False
    if stage == "training":
        return msg.stage in (rm.Stage.ADVERTISE_KEYS, rm.Stage.PLAIN_UPDATE)
    return msg.stage is rm.Stage[stage.upper()]


class Withholding(PahoTransport):
    """Drops this device's answers for ``stage`` while ``hold`` is set (the outbox keeps them,
    as for a device whose link stalls), so the round waits for it in that stage."""

    def __init__(self, config: MqttConfig, stage: str, hold: threading.Event) -> None:
        super().__init__(config)
        self.stage, self.hold = stage, hold
        self.withheld = 0

    def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        if self.hold.is_set() and _answers(payload, self.stage):
            self.withheld += 1
            return
        super().publish(topic, payload, **kwargs)


class RestartScenario:
    """Broker, coordinator process and devices for one restart measurement (a context
    manager: everything it started is stopped on exit)."""

    def __init__(
        self,
        root: Path,
        *,
        stage: str = "training",
        devices: int = 3,
        participant: Mapping[str, float] | None = None,
        hub: bool = False,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}")
        self.root, self.stage, self.n = root, stage, max(3, devices)
        self.participant = dict(participant or {})
        self.hub = DeviceHub(name="restart-hub") if hub else None
        self.hold = threading.Event()
        self.devices: list[Device] = []
        self.transports: list[Withholding] = []
        self.broker: MosquittoBroker | None = None
        self.coordinator: ManagedProcess | None = None
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.task_id = ""
        self._starts = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RestartScenario:
        self.root.mkdir(parents=True, exist_ok=True)
        self.broker = MosquittoBroker(BrokerConfig(directory=self.root / "mosquitto"))
        self.broker.start()
        if self.hub is not None:
            self.hub.start()
        self.start_coordinator()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for device in self.devices:
            device.stop()
            device.store.close()
        if self.hub is not None:
            self.hub.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        if self.broker is not None:
            self.broker.stop()

    def start_coordinator(self) -> None:
        assert self.broker is not None
        self._starts += 1
        argv = [sys.executable, "-m", "fedrt", "coordinator", "serve", "--data-dir",
                str(self.root / "coordinator"), "--http", f"127.0.0.1:{self.port}",
                "--broker", self.broker.url]  # fmt: skip
        log = self.root / "logs" / f"coordinator-{self._starts}.log"
        self.coordinator = ManagedProcess(argv, log_path=log, env={"FEDRT_ADMIN_TOKEN": TOKEN})
        self.coordinator.start().wait_ready(http_ok(f"{self.base}/healthz"), 60)

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def rounds(self) -> list[dict[str, Any]]:
        out = self.api(f"/v1/tasks/{self.task_id}/rounds")
        rounds: list[dict[str, Any]] = out["rounds"] if isinstance(out, dict) else out
        return rounds

    # ------------------------------------------------------------------ the scenario
    def start_task(self) -> None:
        """A SecAgg+ task that wants every device; devices enrolled and started; one holds."""
        spec = {"goal_count": self.n, "over_selection": 1.0, "min_reports": self.n - 1,
                "eval_every": 0, "secagg": True, "max_rounds": 1000}  # fmt: skip
        body = {"name": "restart", "model_dir": str(DEFAULT_MODEL_DIR), "spec": spec}
        self.task_id = self.api("/v1/tasks", body)["task_id"]
        self.hold.set()
        for i in range(self.n):
            self.devices.append(self._device(i))
        self.api(f"/v1/tasks/{self.task_id}/start", {})

    def _device(self, i: int) -> Device:
        directory = self.root / f"device-{i}"
        directory.mkdir(parents=True)
        rng = np.random.default_rng(i)
        x = rng.normal(size=(64, FEATURES)).astype(np.float32)
        store = ExampleStore(directory / "examples.sqlite3", x_shape=(FEATURES,),
                             x_dtype=np.float32)  # fmt: skip
        store.extend(list(x), list(x[:, :4].argmax(axis=1)))
        config = DeviceConfig(data_dir=directory, coordinator_url=self.base,
                              task_id=self.task_id, participant=self.participant)  # fmt: skip

        def transport(mqtt: MqttConfig) -> PahoTransport:
            if i > 0:
                return PahoTransport(mqtt)
            self.transports.append(Withholding(mqtt, self.stage, self.hold))
            return self.transports[-1]

        device = Device(config, store=store, hub=self.hub, transport_factory=transport,
                        device_state=ScriptedDeviceState([(0.0, idle_plugged_in())]))  # fmt: skip
        device.enroll(self.api("/v1/enrollment-tokens", {})["token"])
        device.start()
        return device

    def held_round(self, bound: float) -> dict[str, Any]:
        """The round once it waits in the chosen stage for the withholding device."""

        def held() -> dict[str, Any] | None:
            rounds = self.rounds()
            r = rounds[-1] if rounds else None
            waiting = any(t.withheld for t in self.transports)
            ok = r is not None and r["status"] == "running" and r["stage"] == self.stage
            return r if ok and waiting else None

        found: dict[str, Any] = until(held, bound, f"a round held in {self.stage}", every=0.1)
        return found

    def kill_and_restart(self) -> float:
        """Kill -9 the coordinator, stop withholding, start it again; the kill's time."""
        assert self.coordinator is not None
        self.coordinator.kill()
        killed = time.monotonic()
        self.hold.clear()
        self.start_coordinator()
        return killed

    def committed_after(self, victim: dict[str, Any], bound: float) -> dict[str, Any]:
        """The first round after ``victim`` that committed with every device in it."""

        def done() -> dict[str, Any] | None:
            later = [r for r in self.rounds() if r["round_no"] > victim["round_no"]]
            full = [r for r in later if r["status"] == "committed" and r["reporting"] == self.n]
            return full[0] if full else None

        found: dict[str, Any] = until(done, bound, "a full round committed after the restart")
        return found

    def run(self, bound: float) -> RestartFigures:
        self.start_task()
        victim = self.held_round(bound)
        killed = self.kill_and_restart()
        commit = self.committed_after(victim, bound)
        seconds = time.monotonic() - killed
        return RestartFigures(self.stage, seconds, commit["round_no"] - victim["round_no"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedrt.benchmarks.coordinator_restart",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--stage", choices=STAGES, action="append",
                        help="stage(s) to kill the coordinator in (default: check_in, "
                             "training, masked_input)")  # fmt: skip
    parser.add_argument("--devices", type=int, default=3, help="devices, >= 3 (default 3)")
    parser.add_argument("--bound", type=float, default=300.0, help="give up after (s)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    figures = []
    for stage in args.stage or ["check_in", "training", "masked_input"]:
        root = Path(tempfile.mkdtemp(prefix=f"fedrt-restart-{stage}-"))
        with RestartScenario(root, stage=stage, devices=args.devices) as scenario:
            figures.append(scenario.run(args.bound))
        print(f"logs under {root}", file=sys.stderr)
    print(f"{'killed in':<18} {'kill -9 -> commit (s)':>22} {'rounds':>7} {'target':>7}  met")
    for f in figures:
        met = "yes" if f.kill_to_commit_s <= TARGET_S else "NO"
        print(f"{f.stage:<18} {f.kill_to_commit_s:22.1f} {f.rounds_after_kill:7d} "
              f"{TARGET_S:7.0f}  {met}")  # fmt: skip
    if args.json:
        print(json.dumps({f.stage: f.kill_to_commit_s for f in figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
