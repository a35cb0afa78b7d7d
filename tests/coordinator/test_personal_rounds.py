"""Personal layers (FedPer) on the coordinator: named, sized out of the update, left untouched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.personal import embed, shared_size
from fedrt.coordinator.strategies import FedAdam, FedAvg, ServerOptimizer
from fedrt.coordinator.tasks.model_fit import check_model_fit
from fedrt.coordinator.tasks.personal_layers import last_layers, resolve
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm
from fedrt.protocol import round_update
from tests.coordinator.round_harness import Network, config, fedavg

CNN = (
    "conv1_kernel", "conv1_bias", "conv2_kernel", "conv2_bias",
    "fc_kernel", "fc_bias", "logits_kernel", "logits_bias",
)  # fmt: skip
M = 64
# The model's last 24 coordinates are its personal tensors.
PERSONAL = ((40, 52), (52, 64))


def test_last_layers_are_runs_of_one_layer_from_the_end() -> None:
    assert last_layers(CNN, 1) == ("logits_kernel", "logits_bias")
    assert last_layers(CNN, 2) == ("fc_kernel", "fc_bias", "logits_kernel", "logits_bias")
    assert last_layers(CNN, 0) == ()
    assert last_layers(("a", "b_bias"), 1) == ("b_bias",)


def test_resolve_refuses_unknown_names_and_sharing_nothing() -> None:
    assert resolve(["logits_bias", "fc_bias"], 0, CNN) == ("fc_bias", "logits_bias")
    assert resolve([], 1, CNN) == ("logits_kernel", "logits_bias")
    with pytest.raises(BadRequestError, match="dense_kernel are not weights"):
        resolve(["dense_kernel"], 0, CNN)
    with pytest.raises(BadRequestError, match="at least one must be shared"):
        resolve([], 4, CNN)
    with pytest.raises(BadRequestError, match="nothing would be shared"):
        resolve(list(CNN), 0, CNN)


def test_task_creation_checks_personal_layers_against_the_model() -> None:
    manifest: dict[str, Any] = {"weights": [{"name": n, "shape": [1]} for n in CNN]}
    check_model_fit(TaskSpec(personal_last_layers=1), manifest, "a" * 64)
    with pytest.raises(BadRequestError, match="not weights of the model"):
        check_model_fit(TaskSpec(personal_layers=["nope"]), manifest, "a" * 64)
    with pytest.raises(BadRequestError, match="not both"):
        TaskSpec(personal_layers=["fc_bias"], personal_last_layers=1)
    with pytest.raises(BadRequestError, match="need mode sync"):
        TaskSpec(personal_last_layers=1, mode="async")


def test_embed_puts_zeros_where_the_personal_tensors_are() -> None:
    full = embed(np.arange(1.0, 41.0), M, PERSONAL)
    assert full.shape == (M,)
    assert np.array_equal(full[:40], np.arange(1.0, 41.0))
    assert not full[40:].any()
    assert shared_size(M, PERSONAL) == 40


def _network(secagg: bool, optimizer: ServerOptimizer) -> Network:
    cfg = config(
        goal_count=6, min_reports=4, secagg_neighbors=5, secagg_threshold=4, secagg=secagg,
        personal_layers=("logits_kernel", "logits_bias"), personal_spans=PERSONAL,
        finetune_steps=3,
    )  # fmt: skip
    rng = np.random.default_rng(5)
    net = Network(cfg, 6, rng.normal(size=M).astype(np.float32), optimizer=optimizer)
    for d in net.ids:
        v = rng.normal(size=40)
        net.deltas[d] = v * (0.5 / np.linalg.norm(v))
        net.examples[d] = int(rng.integers(1, 100))
    return net


@pytest.mark.parametrize("secagg", [True, False], ids=["secagg", "plain"])
@pytest.mark.parametrize("optimizer", [FedAvg, FedAdam])
def test_the_aggregate_moves_only_the_shared_tensors(
    secagg: bool, optimizer: type[ServerOptimizer]
) -> None:
    net = _network(secagg, optimizer())
    start = net.weights.copy()
    net.start()
    net.run()
    plans = [c.message for c in net.server_out if isinstance(c, rc.Send)]
    plan = next(p for p in plans if isinstance(p, rm.Plan))
    # The devices are told which tensors to keep, and the update holds only the others.
    assert plan.personal_layers == ("logits_kernel", "logits_bias")
    assert plan.finetune_steps == 3
    assert plan.update.params == 40
    out = net.outcome()
    assert isinstance(out, rc.Commit), out
    assert out.weights.shape == (M,)
    assert np.array_equal(out.weights[40:], start[40:])  # bit for bit
    assert not out.delta[40:].any()
    assert not np.array_equal(out.weights[:40], start[:40])
    if optimizer is FedAvg:
        ref = fedavg([net.deltas[d] for d in net.ids], [net.examples[d] for d in net.ids])
        step = round_update.step(net.machine.update_spec)
        weight = sum(net.examples.values()) / net.machine.update_spec.weight_cap
        err = np.abs(out.weights[:40].astype(np.float64) - (start[:40] + ref)).max()
        assert err <= len(net.ids) * step / weight + 1e-6
