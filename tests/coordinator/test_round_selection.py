"""Cohort selection: sampled uniformly from the check-in pool, not first come first served."""

from __future__ import annotations

import numpy as np
import pytest

from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.rounds.plan import with_pool
from fedrt.coordinator.rounds.states import RoundState
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.selection.sampling import pool_target, sample_cohort
from fedrt.coordinator.strategies import FedAvg, OptimizerState
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm
from tests.coordinator.round_harness import config

N_DEVICES = 20
DEVICES = [f"dev-{i:02d}" for i in range(N_DEVICES)]


def plain(**overrides: object) -> rc.RoundConfig:
    base: dict[str, object] = dict(
        goal_count=5,
        min_reports=2,
        secagg=False,
        secagg_neighbors=None,
        secagg_threshold=None,
        pool_factor=10.0,
    )
    base.update(overrides)
    return config(**base)


def machine(cfg: rc.RoundConfig, rng: np.random.Generator) -> RoundMachine:
    return RoundMachine(
        cfg,
        weights=np.zeros(8, np.float32),
        optimizer=FedAvg(),
        optimizer_state=OptimizerState(),
        pace=PaceSteering(),
        rng=rng,
    )


def state(m: RoundMachine) -> RoundState:
    return m.state  # read through a call: mypy would keep a narrowed state across events


def checkin(msg_id: int = 1) -> rm.CheckIn:
    return rm.CheckIn(msg_id=msg_id, task_id="mnist", sdk_version="t")


def planned(out: list[rc.Command]) -> list[str]:
    return [c.device_id for c in out if isinstance(c, rc.Send) and isinstance(c.message, rm.Plan)]


