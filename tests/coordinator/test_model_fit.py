"""Training settings the model cannot take are refused at task creation, never ignored."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.store import MemoryStore
from fedrt.coordinator.tasks.manager import TaskManager
from fedrt.coordinator.tasks.model_fit import check_model_fit, train_inputs
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.protocol import round_messages as rm
from tests.coordinator.round_harness import Network, config
from tests.coordinator.store_conformance import model


def manifest(*extra: str) -> dict[str, Any]:
    names = ["lr", "x", "y", *extra]
    return {"signatures": {"train": {"inputs": [{"name": n} for n in names], "outputs": []}}}


def test_each_setting_needs_its_train_input() -> None:
    assert train_inputs(manifest("mu")) == {"lr", "x", "y", "mu"}
    assert train_inputs({}) == frozenset()
    plain, both = manifest(), manifest("mu", "momentum")
    check_model_fit(TaskSpec(), plain, "a" * 64)  # asks for neither
    check_model_fit(TaskSpec(fedprox_mu=0.01, client_momentum=0.9), both, "a" * 64)
    with pytest.raises(BadRequestError, match=r"fedprox_mu = 0.01 .* fedrt export --fedprox"):
        check_model_fit(TaskSpec(fedprox_mu=0.01), plain, "a" * 64)
    with pytest.raises(BadRequestError, match=r"client_momentum = 0.9 .* --momentum"):
        check_model_fit(TaskSpec(client_momentum=0.9), manifest("mu"), "a" * 64)


def test_task_creation_refuses_a_model_exported_without_them() -> None:
    store = MemoryStore()
    tasks = TaskManager(store, clock=lambda: 5.0)
    bare = dataclasses.replace(model("bare"), manifest=manifest())
    prox = dataclasses.replace(model("prox"), manifest=manifest("mu"))
    store.add_model(bare)
    store.add_model(prox)
    with pytest.raises(BadRequestError, match="--fedprox"):
        tasks.create(name="t", model_sha256=bare.sha256, spec=TaskSpec(fedprox_mu=0.1),
                     actor="admin")  # fmt: skip
    assert store.list_tasks() == []  # nothing created, nothing audited
    assert not [a for a in store.list_audit() if a.action == "task.create"]
    tasks.create(name="t", model_sha256=prox.sha256, spec=TaskSpec(fedprox_mu=0.1), actor="a")
    with pytest.raises(BadRequestError, match="--momentum"):
        tasks.create(name="t", model_sha256=prox.sha256, spec=TaskSpec(client_momentum=0.5),
                     actor="admin")  # fmt: skip


def test_the_plan_carries_the_momentum_to_the_devices() -> None:
    net = Network(config(momentum=0.9), 6, np.zeros(8, np.float32))
    net.deltas = {d: np.full(8, 0.01) for d in net.ids}
    net.examples = dict.fromkeys(net.ids, 10)
    net.start()
    net.run()
    assert isinstance(net.outcome(), rc.Commit)  # the devices read the plan and trained
    plans = [
        c.message
        for c in net.server_out
        if isinstance(c, rc.Send) and isinstance(c.message, rm.Plan)
    ]
    assert len(plans) == 6
    assert {p.momentum for p in plans} == {0.9}
