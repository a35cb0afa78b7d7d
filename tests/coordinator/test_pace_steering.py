"""Pace steering: devices deferred past a round do not hold up those sent away after them."""

from __future__ import annotations

from fedrt.coordinator.selection.pace import PaceConfig, PaceSteering


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
