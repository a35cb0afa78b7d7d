"""A live round: the served coordinator (``FederatedDriver``) on a real Mosquitto, with devices
that speak the round protocol by hand over paho, so that a test can make one misbehave."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fedrt.benchmarks.ingest_driver import register_devices
from fedrt.coordinator.config import LimitsConfig
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.rounds.versions import flatten
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.service import CoordinatorService
from fedrt.model_export.manifest import Manifest
from fedrt.model_export.weights_file import read_weights
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.round_codec import decode_from_coordinator, encode_message
from fedrt.protocol.topics import UpChannel, device_inbox, device_up
from tests.coordinator.harness import ServiceThread, make_config

MODEL_DIR = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"
TIMEOUT = 30.0
M = TypeVar("M")


@contextmanager
def live_coordinator(
    directory: Path, broker_url: str, limits: LimitsConfig | None = None
) -> Iterator[ServiceThread]:
    """``CoordinatorService`` with the served driver, its pace steering shortened."""

    def factory(ctx: Any) -> FederatedDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.3, spread=0.5), retry_delay_s=0.3)

    config = make_config(directory, broker_url, limits=limits or LimitsConfig())
    with ServiceThread(config, factory) as service:
        yield service


def start_task(service: ServiceThread, devices: list[str], **spec: Any) -> str:
    """Enroll ``devices``, create a plain (no SecAgg) one-round task on the MLP fixture, start
    it and return once round 1 is open."""
    store = service.service.store
    service.run(register_devices, store, devices)
    base = {"secagg": False, "eval_every": 0, "max_rounds": 1, "quantization_bits": 8}
    body = {"name": "live", "model_dir": str(MODEL_DIR), "spec": base | spec}
    task_id = str(service.request("POST", "/v1/tasks", body=body).json()["task_id"])
    assert service.request("POST", f"/v1/tasks/{task_id}/start", body={}).status < 300
    # Round 1 opens on the driver's next tick: a check-in before that is sent away.
    wait_for(lambda: service.run(store.list_rounds, task_id), "round 1 to open")
    return task_id


def model_weights(svc: CoordinatorService, sha256: str) -> np.ndarray:
    record = svc.store.get_model(sha256)
    manifest = Manifest.from_dict(record.manifest)
    return flatten(read_weights(svc.catalog.blobs.read(sha256), manifest)).astype(np.float64)


def wait_for(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class RawDevice:
    """One device's MQTT client; every coordinator message it gets is decoded and kept."""

    def __init__(self, host: str, port: int, device_id: str, task_id: str) -> None:
        self.device_id, self.task_id = device_id, task_id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311
        )
        self.client.on_message = self._on_message
        self.host, self.port = host, port
        self.inbox: queue.Queue[rm.CoordinatorMessage] = queue.Queue()
        self.seen: list[rm.CoordinatorMessage] = []
        self.next_id = 1
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_message(self, c: object, u: object, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(decode_from_coordinator(msg.payload))

    def connect(self) -> RawDevice:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(device_inbox(self.device_id), qos=1)
        assert self._subscribed.wait(TIMEOUT), "SUBACK"
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.reinitialise()  # closes paho's sockets now, not at a later gc

    def publish(self, channel: UpChannel, data: bytes) -> None:
        info = self.client.publish(device_up(self.device_id, channel), data, qos=1)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def send(self, channel: UpChannel, message: rm.DeviceMessage) -> bytes:
        data = encode_message(message)
        self.publish(channel, data)
        return data

    def msg_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def check_in(self) -> bytes:
        message = rm.CheckIn(msg_id=self.msg_id(), task_id=self.task_id, sdk_version="test")
        return self.send(UpChannel.CHECKIN, message)

    def update(self, plan: rm.Plan, delta: np.ndarray, examples: int) -> bytes:
        vector = round_update.encode(
            delta, examples, plan.update, np.random.default_rng(examples), weighted=False
        )
        message = rm.StageResponse(
            msg_id=self.msg_id(),
            task_id=self.task_id,
            round_id=plan.round_id,
            stage=rm.Stage.PLAIN_UPDATE,
            payload=round_update.pack(vector, plan.update.bits),
        )
        return self.send(UpChannel.UPDATE, message)

    def expect(
        self, kind: type[M], where: Callable[[M], bool] = lambda _: True, timeout: float = TIMEOUT
    ) -> M:
        """The first message of ``kind`` (seen before or arriving) that satisfies ``where``."""
        for old in self.seen:
            if isinstance(old, kind) and where(old):
                return old
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.device_id}: no {kind.__name__} arrived") from None
            self.seen.append(message)
            if isinstance(message, kind) and where(message):
                return message

    def acks(self, msg_id: int) -> list[rm.AckStatus]:
        """Statuses of the acks this device got so far for its message ``msg_id``."""
        while not self.inbox.empty():
            self.seen.append(self.inbox.get_nowait())
        return [m.status for m in self.seen if isinstance(m, rm.Ack) and m.acked == msg_id]
