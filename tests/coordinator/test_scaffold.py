"""SCAFFOLD on the coordinator: the server step against numpy, a SecAgg+ round, c persisted,
and tasks that cannot run it refused at creation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.models import BlobStore
from fedrt.coordinator.models.optimizer_state import decode_state, load_state, save_state
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.plan import optimizer_for
from fedrt.coordinator.rounds.scaffold import CONTROL_VARIATE, with_scaffold
from fedrt.coordinator.strategies import OptimizerState, Scaffold
from fedrt.coordinator.strategies.scaffold import for_round
from fedrt.coordinator.tasks.model_fit import check_model_fit
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm
from fedrt.protocol.round_codec import decode_message, encode_message
from fedrt.protocol.round_errors import MalformedMessage
from tests.coordinator.round_harness import Network, config
from tests.coordinator.store_conformance import model

P = 8
LR = 0.05


def reference(
    x: np.ndarray[Any, Any],
    c: np.ndarray[Any, Any],
    dys: list[np.ndarray[Any, Any]],
    cs: list[np.ndarray[Any, Any]],
    *,
    server_lr: float,
    population: int,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Karimireddy et al. 2020, Algorithm 1, line 16, in plain numpy; c as the running mean
    of the fresh variates ``cs`` (``strategies.scaffold``)."""
    share = min(1.0, len(dys) / population)
    return x + server_lr * np.mean(dys, axis=0), (1 - share) * c + share * np.mean(cs, axis=0)


def test_the_server_step_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=P), rng.normal(size=P)
    dys = [rng.normal(scale=0.1, size=P) for _ in range(4)]
    dcs = [rng.normal(size=P) for _ in range(4)]
    # What SecAgg+ hands over: the mean of [delta_y, s * c_i+].
    mean = np.mean([np.concatenate([dy, LR * dc]) for dy, dc in zip(dys, dcs, strict=True)], 0)
    opt = for_round(Scaffold(server_lr=0.7, variate_scale=LR), included=4, population=10)
    new, state = opt.apply(x, mean, OptimizerState(rounds=3, control_variate=c))
    want_x, want_c = reference(x, c, dys, dcs, server_lr=0.7, population=10)
    np.testing.assert_allclose(new, want_x.astype(np.float32), rtol=1e-6)
    assert state.control_variate is not None
    np.testing.assert_allclose(state.control_variate, want_c, rtol=1e-12)
    assert state.rounds == 4
    # c starts at zero; more participants than the population count as all of it.
    _, first = for_round(opt, included=20, population=10).apply(x, mean, OptimizerState())
    assert first.control_variate is not None
    np.testing.assert_allclose(first.control_variate, np.mean(dcs, axis=0), rtol=1e-12)


def test_the_server_step_refuses_a_model_sized_delta() -> None:
    from fedrt.coordinator.strategies import AggregationError

    with pytest.raises(AggregationError, match="16 values"):
        Scaffold().apply(np.zeros(P), np.zeros(P), OptimizerState())


def test_a_secagg_round_updates_x_and_c_like_numpy() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=P).astype(np.float32)
    c = rng.normal(scale=0.1, size=P)
    ref = rm.ModelRef(version=3, sha256="b" * 64, url="http://h/v1/models/x/control_variate")
    cfg = config(scaffold=True, control_variate=ref, population=12)
    opt = Scaffold(server_lr=1.0, variate_scale=LR)
    net = Network(cfg, 6, x, optimizer=opt)
    net.machine._agg._state = OptimizerState(control_variate=c)  # the version's saved c
    dys = {d: rng.normal(scale=0.05, size=P) for d in net.ids}
    dcs = {d: rng.normal(scale=0.5, size=P) for d in net.ids}
    net.deltas = {d: np.concatenate([dys[d], LR * dcs[d]]) for d in net.ids}
    net.examples = dict.fromkeys(net.ids, 10)
    net.start()
    net.run()
    commit = net.outcome()
    assert isinstance(commit, rc.Commit)
    plans = [
        s.message
        for s in net.server_out
        if isinstance(s, rc.Send) and isinstance(s.message, rm.Plan)
    ]
    assert {(p.scaffold, p.control_variate, p.update.params) for p in plans} == {(True, ref, 2 * P)}
    want_x, want_c = reference(
        x, c, list(dys.values()), list(dcs.values()), server_lr=1.0, population=12
    )
    # 16-bit quantization of the clipped vector: one step is about 2 / 2^16 of the bound.
    np.testing.assert_allclose(commit.weights, want_x, atol=1e-3)
    assert commit.optimizer_state.control_variate is not None
    np.testing.assert_allclose(commit.optimizer_state.control_variate, want_c, atol=1e-2)
    assert float(np.abs(commit.optimizer_state.control_variate - c).max()) > 0.05


