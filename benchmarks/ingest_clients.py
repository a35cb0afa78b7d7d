"""The two ends of ``fedrt bench ingest`` that are not the coordinator: device publishers and a
plain subscriber, both bare paho-mqtt clients.

Publishers run in child processes (``spawn``) so that the coordinator's process holds only the
coordinator, which is what its RSS figures claim to measure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fedrt.protocol.topics import device_up_filter

_CONNECT_TIMEOUT_S = 30.0
# Connecting hundreds of clients at once on a small machine starves their threads until the
# broker times their CONNECTs out; a few dozen at a time connect promptly.
_CONNECT_BATCH = 25


@dataclass(frozen=True, slots=True, kw_only=True)
class PublisherJob:
    """One child process's share of the devices: each publishes ``updates`` payloads."""

    host: str
    port: int
    topics: Sequence[str]
    payload: bytes
    updates: int
    timeout_s: float


def run_publishers(job: PublisherJob, ready: EventType, go: EventType, results: Any) -> None:
    """Child-process body: connect every device, wait for ``go``, publish at QoS 1, report.

    Puts ``(published, seconds)`` on ``results``; every publish is waited for (PUBACK), so
    the figure is what the broker accepted, not what paho buffered.
    """
    clients: list[tuple[mqtt.Client, str]] = []
    try:
        for topic in job.topics:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id="bench-" + topic.split("/")[3],
                protocol=mqtt.MQTTv311,
            )
            client.connect(job.host, job.port, keepalive=120)
            client.loop_start()
            clients.append((client, topic))
            if len(clients) % _CONNECT_BATCH == 0:
                _wait_connected(clients[-_CONNECT_BATCH:])
        _wait_connected(clients)
        ready.set()
        if not go.wait(job.timeout_s):
            results.put((0, 0.0))
            return
        start = time.perf_counter()
        infos = []
        for _ in range(job.updates):
            for client, topic in clients:
                infos.append(client.publish(topic, job.payload, qos=1))
        end = time.monotonic() + job.timeout_s
        done = 0
        for info in infos:
            done += _wait_published(info, end)
        results.put((done, time.perf_counter() - start))
    finally:
        for client, _ in clients:
            client.disconnect()
            client.loop_stop()


def _wait_published(info: mqtt.MQTTMessageInfo, end: float) -> bool:
    """Wait for the PUBACK until ``end``, across reconnects (paho resends after one)."""
    while not info.is_published() and time.monotonic() < end:
        try:
            info.wait_for_publish(min(1.0, max(0.0, end - time.monotonic())))
        except RuntimeError:  # not connected right now
            time.sleep(0.1)
    return info.is_published()


def _wait_connected(clients: Sequence[tuple[mqtt.Client, str]]) -> None:
    deadline = time.monotonic() + _CONNECT_TIMEOUT_S
    while not all(c.is_connected() for c, _ in clients) and time.monotonic() < deadline:
        time.sleep(0.005)


class RawSubscriber:
    """A plain paho subscriber to every device's up-topics that counts what arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv311
        )
        self.client.on_message = self._on_message
        self.host, self.port = host, port
        self.count = 0
        self.bytes = 0
        self.target = 0
        self.done_at: float | None = None
        self.done = threading.Event()

    def start(self) -> None:
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        self.client.subscribe(device_up_filter(), qos=1)
        if not subscribed.wait(_CONNECT_TIMEOUT_S):
            raise TimeoutError("the raw subscriber's SUBSCRIBE was not acknowledged")

    def arm(self, target: int) -> None:
        self.count, self.bytes, self.target, self.done_at = 0, 0, target, None
        self.done.clear()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        self.bytes += len(msg.payload)
        if self.count == self.target:
            self.done_at = time.perf_counter()
            self.done.set()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


__all__ = ["PublisherJob", "RawSubscriber", "run_publishers"]
