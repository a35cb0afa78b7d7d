"""A stateful server optimizer continues bit for bit across a coordinator restart, a pause and
resume, and a rollback: its state is saved with each model version and loaded back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedrt.coordinator.models import BlobStore
from fedrt.coordinator.models.optimizer_state import (
    decode_state,
    encode_state,
    load_state,
    save_state,
)
from fedrt.coordinator.records import ModelRecord
from fedrt.coordinator.strategies import FedAdam, FedAvg, FedAvgM, OptimizerState
from tests.coordinator.driver_harness import TASK, Fleet, pull_to_targets, weights_of
from tests.coordinator.store_conformance import model

ROUNDS = 6


def _versions(tmp_path: Path, spec: dict[str, object], *, interrupted: bool) -> list[str]:
    """The committed versions of a ROUNDS-round task; ``interrupted``: the coordinator
    restarts after round 2 and the task is paused and resumed after round 4."""
    fleet = Fleet(3, pull_to_targets)
    fleet.open(tmp_path)
    fleet.create_task(max_rounds=ROUNDS, **spec)
    if interrupted:
        fleet.run_until(lambda: len(fleet.committed()) == 2)
        assert fleet.coordinator is not None
        fleet.coordinator.close()
        fleet.open(tmp_path)  # a new service and driver on the same data dir
        fleet.run_until(lambda: len(fleet.committed()) == 4)
        fleet.svc.tasks.act(TASK, "pause", actor="test")
        fleet.svc.tasks.act(TASK, "resume", actor="test")
    fleet.run_until(fleet.done)
    versions = fleet.committed()
    svc = fleet.svc
    assert len(versions) == ROUNDS
    assert svc.store.get_task(TASK).model_sha256 == versions[-1]
    for sha in versions:  # every version carries the state it was produced with
        state = svc.store.get_model(sha).optimizer_state_sha256
        assert state is not None
        assert svc.blobs.has(state)
    assert fleet.coordinator is not None
    fleet.coordinator.close()
    return versions


@pytest.mark.parametrize(
    "spec",
    [
        {"strategy": "fedadam", "server_lr": 0.05},
        {"strategy": "fedyogi", "server_lr": 0.05},
        {"strategy": "fedavgm", "server_lr": 0.5, "server_momentum": 0.9},
    ],
    ids=lambda s: str(s["strategy"]),
)
def test_restart_and_pause_resume_continue_the_optimizer_bit_for_bit(
    tmp_path: Path, spec: dict[str, object]
) -> None:
    straight = _versions(tmp_path / "straight", spec, interrupted=False)
    interrupted = _versions(tmp_path / "interrupted", spec, interrupted=True)
    # Content-addressed: the same sha256 is the same model file, every weight bit equal.
    assert interrupted == straight
    assert len(set(straight)) == ROUNDS


def test_a_rollback_resumes_with_the_state_of_the_version_rolled_back_to(tmp_path: Path) -> None:
    adam = FedAdam(server_lr=0.05)
    fleet = Fleet(3, pull_to_targets)
    fleet.open(tmp_path)
    # download_bits=0: versions hold the optimizer's exact output, which the check below
    # recomputes (a quantized downlink commits its rebuilt weights instead).
    fleet.create_task(strategy="fedadam", server_lr=adam.server_lr, max_rounds=5, download_bits=0)
    fleet.run_until(lambda: len(fleet.committed()) == 4)
    svc = fleet.svc
    v2 = fleet.committed()[1]
    svc.tasks.act(TASK, "pause", actor="test")
    svc.catalog.rollback(TASK, to=v2, actor="test")
    svc.tasks.act(TASK, "resume", actor="test")
    fleet.run_until(fleet.done)
    v5 = fleet.committed()[4]
    assert svc.store.get_model(v5).parent_sha256 == v2

    def state(sha: str) -> OptimizerState:
        blob = svc.store.get_model(sha).optimizer_state_sha256
        assert blob is not None
        return decode_state(svc.blobs.read(blob))[1]

    before, after = state(v2), state(v5)
    assert (before.rounds, after.rounds) == (2, 3)  # version 2's state, one round on
    m0, v0, m, v = before.momentum, before.second_moment, after.momentum, after.second_moment
    assert m0 is not None
    assert v0 is not None
    assert m is not None
    assert v is not None
    # Round 5 applied one delta d to version 2's moments: m = b1 m0 + (1 - b1) d, and
    # v = b2 v0 + (1 - b2) d^2 for that same d (it would not fit version 4's moments).
    d = (m - adam.beta1 * m0) / (1 - adam.beta1)
    assert np.allclose((v - adam.beta2 * v0) / (1 - adam.beta2), d * d, rtol=1e-6, atol=1e-12)
    w2 = weights_of(svc, v2).astype(np.float64)
    expected = (w2 + adam.server_lr * m / (np.sqrt(v) + adam.tau)).astype(np.float32)
    assert expected.tobytes() == weights_of(svc, v5).tobytes()
    assert fleet.coordinator is not None
    fleet.coordinator.close()


def test_the_encoding_is_exact_and_deterministic() -> None:
    rng = np.random.default_rng(3)
    state = OptimizerState(rounds=7, momentum=rng.normal(size=50), second_moment=rng.random(50))
    data = encode_state("fedadam", state)
    assert encode_state("fedadam", state) == data
    name, back = decode_state(data)
    assert name == "fedadam"
    assert back.rounds == 7
    assert back.momentum is not None
    assert back.second_moment is not None
    assert back.momentum.tobytes() == state.momentum.tobytes()  # type: ignore[union-attr]
    assert back.second_moment.tobytes() == state.second_moment.tobytes()  # type: ignore[union-attr]
    only_m = OptimizerState(rounds=1, momentum=np.ones(3))
    assert decode_state(encode_state("fedavgm", only_m))[1].second_moment is None


@pytest.mark.parametrize("cut", [0, 10, 30, -8, -1])
def test_damaged_encodings_are_store_errors(cut: int) -> None:
    from fedrt.coordinator.errors import StoreError

    data = encode_state("fedadam", OptimizerState(rounds=1, momentum=np.ones(4)))
    with pytest.raises(StoreError):
        decode_state(data[:cut])
    with pytest.raises(StoreError):
        decode_state(data + b"\x00" * 8)
    nan = encode_state("fedadam", OptimizerState(rounds=1, momentum=np.array([np.nan])))
    with pytest.raises(StoreError, match="NaN"):
        decode_state(nan)


def _version(state_sha: str | None) -> ModelRecord:
    return dataclasses.replace(model("v"), optimizer_state_sha256=state_sha)


def test_a_state_that_does_not_fit_starts_fresh_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blobs = BlobStore(tmp_path)
    adam = FedAdam()
    state = OptimizerState(rounds=4, momentum=np.ones(5), second_moment=np.ones(5))
    sha = save_state(blobs, adam, state)
    assert sha is not None
    assert save_state(blobs, FedAvg(), OptimizerState(rounds=4)) is None
    assert save_state(blobs, adam, OptimizerState(rounds=0)) is None

    def load(record: ModelRecord, optimizer: object = adam, size: int = 5) -> OptimizerState:
        return load_state(blobs, record, optimizer, size=size, rounds=9, task_id=TASK)  # type: ignore[arg-type]

    assert load(_version(sha)).rounds == 4
    caplog.set_level("INFO", logger="fedrt.coordinator.models.optimizer_state")
    cases = [
        (_version(None), adam, 5, "no saved optimizer state"),
        (_version(sha), FedAvgM(), 5, "is for fedadam"),
        (_version(sha), adam, 6, "over [5] values"),
        (_version("0" * 64), adam, 5, "unusable"),
    ]
    for record, optimizer, size, why in cases:
        caplog.clear()
        fresh = load(record, optimizer, size)
        assert (fresh.rounds, fresh.momentum, fresh.second_moment) == (9, None, None)
        assert why in caplog.text
    path = blobs.path(sha)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    caplog.clear()
    assert load(_version(sha)).momentum is None
    assert "unusable" in caplog.text
    assert "corrupt" in caplog.text