def test_a_plan_with_a_control_variate_crosses_the_wire() -> None:
    ref = rm.ModelRef(version=2, sha256="c" * 64, url="http://h/v1/models/y/control_variate")
    base: dict[str, Any] = dict(
        msg_id=1, task_id="t", round_id=4, kind=rm.RoundKind.TRAIN,
        model=rm.ModelRef(version=2, sha256="d" * 64, url="http://h/v1/models/y"),
        training=rm.TrainingConfig(), secagg=None, report_within=30.0,
        update=rm.UpdateSpec(params=2 * P, clip_norm=1.0, bits=8, weight_cap=10),
    )  # fmt: skip
    for plan in (rm.Plan(**base, scaffold=True, control_variate=ref), rm.Plan(**base)):
        assert decode_message(encode_message(plan)) == plan
    with pytest.raises(MalformedMessage, match="control_variate"):
        rm.Plan(**base, control_variate=ref)  # a variate without scaffold


def test_c_is_saved_with_the_version_and_loaded_back(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    opt = Scaffold(variate_scale=LR)
    c = np.linspace(-1.0, 1.0, P)
    sha = save_state(blobs, opt, OptimizerState(rounds=5, control_variate=c))
    assert sha is not None
    name, state = decode_state(blobs.read(sha))
    assert name == "scaffold"
    np.testing.assert_array_equal(state.control_variate, c)
    record = dataclasses.replace(model("v"), optimizer_state_sha256=sha)
    loaded = load_state(blobs, record, opt, size=P, rounds=0, task_id="t")
    np.testing.assert_array_equal(loaded.control_variate, c)
    # Another model size: c starts again at zero (None), as the devices' c_i do.
    assert load_state(blobs, record, opt, size=P + 1, rounds=0, task_id="t").control_variate is None


def test_round_config_names_the_versions_variate(tmp_path: Path) -> None:
    spec = TaskSpec(strategy="scaffold", learning_rate=LR, local_epochs=3)
    opt = optimizer_for(spec)
    assert isinstance(opt, Scaffold)
    assert opt.variate_scale == pytest.approx(3 * LR)  # the devices' (protocol.scaffold)
    cfg = config()
    blobs = BlobStore(tmp_path)
    c = np.arange(P, dtype=np.float64)
    state = save_state(blobs, opt, OptimizerState(rounds=4, control_variate=c))
    with_state = dataclasses.replace(model("v"), optimizer_state_sha256=state, round_no=4)
    got = with_scaffold(cfg, spec, with_state, "https://c/v1/models/", blobs)
    assert got.scaffold
    assert got.control_variate is not None
    # The plan names c's float32 form (half the float64 state), stored as a blob.
    assert blobs.read(got.control_variate.sha256) == c.astype("<f4").tobytes()
    assert got.control_variate.url == f"https://c/v1/models/{with_state.sha256}/{CONTROL_VARIATE}"
    for missing in (None, "f" * 64):  # no state, or one the store lost: c = 0
        record = dataclasses.replace(with_state, optimizer_state_sha256=missing)
        fresh = with_scaffold(cfg, spec, record, "https://c/v1/models/", blobs)
        assert fresh.scaffold
        assert fresh.control_variate is None
    evaluate = dataclasses.replace(cfg, kind=rm.RoundKind.EVALUATE)
    assert not with_scaffold(evaluate, spec, with_state, "https://c/", blobs).scaffold
    assert not with_scaffold(cfg, TaskSpec(), with_state, "https://c/", blobs).scaffold


def test_scaffold_needs_a_model_exported_with_it() -> None:
    def manifest(*extra: str) -> dict[str, Any]:
        names = ["lr", "x", "y", *extra]
        return {"signatures": {"train": {"inputs": [{"name": n} for n in names]}}}

    spec = TaskSpec(strategy="scaffold")
    check_model_fit(spec, manifest("correction"), "a" * 64)
    with pytest.raises(BadRequestError, match=r"strategy = scaffold .* fedrt export --scaffold"):
        check_model_fit(spec, manifest("mu", "momentum"), "a" * 64)


def test_scaffold_tasks_refuse_what_it_cannot_do() -> None:
    TaskSpec(strategy="scaffold", secagg=True)
    with pytest.raises(BadRequestError, match="mode sync"):
        TaskSpec(strategy="scaffold", mode="async")
    with pytest.raises(BadRequestError, match="personal layers"):
        TaskSpec(strategy="scaffold", personal_last_layers=1)
