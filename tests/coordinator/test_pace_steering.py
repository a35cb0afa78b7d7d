"""Pace steering: windows at the target rate, devices deferred past a round do not hold up
those sent away after them, and the replies that pace a device when no round is open."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.coordinator.rounds.outbox import no_round_replies
from fedrt.coordinator.selection.pace import PaceConfig, PaceSteering
from fedrt.protocol import round_messages as rm


def test_deferred_window_does_not_delay_the_next_device() -> None:
    pace = PaceSteering(PaceConfig(target_rate=10.0, min_delay=1.0, spread=2.0))
    deferred, _ = pace.window(100.0, not_before=120.0)
    assert deferred == 120.0
    # The round ends a second later: its devices come back after min_delay, not after 120 s.
    earliest, latest = pace.window(101.0)
    assert earliest == 1.0
    assert latest == 3.0


def test_each_line_keeps_the_target_rate() -> None:
    pace = PaceSteering(PaceConfig(target_rate=4.0, min_delay=1.0, spread=1.0))
    deferred = [pace.window(0.0, not_before=60.0)[0] for _ in range(3)]
    now_line = [pace.window(0.0)[0] for _ in range(3)]
    assert deferred == [60.0, 60.25, 60.5]
    assert now_line == [1.0, 1.25, 1.5]


def test_pace_steering_spreads_windows_at_the_target_rate() -> None:
    pace = PaceSteering(PaceConfig(target_rate=2.0, min_delay=60.0, spread=10.0))
    windows = [pace.window(100.0) for _ in range(10)]
    starts = [w[0] for w in windows]
    assert starts[0] == 60.0
    assert np.allclose(np.diff(starts), 0.5)
    assert all(late - early == 10.0 for early, late in windows)
    assert pace.backlog(100.0) == pytest.approx(65.0)
    # Once the backlog has passed, windows start min_delay after now again.
    assert pace.window(1000.0)[0] == 60.0
    assert pace.window(0.0, not_before=500.0)[0] >= 500.0


def test_replies_when_no_round_is_open() -> None:
    pace = PaceSteering(PaceConfig(min_delay=30.0, spread=5.0))
    out = no_round_replies(
        task_id="mnist",
        device_id="dev-01",
        message=rm.CheckIn(msg_id=4, task_id="mnist", sdk_version="t"),
        pace=pace,
        now=10.0,
        first_msg_id=100,
    )
    ack, window = (c.message for c in out)
    assert isinstance(ack, rm.Ack)
    assert (ack.msg_id, ack.acked, ack.status) == (100, 4, rm.AckStatus.ACCEPTED)
    assert isinstance(window, rm.ReconnectWindow)
    assert (window.msg_id, window.reason, window.earliest) == (
        101,
        rm.ReconnectReason.NO_ROUND,
        30.0,
    )
    stale = rm.Abandon(msg_id=5, task_id="mnist", round_id=3, reason=rm.AbandonReason.ERROR)
    (late,) = no_round_replies(
        task_id="mnist", device_id="dev-01", message=stale, pace=pace, now=10.0, first_msg_id=1
    )
    assert late.message.status is rm.AckStatus.LATE  # type: ignore[union-attr]
