"""The async lobby alone: concurrency, tickets, readiness, staleness, old SDKs."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fedrt.coordinator.rounds.async_lobby import AsyncLobby
from fedrt.coordinator.rounds.commands import RoundConfig, Send
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.tasks import TaskSpec
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm

MODEL = rm.ModelRef(version=3, sha256="ab" * 32, url="/m")


def _lobby(**spec: object) -> AsyncLobby:
    fields: dict[str, object] = {"mode": "async", "buffer_size": 2, "max_concurrent": 2}
    lobby = AsyncLobby("t1", TaskSpec(**(fields | spec)), PaceSteering())
    config = RoundConfig(task_id="t1", round_id=7, model=MODEL, secagg=False, min_reports=1,
                         training_timeout=100.0, stage_timeout=10.0)  # fmt: skip
    lobby.offer(config, rm.UpdateSpec(params=4, clip_norm=1.0, bits=8, weight_cap=1000))
    return lobby


def _checkin(msg_id: int, ticket: int = 0, features: int = ra.FEATURE_ASYNC) -> rm.CheckIn:
    return rm.CheckIn(msg_id=msg_id, task_id="t1", sdk_version="1", features=features,
                      async_ticket=ticket)  # fmt: skip


def _sent(out: Sequence[object]) -> list[rm.CoordinatorMessage]:
    return [c.message for c in out if isinstance(c, Send)]


def test_at_most_max_concurrent_train_and_the_rest_are_paced() -> None:
    lobby = _lobby()
    plans = []
    for i, device in enumerate(["a", "b", "c"]):
        ack, reply = _sent(lobby.check_in(device, _checkin(i + 1), 0.0, 100 + 2 * i))
        assert isinstance(ack, rm.Ack)
        assert ack.status is rm.AckStatus.ACCEPTED
        plans.append(reply)
    a, b, c = plans
    assert isinstance(a, rm.Plan)
    assert (a.async_role, a.round_id, a.model) == (ra.ASYNC_TRAIN, 7, MODEL)
    assert isinstance(b, rm.Plan)
    assert isinstance(c, rm.ReconnectWindow)
    assert c.reason is rm.ReconnectReason.ROUND_FULL
    # A ticket lapses after the training window plus a stage window: room again.
    lobby.tick(109.0)
    assert sorted(lobby.training) == ["a", "b"]
    lobby.tick(110.0)
    assert not lobby.training
    (_, again) = _sent(lobby.check_in("c", _checkin(9), 110.0, 200))
    assert isinstance(again, rm.Plan)


def test_ready_devices_form_a_buffer_first_come_first_in_with_their_staleness() -> None:
    lobby = _lobby(max_concurrent=3, max_staleness=1)
    for i, device in enumerate(["a", "b", "c"]):
        lobby.check_in(device, _checkin(i + 1), 0.0, 10 * i)
    lobby.committed()  # a version was committed while they trained
    for i, device in enumerate(["c", "a"]):
        (ack,) = _sent(lobby.check_in(device, _checkin(20 + i, ticket=7), 1.0, 50 + i))
        assert isinstance(ack, rm.Ack)
    cohort, refused = lobby.take(1.0, 60)
    assert [(r.device_id, r.staleness) for r in cohort] == [("c", 1), ("a", 1)]
    assert refused == []
    assert lobby.take(1.0, 60) == ([], [])  # the buffer is taken
    # Another commit: b is now two versions behind, more than max_staleness.
    lobby.committed()
    ack, window = _sent(lobby.check_in("b", _checkin(30, ticket=7), 2.0, 70))
    assert isinstance(window, rm.ReconnectWindow)
    assert window.reason is rm.ReconnectReason.TOO_STALE
    assert lobby.figures()["refused_stale"] == 1


def test_a_ticket_the_lobby_does_not_know_trains_again() -> None:
    lobby = _lobby()
    (_, plan) = _sent(lobby.check_in("a", _checkin(1, ticket=5), 0.0, 1))  # from before a restart
    assert isinstance(plan, rm.Plan)
    assert plan.async_role == ra.ASYNC_TRAIN
    assert not lobby.ready


def test_an_sdk_without_the_async_feature_is_refused() -> None:
    lobby = _lobby()
    with pytest.raises(ra.AsyncNotSupported, match="cannot take part"):
        lobby.check_in("a", _checkin(1, features=0), 0.0, 1)
    assert not lobby.training


def test_devices_holding_an_update_count_against_max_concurrent_until_their_cohort_ends() -> None:
    lobby = _lobby()  # buffer_size 2, max_concurrent 2
    lobby.check_in("a", _checkin(1), 0.0, 10)
    lobby.check_in("b", _checkin(2), 0.0, 20)
    lobby.check_in("a", _checkin(3, ticket=7), 1.0, 30)  # a's update is ready, not committed
    (_, full) = _sent(lobby.check_in("c", _checkin(4), 1.0, 40))
    assert isinstance(full, rm.ReconnectWindow)
    assert full.reason is rm.ReconnectReason.ROUND_FULL
    lobby.check_in("b", _checkin(5, ticket=7), 2.0, 50)
    cohort, _ = lobby.take(2.0, 60)
    assert [r.device_id for r in cohort] == ["a", "b"]
    lobby.cohort = frozenset(r.device_id for r in cohort)  # as the driver opens their round
    assert lobby.in_flight() == 2
    (_, still_full) = _sent(lobby.check_in("c", _checkin(6), 3.0, 70))
    assert isinstance(still_full, rm.ReconnectWindow)
    assert still_full.reason is rm.ReconnectReason.ROUND_FULL
    lobby.cohort_ended()  # their round committed: room again
    (_, plan) = _sent(lobby.check_in("c", _checkin(7), 4.0, 80))
    assert isinstance(plan, rm.Plan)
    assert plan.async_role == ra.ASYNC_TRAIN
