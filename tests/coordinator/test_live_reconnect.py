"""Devices whose connection drops mid-upload and comes back (persistent session) are counted
once: the SDK's paho transport, a real Mosquitto and the served coordinator."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.rotation import padded_size
from fedrt.protocol.round_codec import decode_from_coordinator, encode_message
from fedrt.protocol.topics import UpChannel, device_inbox, device_up
from fedrt.sdk.transport import Message, MqttConfig, PahoTransport
from tests.coordinator.live_round import live_coordinator, model_weights, start_task, wait_for
from tests.support.cutting_proxy import CuttingProxy

TIMEOUT = 30.0


class SdkDevice:
    """A device on the SDK's ``PahoTransport`` (MQTT v5, persistent session) via ``proxy``."""

    def __init__(self, proxy: CuttingProxy, device_id: str, task_id: str) -> None:
        self.device_id, self.task_id = device_id, task_id
        self.inbox: queue.Queue[rm.CoordinatorMessage] = queue.Queue()
        self.seen: list[rm.CoordinatorMessage] = []
        config = MqttConfig(
            host=proxy.host,
            port=proxy.port,
            client_id=device_id,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
        )
        self.transport = PahoTransport(config)
        self.transport.subscribe(device_inbox(device_id), self._on_message)
        self.transport.start()
        assert self.transport.wait_connected(TIMEOUT)

    def _on_message(self, message: Message) -> None:
        self.inbox.put(decode_from_coordinator(message.payload))

    def send(self, channel: UpChannel, message: rm.DeviceMessage) -> bytes:
        data = encode_message(message)
        self.publish(channel, data, message.msg_id)
        return data

    def publish(self, channel: UpChannel, data: bytes, msg_id: int) -> None:
        topic = device_up(self.device_id, channel)
        self.transport.publish(topic, data, msg_id=str(msg_id))

    def collect(self) -> list[rm.CoordinatorMessage]:
        while not self.inbox.empty():
            self.seen.append(self.inbox.get_nowait())
        return self.seen

    def acks(self, msg_id: int) -> list[rm.AckStatus]:
        return [m.status for m in self.collect() if isinstance(m, rm.Ack) and m.acked == msg_id]

    def plan(self) -> rm.Plan | None:
        return next((m for m in self.collect() if isinstance(m, rm.Plan)), None)


def _update(plan: rm.Plan, task_id: str, delta: np.ndarray, examples: int) -> rm.StageResponse:
    vector = round_update.encode(
        delta, examples, plan.update, np.random.default_rng(examples), weighted=False
    )
    return rm.StageResponse(
        msg_id=2,
        task_id=task_id,
        round_id=plan.round_id,
        stage=rm.Stage.PLAIN_UPDATE,
        payload=round_update.pack(vector, plan.update.bits),
    )


def test_a_device_cut_off_mid_upload_that_reconnects_is_counted_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    ids = ["cut-mid-publish", "cut-before-puback"]
    proxies = [CuttingProxy(mosquitto.host, mosquitto.port) for _ in ids]
    devices: list[SdkDevice] = []
    with live_coordinator(tmp_path / "coordinator", mosquitto.url) as service:
        svc = service.service
        task_id = start_task(
            service,
            ids,
            goal_count=2,
            over_selection=1.0,
            min_reports=2,
            clip_norm=1.0,
            checkin_deadline_s=30.0,
            training_deadline_s=60.0,
        )
        start = model_weights(svc, svc.store.get_task(task_id).model_sha256)
        try:
            devices = [SdkDevice(p, d, task_id) for p, d in zip(proxies, ids, strict=True)]
            for dev in devices:
                dev.send(UpChannel.CHECKIN, rm.CheckIn(msg_id=1, task_id=task_id, sdk_version="t"))
            plans = [wait_for(dev.plan, f"{dev.device_id}'s plan") for dev in devices]
            rng = np.random.default_rng(5)
            deltas = [
                v * (0.6 / np.linalg.norm(v)) for v in rng.normal(size=(2, plans[0].update.params))
            ]
            examples = [30, 70]
            updates = [
                _update(p, task_id, d, n) for p, d, n in zip(plans, deltas, examples, strict=True)
            ]

            # 1. The connection drops 60 bytes into the update's PUBLISH: the broker never
            # gets it whole. paho resends it once reconnected; the device's outbox, not
            # knowing, sends it again too. The second copy is a duplicate.
            first, proxy = devices[0], proxies[0]
            proxy.cut_upstream_after(60)
            first.send(UpChannel.UPDATE, updates[0])
            wait_for(lambda: proxy.cuts == 1 and first.transport.connection_count >= 2, "a cut")
            wait_for(lambda: first.acks(2), "the update accepted after reconnecting")
            first.publish(UpChannel.UPDATE, encode_message(updates[0]), 2)
            wait_for(lambda: len(first.acks(2)) == 2, "the resend answered")
            assert first.acks(2) == [rm.AckStatus.ACCEPTED, rm.AckStatus.DUPLICATE]

            # 2. The broker gets the whole update but its PUBACK is lost with the connection:
            # paho sends it again (DUP) after reconnecting, the broker delivers it twice.
            second, proxy = devices[1], proxies[1]
            proxy.cut_on_reply()
            second.send(UpChannel.UPDATE, updates[1])
            wait_for(lambda: proxy.cuts == 1 and second.transport.connection_count >= 2, "a cut")
            wait_for(lambda: second.acks(2), "the update accepted")

            def committed() -> dict[str, object] | None:
                rows = service.request("GET", f"/v1/tasks/{task_id}/rounds").json()
                rows = rows["rounds"] if isinstance(rows, dict) else rows
                return rows[0] if rows and rows[0]["status"] == "committed" else None

            row = wait_for(committed, "the round to commit")
            result = model_weights(svc, str(row["result_sha256"]))
        finally:
            for dev in devices:
                dev.transport.close()
            for p in proxies:
                p.close()
    # Each device counted once: two reports, the weight of two, the FedAvg of two.
    assert row["reporting"] == 2
    detail = row["detail"]
    assert isinstance(detail, dict)
    spec = plans[0].update
    assert detail["metrics"]["total_weight"] == sum(examples) / spec.weight_cap
    w = np.array(examples, dtype=np.float64)
    mean = (w[:, None] * np.stack(deltas)).sum(0) / w.sum()
    tol = round_update.step(spec) * np.sqrt(padded_size(spec.params))
    assert np.linalg.norm(result - (start + mean)) <= tol + 1e-5
    assert np.linalg.norm(mean) > 5 * tol
