"""The participant in an async (FedBuff) task: train and keep, report when asked, discounted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from fedrt.protocol.round_codec import decode_message, encode_message
from fedrt.protocol.round_errors import MalformedMessage, UnexpectedMessage
from fedrt.protocol.topics import FEATURE_COHORT_TOPICS
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import ParticipantState
from tests.sdk.participant_support import of, participant, plan


def _check_in(p: object, now: float) -> rm.CheckIn:
    (pub,) = of(p.check_in(now), pc.Publish)  # type: ignore[attr-defined]
    assert isinstance(pub, pc.Publish)
    assert isinstance(pub.message, rm.CheckIn)
    return pub.message


def test_a_train_plan_keeps_the_update_and_a_report_plan_sends_it_discounted() -> None:
    p = participant()
    first = _check_in(p, 0.0)
    assert (first.features, first.async_ticket) == (ra.FEATURE_ASYNC | FEATURE_COHORT_TOPICS, 0)
    train = dataclasses.replace(plan(round_id=3, secagg=False), async_role=ra.ASYNC_TRAIN)
    assert of(p.receive(train, 0.0), pc.Train)
    delta = np.full(10, 0.05)
    out = p.training_done(delta, 40, 1.0)
    # Nothing goes out: the device is ready, and says so in its next check-in at once.
    assert not of(out, pc.Publish)
    assert [c.at for c in of(out, pc.ScheduleCheckIn)] == [1.0]  # type: ignore[attr-defined]
    assert p.state is ParticipantState.IDLE
    assert _check_in(p, 1.0).async_ticket == 3
    # Two versions were committed since: the plain update is the delta / sqrt(3), and its
    # example count stays 40 (the discount shrinks the step, it is not a share of the mean).
    report = dataclasses.replace(plan(round_id=4, secagg=False, msg_id=11),
                                 async_role=ra.ASYNC_REPORT, staleness=2)  # fmt: skip
    (pub,) = of(p.receive(report, 2.0), pc.Publish)
    assert isinstance(pub, pc.Publish)
    assert isinstance(pub.message, rm.StageResponse)
    assert pub.message.stage is rm.Stage.PLAIN_UPDATE
    vector = round_update.unpack(pub.message.payload, report.update)
    got, count = round_update.decode_one(vector, report.update)
    assert count == 40
    np.testing.assert_allclose(got, delta / np.sqrt(3), atol=0.01)
    assert not np.allclose(got, delta, atol=0.01)
    assert p.state.value == "reporting"  # the kept update is spent


def test_a_report_plan_without_a_kept_update_is_refused() -> None:
    p = participant()
    _check_in(p, 0.0)
    report = dataclasses.replace(plan(secagg=False), async_role=ra.ASYNC_REPORT, staleness=1)
    with pytest.raises(UnexpectedMessage, match="no update is kept"):
        p.receive(report, 0.0)
    assert p.state is ParticipantState.CHECKED_IN


def test_too_stale_drops_the_kept_update() -> None:
    p = participant()
    _check_in(p, 0.0)
    train = dataclasses.replace(plan(round_id=3, secagg=False), async_role=ra.ASYNC_TRAIN)
    p.receive(train, 0.0)
    p.training_done(np.zeros(10), 10, 1.0)
    assert _check_in(p, 1.0).async_ticket == 3
    stale = rm.ReconnectReason.TOO_STALE
    window = rm.ReconnectWindow(
        msg_id=12, task_id="mnist", round_id=0, reason=stale, earliest=1.0, latest=2.0
    )
    p.receive(window, 1.0)
    assert _check_in(p, 5.0).async_ticket == 0


def test_async_messages_round_trip_and_old_ones_read_with_defaults() -> None:
    report = dataclasses.replace(plan(), async_role=ra.ASYNC_REPORT, staleness=7)
    assert decode_message(encode_message(report)) == report
    plain = decode_message(encode_message(plan()))
    assert isinstance(plain, rm.Plan)
    assert plain.async_role == 0
    with pytest.raises(MalformedMessage, match="async_role"):
        dataclasses.replace(plan(), async_role=3)
    assert ra.staleness_weight(0) == 1.0
    assert ra.staleness_weight(3) == 0.5