def one_round(cfg: rc.RoundConfig, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Everyone checks in, always in the same order; (selected, told ROUND_FULL)."""
    m = machine(cfg, rng)
    m.start(0.0)
    out: list[rc.Command] = []
    for device_id in DEVICES:
        out += m.receive(device_id, checkin(), 1.0)
    if m.state is RoundState.CHECK_IN:
        out += m.tick(cfg.checkin_timeout)
    assert m.state is RoundState.TRAINING
    full = [
        c.device_id
        for c in out
        if isinstance(c, rc.Send)
        and isinstance(c.message, rm.ReconnectWindow)
        and c.message.reason is rm.ReconnectReason.ROUND_FULL
    ]
    return planned(out), full


def test_every_device_that_checks_in_is_selected_about_equally_often() -> None:
    # 400 rounds, 5 of 20 each: every device expects 100 selections (binomial sd 8.7).
    # First come first served would select dev-00..dev-04 every time and fail both checks.
    rng = np.random.default_rng(18)
    rounds = 400
    counts = dict.fromkeys(DEVICES, 0)
    for _ in range(rounds):
        selected, full = one_round(plain(), rng)
        assert len(set(selected)) == len(selected) == 5
        assert sorted(selected + full) == DEVICES  # the rest are told to come back
        for device_id in selected:
            counts[device_id] += 1
    expected = rounds * 5 / N_DEVICES
    assert all(abs(n - expected) <= 5 * 8.7 for n in counts.values()), counts
    # Pearson's chi-square over 20 cells (19 dof): its 99.9 % quantile is 43.8.
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    assert chi2 < 43.8, (chi2, counts)
    # The SecAgg+ order is random too: the first to check in is not always index 0.
    firsts = {one_round(plain(), rng)[0][0] for _ in range(50)}
    assert len(firsts) > 5


def test_check_in_closes_early_once_the_pool_is_full() -> None:
    cfg = plain(pool_factor=2.0)  # 5 selected from the first 10
    assert cfg.pool_target == 10
    m = machine(cfg, np.random.default_rng(1))
    m.start(0.0)
    out: list[rc.Command] = []
    for device_id in DEVICES[:9]:
        out += m.receive(device_id, checkin(), 1.0)
    assert m.state is RoundState.CHECK_IN
    assert not planned(out)
    out = m.receive(DEVICES[9], checkin(), 1.0)
    assert state(m) is RoundState.TRAINING
    assert set(planned(out)) <= set(DEVICES[:10])
    assert len(planned(out)) == 5
    late = m.receive(DEVICES[10], checkin(), 2.0)
    (window,) = [
        c.message
        for c in late
        if isinstance(c, rc.Send) and isinstance(c.message, rm.ReconnectWindow)
    ]
    assert window.reason is rm.ReconnectReason.ROUND_FULL
    assert m.status().checked_in == 10


def test_check_in_closes_early_when_every_eligible_device_is_in() -> None:
    m = machine(plain(population=7), np.random.default_rng(2))
    m.start(0.0)
    for device_id in DEVICES[:7]:
        m.receive(device_id, checkin(), 1.0)
    assert m.state is RoundState.TRAINING


def test_a_small_pool_at_the_deadline_is_taken_whole() -> None:
    m = machine(plain(), np.random.default_rng(3))
    m.start(0.0)
    out: list[rc.Command] = []
    for device_id in DEVICES[:3]:
        out += m.receive(device_id, checkin(), 1.0)
    assert m.state is RoundState.CHECK_IN
    out = m.tick(30.0)
    assert sorted(planned(out)) == DEVICES[:3]


def test_pool_target_and_sample_cohort() -> None:
    assert pool_target(13, 4.0, None) == 52
    assert pool_target(13, 4.0, 20) == 20
    assert pool_target(13, 4.0, 5) == 13  # never below a cohort
    rng = np.random.default_rng(0)
    assert sorted(sample_cohort(["a", "b"], 5, rng)) == ["a", "b"]
    assert len(set(sample_cohort(DEVICES, 7, rng))) == 7
    with pytest.raises(ValueError, match="twice"):
        sample_cohort(["a", "a"], 1, rng)
    with pytest.raises(ValueError, match="at least one"):
        sample_cohort(["a"], 0, rng)


def test_filters_keep_devices_out_of_the_pool_before_sampling() -> None:
    cfg = plain(eligible=frozenset(DEVICES[:12]), min_examples=50, population=10)
    m = machine(cfg, np.random.default_rng(4))
    m.start(0.0)
    turned: list[str] = []
    for i, device_id in enumerate(DEVICES):
        # Every third device holds too few examples; dev-12.. lack the task's labels.
        said = 10 if i % 3 == 0 else 80
        for c in m.receive(device_id, rm.CheckIn(msg_id=1, task_id="mnist", sdk_version="t",
                                                 n_examples=said), 1.0):  # fmt: skip
            if isinstance(c, rc.Send) and isinstance(c.message, rm.ReconnectWindow):
                assert c.message.reason is rm.ReconnectReason.NO_ROUND
                turned.append(device_id)
    admitted = [d for i, d in enumerate(DEVICES[:12]) if i % 3]
    assert sorted(set(DEVICES) - set(turned)) == admitted
    assert m.status().checked_in == len(admitted) == 8
    out = m.tick(30.0)
    assert set(planned(out)) <= set(admitted)
    assert len(planned(out)) == 5


def test_the_task_spec_sets_the_filters_and_the_population() -> None:
    devices = [
        DeviceRecord(
            device_id=f"d{i}",
            credential_hash="x",
            public_key=b"k" * 32,
            enrolled_at=0.0,
            labels={"site": "a" if i < 3 else "b"},
        )
        for i in range(5)
    ]
    spec = TaskSpec(select_labels={"site": "a"}, min_examples=20)
    cfg = with_pool(plain(), spec, devices)
    assert cfg.eligible == frozenset({"d0", "d1", "d2"})
    assert (cfg.population, cfg.min_examples) == (3, 20)
    assert cfg.admits("d1", 20)
    assert not cfg.admits("d1", 19)
    assert not cfg.admits("d4", 100)
    # No labels asked: anyone enrolled, and they are the population.
    anyone = with_pool(plain(), TaskSpec(), devices)
    assert (anyone.eligible, anyone.population) == (None, 5)
    assert anyone.admits("d4", 0)
