"""The participant's own pacing: spread first check-ins and exponential silence back-off."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.protocol import round_messages as rm
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.participant import Participant
from tests.sdk.participant_support import KEYS, of, participant, window

SPREAD = 400.0


def fleet(n: int, **cfg: object) -> list[Participant]:
    """``n`` participants with their own random draws (as n devices would have)."""
    config = pc.ParticipantConfig(device_id="dev-0", task_id="mnist", **cfg)  # type: ignore[arg-type]
    return [
        Participant(config, identity=KEYS[0], rng=np.random.default_rng(seed)) for seed in range(n)
    ]


def announcement(msg_id: int, accepting: bool) -> rm.TaskAnnouncement:
    return rm.TaskAnnouncement(msg_id=msg_id, task_id="mnist", accepting=accepting, round_id=3)


def scheduled(commands: list[pc.Command]) -> float:
    (at,) = of(commands, pc.ScheduleCheckIn)
    assert isinstance(at, pc.ScheduleCheckIn)
    return at.at


def test_a_connecting_fleet_spreads_its_first_check_ins_over_the_spread() -> None:
    times = []
    for p in fleet(200, checkin_spread=SPREAD):
        at = scheduled(p.spread_check_in(1000.0))
        assert 1000.0 <= at <= 1000.0 + SPREAD
        assert not p.may_check_in(1000.0)
        assert p.may_check_in(at)
        assert p.spread_check_in(1000.0) == []  # already placed: a second connect keeps it
        times.append(at - 1000.0)
    # Spread over the window, not bunched in its first second.
    assert sum(t < 1.0 for t in times) < 10
    assert max(times) - min(times) > SPREAD / 2


def test_without_a_spread_a_device_checks_in_at_once() -> None:
    p = participant()
    assert p.spread_check_in(1000.0) == []
    assert p.may_check_in(1000.0)
    p.receive(announcement(1, True), 1000.0)
    assert p.may_check_in(1000.0)


def test_an_opening_round_spreads_the_devices_that_waited_for_it() -> None:
    for p in fleet(50, checkin_spread=SPREAD):
        assert p.receive(announcement(1, False), 0.0) == []
        at = scheduled(p.receive(announcement(2, True), 500.0))
        assert 500.0 <= at <= 500.0 + SPREAD
        assert not p.may_check_in(500.0)
        # The same round announced again (a reconnect delivers it anew): no new draw.
        assert p.receive(announcement(2, True), at) == []
        assert p.may_check_in(at)


def test_a_device_holding_a_window_keeps_it_when_a_round_opens() -> None:
    p = participant(checkin_spread=SPREAD)
    p.check_in(0.0)
    p.receive(window(earliest=900.0, latest=900.0, reason=rm.ReconnectReason.ROUND_FULL), 0.0)
    assert p.receive(announcement(2, True), 10.0) == []
    assert p.not_before == pytest.approx(900.0)


def test_unanswered_check_ins_back_off_exponentially_up_to_the_cap() -> None:
    p = participant(checkin_timeout=60.0, retry_earliest=10.0, retry_latest=20.0, retry_cap=100.0)
    now, waits = 0.0, []
    for _ in range(5):
        p.check_in(now)
        now += 60.0
        assert p.tick(now - 1.0) == []
        at = scheduled(p.tick(now))
        waits.append(at - now)
        assert not p.may_check_in(now)
        now = at
    assert 10.0 <= waits[0] <= 20.0
    assert 20.0 <= waits[1] <= 40.0
    assert 40.0 <= waits[2] <= 80.0
    assert waits[3] <= 100.0
    assert waits[4] <= 100.0
    # A reply (here a window) shows the coordinator answers again: back to the first range.
    p.check_in(now)
    p.receive(window(earliest=1.0, reason=rm.ReconnectReason.ROUND_FULL), now)
    now += 5.0
    p.check_in(now)
    at = scheduled(p.tick(now + 60.0))
    assert 10.0 <= at - (now + 60.0) <= 20.0


def test_a_late_window_replaces_the_back_off() -> None:
    p = participant(checkin_timeout=60.0, retry_earliest=10.0, retry_latest=20.0)
    p.check_in(0.0)
    p.tick(60.0)
    out = p.receive(
        window(earliest=300.0, latest=301.0, reason=rm.ReconnectReason.ROUND_FULL), 61.0
    )
    assert 361.0 <= scheduled(out) <= 362.0


def test_pacing_settings_are_validated() -> None:
    with pytest.raises(SdkConfigError, match="checkin_spread"):
        pc.ParticipantConfig(device_id="d", task_id="t", checkin_spread=-1.0)
    with pytest.raises(SdkConfigError, match="retry_cap"):
        pc.ParticipantConfig(device_id="d", task_id="t", retry_cap=float("nan"))
