"""The device side of per-cohort topics (issue 17): a plan's cohort key sends the round's
replies under it, and once that round is over for the device (its window, its own deadline,
a later round's plan, window or announcement), replies still unacknowledged there are
dropped from the outbox (the cohort's owner stops reading the topic after the round)."""

from __future__ import annotations

import json
import queue
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_device, encode_message
from fedrt.protocol.round_errors import MalformedMessage
from fedrt.protocol.topics import (
    FEATURE_COHORT_TOPICS,
    UpChannel,
    cohort_key,
    cohort_up_filter,
    device_inbox,
    device_up_cohort,
    task_announcement,
)
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.memory_transport import MemoryBroker, MemoryTransport
from fedrt.sdk.outbox import Outbox
from fedrt.sdk.round_facts import RoundFacts
from fedrt.sdk.transport import Message
from tests.sdk.device_support import enroll, memory_device
from tests.sdk.participant_support import of, participant, plan, window
from tests.sdk.transport_support import eventually

KEY = cohort_key("mnist", 5, 1)


@pytest.mark.parametrize("key", [KEY, ""], ids=["cohort-topic", "plain-topic"])
def test_replies_go_under_the_plans_key_and_a_window_forgets_the_unacked_ones(key: str) -> None:
    p = participant()
    (checkin,) = of(p.check_in(0.0), pc.Publish)
    assert checkin.cohort == ""  # type: ignore[attr-defined]
    assert checkin.message.features == ra.FEATURE_ASYNC | FEATURE_COHORT_TOPICS  # type: ignore[attr-defined]
    p.receive(replace(plan(), cohort_topic=key), 1.0)
    (keys,) = of(p.training_done(np.full(10, 0.1), 20, 2.0), pc.Publish)
    assert isinstance(keys, pc.Publish)
    assert isinstance(keys.message, rm.StageResponse)
    assert keys.cohort == key
    assert keys.message.msg_id in p.unacknowledged
    out = p.receive(window(msg_id=41, reason=rm.ReconnectReason.ROUND_ABANDONED), 3.0)
    forgotten = [c.msg_id for c in of(out, pc.Forget)]  # type: ignore[attr-defined]
    if key:
        assert forgotten == [keys.message.msg_id]
        assert keys.message.msg_id not in p.unacknowledged
    else:  # the plain topic is always read: its ack (LATE at worst) will come
        assert forgotten == []
        assert keys.message.msg_id in p.unacknowledged
    assert of(out, pc.RoundEnded)


@pytest.mark.parametrize("bad", ["Not/A+Key", "#", "a.b", "x" * 33])
def test_a_plan_with_a_malformed_key_is_refused(bad: str) -> None:
    with pytest.raises(MalformedMessage, match="cohort key"):
        replace(plan(), cohort_topic=bad)


@pytest.mark.parametrize("key", [KEY, ""], ids=["cohort-topic", "plain-topic"])
def test_a_round_that_went_silent_forgets_its_cohort_replies(key: str) -> None:
    """The device was offline when its round ended: no window came, and its deadline passed."""
    p = participant()
    (checkin,) = of(p.check_in(0.0), pc.Publish)
    p.receive(replace(plan(), cohort_topic=key), 1.0)
    (keys,) = of(p.training_done(np.full(10, 0.1), 20, 2.0), pc.Publish)
    sent = keys.message.msg_id  # type: ignore[attr-defined]
    assert p.deadline is not None
    out = p.tick(p.deadline)
    assert of(out, pc.RoundEnded)
    assert of(out, pc.Forget) == ([pc.Forget(msg_id=sent)] if key else [])
    assert (sent in p.unacknowledged) is not bool(key)
    assert checkin.message.msg_id in p.unacknowledged  # type: ignore[attr-defined]


def _announced(round_id: int) -> rm.TaskAnnouncement:
    return rm.TaskAnnouncement(msg_id=43, task_id="mnist", accepting=True, round_id=round_id)


OVER: dict[str, rm.CoordinatorMessage] = {
    "window-of-its-round": window(msg_id=41, reason=rm.ReconnectReason.ROUND_COMPLETE),
    "plan-of-a-later-round": replace(
        plan(round_id=6, msg_id=42), cohort_topic=cohort_key("mnist", 6, 0)
    ),
    "announcement-of-a-later-round": _announced(6),
}
NOT_OVER: dict[str, rm.CoordinatorMessage] = {
    "round-full-of-its-round": window(msg_id=41, reason=rm.ReconnectReason.ROUND_FULL),
    "announcement-of-its-round": _announced(5),
}


