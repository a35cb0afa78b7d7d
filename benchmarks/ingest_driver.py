"""The round driver ``fedrt bench ingest`` plugs into a real coordinator: a streaming FedAvg sum.

It does per message what a plain FedAvg round does to a payload (decode the round message,
unpack the update, add it to the round's ``PlainSum``, which dequantizes, clips and weights it
into ONE running sum), so its memory is the same for 10 devices or 10,000.
"""

from __future__ import annotations

import os
import threading
import time

from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.records import DeviceRecord, TaskRecord
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.store import Store
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.round_codec import decode_from_device
from fedrt.protocol.round_errors import MalformedMessage
from fedrt.protocol.round_plan import UpdateSpec
from fedrt.protocol.topics import UpTopic


class IngestDriver(RoundDriver):
    """Counts and sums plain updates; ``done`` is set when ``arm``'s target is reached.

    With ``aggregate=False`` it only counts: the figure of the transport path alone (MQTT
    link, service checks), without the cost of the update arithmetic.
    """

    def __init__(self, ctx: DriverContext, spec: UpdateSpec, *, aggregate: bool = True) -> None:
        self.ctx = ctx
        self.spec = spec
        self.aggregate = aggregate
        self.sum = round_update.PlainSum(spec)
        self.count = 0
        self.bytes = 0
        self.target = 0
        self.done_at: float | None = None
        self.done = threading.Event()

    def arm(self, target: int) -> None:
        self.count, self.bytes, self.target, self.done_at = 0, 0, target, None
        self.done.clear()

    def on_device_message(self, up: UpTopic, payload: bytes, now: float) -> None:
        if self.aggregate:
            self._add(up.device_id, payload)
        self.count += 1
        self.bytes += len(payload)
        if self.count == self.target:
            self.done_at = time.perf_counter()
            self.done.set()

    def _add(self, device_id: str, payload: bytes) -> None:
        msg = decode_from_device(payload)
        if not isinstance(msg, rm.StageResponse) or msg.stage is not rm.Stage.PLAIN_UPDATE:
            raise MalformedMessage(f"{device_id}: not a plain update")
        self.sum.add(round_update.unpack(msg.payload, self.spec))

    def on_tick(self, now: float) -> None:
        return None

    def on_task_change(self, task: TaskRecord) -> None:
        return None

    def on_shutdown(self, now: float) -> None:
        return None


def register_devices(store: Store, device_ids: list[str]) -> None:
    """Enroll ``device_ids`` straight into the store (the bench's broker is anonymous)."""
    credential = hash_password("bench")
    now = time.time()
    with store.transaction():
        for device_id in device_ids:
            store.add_device(
                DeviceRecord(
                    device_id=device_id,
                    credential_hash=credential,
                    public_key=os.urandom(32),
                    enrolled_at=now,
                )
            )


__all__ = ["IngestDriver", "register_devices"]
