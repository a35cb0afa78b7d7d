"""A restarted ``Device`` drops the lost round's answers from its outbox before the link is up."""

from __future__ import annotations

import json
import queue
from pathlib import Path

from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device, encode_message
from fedrt.protocol.topics import UpChannel, device_inbox, device_up, device_up_filter
from fedrt.sdk.memory_transport import MemoryBroker, MemoryTransport
from fedrt.sdk.outbox import Outbox
from fedrt.sdk.transport import Message
from tests.sdk.device_support import enroll, memory_device

DEVICE, TASK = "dev-restart", "task-1"


def _next(inbox: queue.Queue[Message]) -> rm.DeviceMessage:
    return decode_from_device(inbox.get(timeout=10).payload)


def test_a_restart_in_a_secagg_round_sends_only_the_abandon_then_checks_in(
    tmp_path: Path,
) -> None:
    enroll(tmp_path, DEVICE)
    # What the killed process left: its masked input of round 4, never acknowledged.
    masked = rm.StageResponse(msg_id=7, task_id=TASK, round_id=4, stage=rm.Stage.MASKED_INPUT,
                              payload=b"\x01" * 64)  # fmt: skip
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.put(device_up(DEVICE, UpChannel.UPDATE), encode_message(masked), msg_id="7")
    outbox.close()
    facts = {"state": "reporting", "round_id": 4, "answered": "MASKED_INPUT", "secagg": True,
             "unacked": [7]}  # fmt: skip
    state = {"next_msg_id": 8, "task_id": TASK, "round": facts}
    (tmp_path / "device-state.json").write_text(json.dumps(state))

    broker = MemoryBroker()
    coordinator = MemoryTransport(broker, "coordinator")
    received: queue.Queue[Message] = queue.Queue()
    coordinator.subscribe(device_up_filter(), received.put)
    coordinator.start()
    device, store = memory_device(tmp_path, TASK, broker)
    try:
        device.start()
        abandon = _next(received)
        assert isinstance(abandon, rm.Abandon)  # first, and the masked input never goes out
        assert (abandon.msg_id, abandon.round_id) == (8, 4)
        assert abandon.reason is rm.AbandonReason.RESTARTED
        saved = json.loads((tmp_path / "device-state.json").read_text())
        assert saved["round"]["state"] == "idle"
        assert saved["round"]["unacked"] == [8]
        assert saved["next_msg_id"] == 9
        assert device.status().last_detail == "restarted while reporting"
        ack = rm.Ack(msg_id=1, task_id=TASK, round_id=4, acked=8, status=rm.AckStatus.ACCEPTED)
        coordinator.publish(device_inbox(DEVICE), encode_message(ack))
        checkin = _next(received)
        assert isinstance(checkin, rm.CheckIn)
        assert checkin.msg_id == 9
        assert device.status().pending_uploads == 1  # the check-in; 7 and 8 are gone
    finally:
        device.stop()
        store.close()
        coordinator.close()
