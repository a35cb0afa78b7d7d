"""Async (FedBuff) rounds through the served driver: buffers, staleness, SecAgg+ cohorts.

The driver harness's devices train instantly; here some train slowly (their ``Train``
finishes a set number of seconds later on the fleet's clock), so versions are committed
while they train. Every committed version is checked against the staleness-weighted mean
of the deltas its cohort members kept, computed here from the same deltas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedrt.coordinator.records import RoundStatus
from fedrt.protocol import round_async as ra
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_from_coordinator, decode_message, encode_message
from fedrt.protocol.round_errors import RoundError
from fedrt.protocol.topics import UpChannel, device_up, parse_up_topic
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import ParticipantState
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets, weights_of

EXAMPLES = 1000  # with weight_cap 1000: every device weighs 1


@dataclass
class _Kept:
    delta: npt.NDArray[np.float64]
    trained_at: float


class AsyncFleet(Fleet):
    """A fleet whose devices in ``slow`` take that many seconds to train."""

    def __init__(self, n: int, slow: dict[str, float], *, seed: int = 0) -> None:
        super().__init__(n, pull_to_targets, seed=seed)
        self.slow = slow
        self.pending: list[tuple[float, str, pc.Train]] = []
        self.kept: dict[str, _Kept] = {}
        # Per cohort round: (device, staleness the plan stated, the delta it reported).
        self.reported: dict[int, list[tuple[str, int, npt.NDArray[np.float64]]]] = {}
        self.training_while_committed: list[str] = []
        self.goes_dark: set[str] = set()
        self.dark: set[str] = set()
        self.dropped_from: set[tuple[str, int]] = set()

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        p = self.devices[device_id]
        plan = p.plan
        if plan is not None and plan.async_role == ra.ASYNC_REPORT:
            members = self.reported.setdefault(plan.round_id, [])
            if device_id not in [m[0] for m in members]:
                members.append((device_id, plan.staleness, self.kept[device_id].delta))
        now_work: list[pc.Command] = []
        for c in commands:
            if isinstance(c, pc.Train):
                self.pending.append((self.now + self.slow.get(device_id, 0.0), device_id, c))
            else:
                now_work.append(c)
        super()._device(device_id, now_work)
        self._finish_training()

    def _finish_training(self) -> None:
        due = sorted(x for x in self.pending if x[0] <= self.now)
        self.pending = [x for x in self.pending if x[0] > self.now]
        for _, device_id, c in due:
            p = self.devices[device_id]
            if p.state is not ParticipantState.TRAINING or p.plan is not c.plan:
                continue
            delta = self.trainer(
                device_id, c.plan.round_id, weights_of(self.svc, c.plan.model.sha256)
            )
            self.kept[device_id] = _Kept(delta, self.now)
            super()._device(device_id, p.training_done(delta, EXAMPLES, self.now))

    def _tick(self) -> None:
        self._finish_training()
        before = len(self.committed())
        super()._tick()
        self._note_training(before)

    def _deliver(self, topic: str, payload: bytes) -> None:
        msg = decode_message(payload)
        device_id = parse_up_topic(topic).device_id
        if device_id in self.dark or (
            device_id in self.goes_dark
            and isinstance(msg, rm.StageResponse)
            and msg.stage is rm.Stage.MASKED_INPUT
        ):
            # From its masked input on, nothing it sends arrives: a dropout SecAgg+ unmasks.
            self.dark.add(device_id)
            if isinstance(msg, rm.StageResponse):
                self.dropped_from.add((device_id, msg.round_id))
            return
        before = len(self.committed())
        super()._deliver(topic, payload)
        self._note_training(before)

    def _note_training(self, before: int) -> None:
        if len(self.committed()) > before:
            self.training_while_committed += [
                d for d, p in self.devices.items() if p.state is ParticipantState.TRAINING
            ]

    def _advance(self) -> None:
        due = [t for t, _, _ in self.pending if t > self.now]
        try:
            super()._advance()
        except AssertionError:
            if not due:
                raise
            self.now = min(due)
            return
        if due and min(due) < self.now:
            self.now = min(due)


def _async_spec(**more: object) -> dict[str, object]:
    # download_bits 0: versions hold the aggregate's exact weights, to compare with.
    return dict(mode="async", buffer_size=2, max_concurrent=4, max_staleness=10,
                weight_cap=EXAMPLES, min_reports=2, goal_count=2,
                download_bits=0) | more  # fmt: skip


def slow_fleet(tmp_path: Path, secagg: bool, **spec: object) -> tuple[AsyncFleet, int]:
    """Fast devices and one that takes 6 s to train; buffers of 3 with SecAgg+ (of 5
    devices), of 2 without (of 3). The fleet, opened on a task, and its buffer size."""
    n, buffer = (5, 3) if secagg else (3, 2)
    fleet = AsyncFleet(n, slow={f"dev-{n - 1:02d}": 6.0})
    fleet.open(tmp_path)
    fleet.create_task(**_async_spec(secagg=secagg, buffer_size=buffer, goal_count=buffer,
                                    max_concurrent=n, **spec))  # fmt: skip
    return fleet, buffer


def _rounds(fleet: Fleet) -> list[Any]:
    return fleet.svc.store.list_rounds(TASK)


def _check_weighted_means(fleet: AsyncFleet) -> int:
    """Each committed version = its parent + FedBuff's staleness-discounted step over its
    cohort's kept deltas, example-weighted: sum n_i s(tau_i) d_i / sum n_i (FedAvg, server
    lr 1; here every n_i weighs 1, so it is (1/K) sum s(tau_i) d_i); returns how many were
    checked."""
    checked = 0
    for r in _rounds(fleet):
        if r.status is not RoundStatus.COMMITTED:
            continue
        members = [m for m in fleet.reported[r.round_no]
                   if (m[0], r.round_no) not in fleet.dropped_from]  # fmt: skip
        n = np.ones(len(members))  # min(EXAMPLES, weight_cap) / weight_cap: undiscounted
        expected = sum(n_i * ra.staleness_weight(s) * d
                       for n_i, (_, s, d) in zip(n, members, strict=True)) / n.sum()  # fmt: skip
        got = weights_of(fleet.svc, r.result_sha256 or "") - weights_of(fleet.svc, r.model_sha256)
        np.testing.assert_allclose(got, expected, atol=2e-4)
        assert r.detail["metrics"]["total_weight"] == pytest.approx(n.sum(), abs=1e-6)
        stale = {str(s): [m[1] for m in members].count(s) for _, s, _ in members}
        assert r.detail["staleness"] == stale
        assert r.detail["mode"] == "async"
        assert r.detail["metrics"]["included"] == len(members)
        checked += 1
    return checked


@pytest.mark.parametrize("secagg", [False, True], ids=["plain", "secagg"])
def test_versions_advance_while_a_slow_device_trains_and_its_update_is_discounted(
    tmp_path: Path, secagg: bool
) -> None:
    fleet, _ = slow_fleet(tmp_path, secagg, max_rounds=6)
    slow = max(fleet.ids)
    fleet.run_until(fleet.done)
    committed = [r for r in _rounds(fleet) if r.status is RoundStatus.COMMITTED]
    assert len(committed) >= 4
    # Versions were committed while the slow device was still training...
    assert slow in fleet.training_while_committed
    # ... and its update, when it came, was stale and weighed 1 / sqrt(1 + staleness).
    late = [s for members in fleet.reported.values() for d, s, _ in members if d == slow]
    assert late
    assert max(late) >= 1
    assert _check_weighted_means(fleet) == len(committed)
    assert all(r.detail["metrics"]["secagg"] is secagg for r in committed)


def test_an_update_staler_than_max_staleness_is_refused_with_a_reason(tmp_path: Path) -> None:
    fleet = AsyncFleet(3, slow={"dev-02": 10.0})
    fleet.open(tmp_path)
    fleet.create_task(**_async_spec(max_staleness=1, max_concurrent=3, max_rounds=20))
    windows: list[rm.ReconnectReason] = []
    receive = fleet.devices["dev-02"].receive

    def spy(message: rm.CoordinatorMessage, now: float) -> list[pc.Command]:
        if isinstance(message, rm.ReconnectWindow):
            windows.append(message.reason)
        return receive(message, now)

    fleet.devices["dev-02"].receive = spy  # type: ignore[method-assign]
    fleet.run_until(fleet.done)
    assert rm.ReconnectReason.TOO_STALE in windows
    # Never in a commit with more than max_staleness.
    assert all(int(s) <= 1 for r in _rounds(fleet) for s in r.detail.get("staleness", {}))
    assert any(r.detail["lobby"]["refused_stale"] >= 1 for r in _rounds(fleet))
    assert _check_weighted_means(fleet) >= 1


def test_an_sdk_without_async_support_is_refused(tmp_path: Path) -> None:
    fleet = AsyncFleet(2, slow={})
    fleet.open(tmp_path)
    fleet.create_task(**_async_spec())
    fleet.svc.tick()
    old = rm.CheckIn(msg_id=1, task_id=TASK, sdk_version="0.9.0")  # no features: an old SDK
    outcome = fleet.svc.on_device_message(device_up("dev-00", UpChannel.CHECKIN),
                                          encode_message(old))  # fmt: skip
    assert outcome != "accepted"
    told = [decode_from_coordinator(m) for d, m in fleet.to_devices if d == "dev-00"]
    acks = [m for m in told if isinstance(m, rm.Ack) and m.acked == 1]
    assert [a.status for a in acks] == [rm.AckStatus.REJECTED]
    assert not [m for m in told if isinstance(m, rm.Plan)]
    # The SDK ends its check-in on that refusal.
    device = fleet.devices["dev-00"]
    device.check_in(fleet.now)
    device.receive(dataclasses.replace(acks[0], acked=device.next_msg_id - 1), fleet.now)
    assert device.state is ParticipantState.IDLE


def test_a_coordinator_that_dies_mid_cohort_keeps_every_committed_version(
    tmp_path: Path,
) -> None:
    # The fast twin of test_async_crash (kill -9 of a real coordinator, marked slow).
    fleet = AsyncFleet(3, slow={"dev-02": 3.0})
    fleet.open(tmp_path)
    fleet.create_task(**_async_spec(max_rounds=40))

    def mid_cohort() -> bool:
        running = [r for r in _rounds(fleet) if r.status is RoundStatus.RUNNING]
        return len(fleet.committed()) >= 2 and bool(running)

    fleet.run_until(mid_cohort)
    before = fleet.committed()
    victim = max(r.round_no for r in _rounds(fleet))
    fleet.svc.store.close()  # the process dies: no shutdown, nothing saved
    fleet.open(tmp_path)
    assert fleet.committed() == before
    assert fleet.svc.store.get_round(TASK, victim).status is RoundStatus.ABANDONED
    for p in fleet.devices.values():  # the new incarnation's presence reaches them
        fleet._device(p.config.device_id, p.coordinator_restarted(fleet.now))
        p.receive_data = _dropping_refusals(p.receive_data)  # type: ignore[method-assign,assignment]
    fleet.run_until(lambda: len(fleet.committed()) >= len(before) + 2)
    assert fleet.committed()[: len(before)] == before
    assert _check_weighted_means(fleet) == len(fleet.committed())


def _dropping_refusals(
    receive: Callable[[bytes, float], list[pc.Command]],
) -> Callable[[bytes, float], list[pc.Command]]:
    """As the SDK's facade does: a message the participant refuses is logged and dropped
    (here: acks of what it forgot when it heard of the restart)."""

    def tolerant(data: bytes, now: float) -> list[pc.Command]:
        try:
            return receive(data, now)
        except RoundError:
            return []

    return tolerant


def test_a_secagg_cohort_survives_a_member_dropping_after_keys(tmp_path: Path) -> None:
    fleet = AsyncFleet(5, slow={})
    fleet.goes_dark.add("dev-01")
    fleet.open(tmp_path)
    fleet.create_task(**_async_spec(secagg=True, buffer_size=4, goal_count=4, max_concurrent=5,
                                    max_rounds=3))  # fmt: skip
    fleet.run_until(fleet.done)
    hit = {r for d, r in fleet.dropped_from if d == "dev-01"}
    assert hit
    dropped_round = fleet.svc.store.get_round(TASK, min(hit))
    assert dropped_round.status is RoundStatus.COMMITTED
    assert dropped_round.detail["metrics"]["included"] == 3
    assert dropped_round.detail["buffer_size"] == 4
    assert _check_weighted_means(fleet) == len(fleet.committed())