@pytest.mark.parametrize("news", [*OVER, *NOT_OVER])
def test_an_abandon_on_a_cohort_topic_stays_until_its_round_is_over(news: str) -> None:
    p = participant()
    p.check_in(0.0)
    p.receive(replace(plan(), cohort_topic=KEY), 1.0)
    out = p.training_abandoned(rm.AbandonReason.INELIGIBLE, 2.0)
    (pub,) = of(out, pc.Publish)
    abandon = pub.message  # type: ignore[attr-defined]
    assert isinstance(abandon, rm.Abandon)
    assert pub.cohort == KEY  # type: ignore[attr-defined]
    assert of(out, pc.Forget) == []  # the round may still run: it should hear of this
    out = p.receive({**OVER, **NOT_OVER}[news], 3.0)
    if news in OVER:
        assert of(out, pc.Forget) == [pc.Forget(msg_id=abandon.msg_id)]
        assert abandon.msg_id not in p.unacknowledged
    else:
        assert of(out, pc.Forget) == []
        assert abandon.msg_id in p.unacknowledged


def test_after_a_restart_an_older_rounds_cohort_reply_goes_and_the_current_rounds_stays() -> None:
    # Resumed (a plain update sent): 3 a check-in, 6 of round 4 on its cohort topic, 7 the
    # update of round 5 on its own.
    facts = RoundFacts(state="reporting", round_id=5, answered=rm.Stage.PLAIN_UPDATE,
                       unacked=(3, 6, 7), cohort=((6, 4), (7, 5)))  # fmt: skip
    p = participant()
    assert p.restart(facts, 0.0) == []
    out = p.receive(_announced(6), 1.0)
    assert of(out, pc.Forget) == [pc.Forget(msg_id=6)]
    assert p.unacknowledged == {3, 7}
    assert p.round_facts().cohort == ((7, 5),)
    out = p.receive(window(msg_id=41, reason=rm.ReconnectReason.ROUND_COMPLETE), 2.0)
    assert of(out, pc.Forget) == [pc.Forget(msg_id=7)]
    assert p.unacknowledged == {3}  # a check-in's topic is always read: its ack will come


def test_a_device_drops_an_over_rounds_reply_from_its_outbox_and_keeps_its_rounds(
    tmp_path: Path,
) -> None:
    """The device's outbox: an Abandon of round 4 (ended while the device was offline) and the
    update of round 5, which it is in, each on its round's cohort topic. The announcement of
    round 6 drops the first (not resent after a reconnect); round 5's window drops the second."""
    device_id, task = "dev-cohort", "task-1"
    k4, k5 = cohort_key(task, 4, 0), cohort_key(task, 5, 0)
    enroll(tmp_path, device_id)
    abandon = rm.Abandon(msg_id=6, task_id=task, round_id=4, reason=rm.AbandonReason.DEADLINE)
    update = rm.StageResponse(msg_id=7, task_id=task, round_id=5, stage=rm.Stage.PLAIN_UPDATE,
                              payload=b"\x01" * 64)  # fmt: skip
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.put(device_up_cohort(device_id, k4, UpChannel.ROUND), encode_message(abandon),
               msg_id="6")  # fmt: skip
    outbox.put(device_up_cohort(device_id, k5, UpChannel.UPDATE), encode_message(update),
               msg_id="7")  # fmt: skip
    outbox.close()
    facts = RoundFacts(state="reporting", round_id=5, answered=rm.Stage.PLAIN_UPDATE,
                       unacked=(6, 7), cohort=((6, 4), (7, 5)))  # fmt: skip
    state = {"next_msg_id": 8, "task_id": task, "round": facts.to_json()}
    (tmp_path / "device-state.json").write_text(json.dumps(state))

    broker = MemoryBroker()
    coordinator = MemoryTransport(broker, "coordinator")
    received: queue.Queue[Message] = queue.Queue()
    for key in (k4, k5):
        coordinator.subscribe(cohort_up_filter(key), received.put)
    coordinator.start()
    device, store = memory_device(tmp_path, task, broker)

    def next_id() -> int:
        return decode_from_device(received.get(timeout=10).payload).msg_id

    try:
        device.start()
        assert [next_id(), next_id()] == [6, 7]  # both resent on connecting, oldest first
        assert eventually(lambda: coordinator.connected)
        news = rm.TaskAnnouncement(msg_id=1, task_id=task, accepting=False, round_id=6)
        coordinator.publish(task_announcement(task), encode_message(news), retain=True)
        assert eventually(lambda: device.status().pending_uploads == 1)
        while not received.empty():  # a resend racing the first flush, if any
            received.get_nowait()
        device.network_changed(False)
        device.network_changed(True)
        assert next_id() == 7  # the reconnect resends round 5's update, not round 4's Abandon
        over = rm.ReconnectWindow(msg_id=2, task_id=task, round_id=5,
                                  reason=rm.ReconnectReason.ROUND_COMPLETE, earliest=3600.0,
                                  latest=3601.0)  # fmt: skip
        coordinator.publish(device_inbox(device_id), encode_message(over))
        assert eventually(lambda: device.status().pending_uploads == 0)
    finally:
        device.stop()
        store.close()
        coordinator.close()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        assert outbox.pending() == []
    finally:
        outbox.close()
