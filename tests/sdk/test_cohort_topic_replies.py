"""The device side of per-cohort topics (issue 17): a plan's cohort key sends the round's
replies under it, and when the coordinator ends that round, replies still unacknowledged
there are dropped (the cohort's owner stops reading the topic after the round)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_errors import MalformedMessage
from fedrt.protocol.topics import FEATURE_COHORT_TOPICS, cohort_key
from fedrt.sdk import participant_commands as pc
from tests.sdk.participant_support import of, participant, plan, window

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
