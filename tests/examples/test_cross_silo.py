"""examples/cross_silo: the README's commands run for real (coordinator, operator CLI, three
``fedrt device run`` silos on the embedded broker) commit classic SecAgg rounds where every
silo weighs its example count; and classic SecAgg at n = 3 holds up to one silo dropping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.coordinator.rounds.cohorts import secagg_parameters as cohort_parameters
from fedrt.coordinator.rounds.commands import RoundConfig
from fedrt.coordinator.rounds.plan import secagg_parameters
from fedrt.coordinator.tasks import TaskSpec
from fedrt.protocol.errors import RoundAborted
from fedrt.protocol.graph import neighbor_graph
from fedrt.protocol.round_plan import ModelRef
from fedrt.protocol.secagg import run_in_memory
from tests.conftest import SpawnFn
from tests.support.process import free_port, http_ok, until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cross_silo"
SILOS = 3


def _task_spec() -> TaskSpec:
    return TaskSpec.model_validate(tomllib.loads((EXAMPLE / "task.toml").read_text()))


def test_the_task_asks_for_classic_secagg_among_three_silos_that_count_by_size() -> None:
    spec = _task_spec()
    k, t = secagg_parameters(spec)
    assert (k, t) == (SILOS - 1, 2)
    assert k is not None
    assert spec.goal_count == SILOS
    assert spec.weight_cap >= 1_000_000
    # The round machine keeps k = n - 1 for a cohort of three (an odd k would be cut by one).
    model = ModelRef(version=0, sha256="0" * 64, url="http://127.0.0.1/m")
    config = RoundConfig(task_id="t", round_id=1, model=model, min_reports=2,
                         secagg_neighbors=k, secagg_threshold=t)  # fmt: skip
    assert cohort_parameters(config, SILOS) == (2, 2)
    for seed in (b"\x00" * 16, b"\x01" * 16):
        graph = neighbor_graph(SILOS, k, seed)
        assert all(set(row) == set(range(SILOS)) - {i} for i, row in enumerate(graph))


def test_classic_secagg_of_three_sums_two_when_one_silo_drops_and_aborts_below_two() -> None:
    inputs = [np.array([1, 2, 3], np.uint16), np.array([10, 20, 30], np.uint16),
              np.array([100, 200, 300], np.uint16)]  # fmt: skip
    total = run_in_memory(inputs, bits=16, threshold=2, neighbors=2, seed=3)
    assert total.tolist() == [111, 222, 333]
    # Silo 1 vanishes before sending its masked input: the other two unmask its pair masks.
    two = run_in_memory(inputs, bits=16, threshold=2, neighbors=2, drop={1: "masked_input"})
    assert two.tolist() == [101, 202, 303]
    with pytest.raises(RoundAborted):
        run_in_memory(inputs, bits=16, threshold=2, neighbors=2,
                      drop={1: "masked_input", 2: "masked_input"})  # fmt: skip


def _fedrt(*args: str, env: dict[str, str] | None = None, cwd: Path) -> str:
    """One operator command of the README, its stdout."""
    done = subprocess.run([sys.executable, "-m", "fedrt", *args], capture_output=True,
                          text=True, timeout=120, check=False, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})  # fmt: skip
    assert done.returncode == 0, f"fedrt {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _run_the_example(tmp_path: Path, spawn: SpawnFn, rounds: int) -> dict[str, Any]:
    """README steps 1-6 in ``tmp_path``; the evaluation and each round's detail."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Step 1, with the broker on any free port (the silos learn it at enrollment).
    coordinator = spawn([sys.executable, "-m", "fedrt", "coordinator", "serve",
                         "--data-dir", "coordinator", "--http", f"127.0.0.1:{port}",
                         "--pace-min-delay", "1", "--pace-spread", "1"],
                        name="coordinator", cwd=tmp_path,
                        env={"FEDRT_BROKER_EMBEDDED_PORT": "0"})  # fmt: skip
    coordinator.wait_ready(http_ok(f"{url}/healthz"), timeout=60)
    ops = {"FEDRT_URL": url}
    token_file = ["--token-file", "coordinator/admin-token"]
    _fedrt("export", "zoo:mlp", "--input-shape", "64", "--classes", "10", "--batch", "16",
           "--out", "model", cwd=tmp_path)  # fmt: skip
    _fedrt("tasks", "create", *token_file, "--name", "cross-silo", "--task-id", "cross-silo",
           "--model-dir", "model", "--spec", str(EXAMPLE / "task.toml"),
           "--set", f"max_rounds={rounds}", "--start", env=ops, cwd=tmp_path)  # fmt: skip
    prepared = subprocess.run([sys.executable, str(EXAMPLE / "prepare.py"), "--out", "silos",
                               "--url", url, "--task-id", "cross-silo", "--model", "model"],
                              capture_output=True, text=True, timeout=120, check=False,
                              cwd=tmp_path)  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    silos = []
    for i in range(1, SILOS + 1):
        config = f"silos/silo-{i}/device.toml"
        added = _fedrt("device", "add-examples", "--config", config, f"silos/silo-{i}.npz",
                       cwd=tmp_path)  # fmt: skip
        assert json.loads(added.splitlines()[-1])["examples"] >= 470
        token = _fedrt("tokens", "create", *token_file, "--note", f"silo-{i}", "--ttl", "3600",
                       env=ops, cwd=tmp_path).strip()  # fmt: skip
        silos.append(spawn([sys.executable, "-m", "fedrt", "device", "run", "--config", config,
                            "--status-every", "0.5"], name=f"silo-{i}", cwd=tmp_path,
                           env={"FEDRT_ENROLLMENT_TOKEN": token}))  # fmt: skip

    def finished() -> dict[str, Any] | None:
        task = json.loads(_fedrt("tasks", "show", "cross-silo", "--json", *token_file,
                                 env=ops, cwd=tmp_path))  # fmt: skip
        return task if task["status"] == "completed" else None

    until(finished, 60 + 15 * rounds, f"{rounds} rounds of the three silos")
    listed = json.loads(_fedrt("rounds", "list", "cross-silo", "--json", *token_file,
                               env=ops, cwd=tmp_path))  # fmt: skip
    rows = listed["rounds"] if isinstance(listed, dict) else listed
    details = [json.loads(_fedrt("rounds", "show", "cross-silo", str(r["round_no"]), "--json",
                                 *token_file, env=ops, cwd=tmp_path))
               for r in rows]  # fmt: skip
    evaluated = subprocess.run([sys.executable, str(EXAMPLE / "evaluate.py"), "--task",
                                "cross-silo", "--test", "silos/test.npz", "--url", url,
                                "--token-file", "coordinator/admin-token"],
                               capture_output=True, text=True, timeout=120, check=False,
                               cwd=tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    for silo in silos:
        assert silo.running, silo.log_tail()
        assert silo.stop() == 0
    statuses = [
        json.loads(line)
        for silo in silos
        for line in silo.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    return {"rounds": details, "evaluation": json.loads(evaluated.stdout.splitlines()[-1]),
            "statuses": statuses}  # fmt: skip


def _check_rounds(result: dict[str, Any], rounds: int) -> None:
    examples = sum(int(np.load(path)["y"].shape[0]) for path in _silo_files(result))
    assert [r["round_no"] for r in result["rounds"]] == list(range(1, rounds + 1))
    for detail in result["rounds"]:
        assert detail["status"] == "committed", detail
        metrics = detail["detail"]["metrics"]
        assert metrics["secagg"] is True
        assert (metrics["selected"], metrics["reported"], metrics["included"]) == (3, 3, 3)
        # Each silo weighs its example count over weight_cap: the sum is all the training data.
        assert metrics["total_weight"] * _task_spec().weight_cap == pytest.approx(examples)
    eligible = [s for s in result["statuses"] if s.get("event") == "status"]
    assert eligible
    assert all(s["eligibility"] == "eligible" for s in eligible)
    assert max(s["rounds_completed"] for s in eligible) == rounds


def _silo_files(result: dict[str, Any]) -> list[Path]:
    return list(result["root"].glob("silos/silo-*.npz"))


def test_three_silos_commit_a_classic_secagg_round(tmp_path: Path, spawn: SpawnFn) -> None:
    result = _run_the_example(tmp_path, spawn, rounds=1) | {"root": tmp_path}
    _check_rounds(result, 1)
    assert len(_silo_files(result)) == SILOS
    # One round from a random start already beats chance (0.1) by far.
    assert result["evaluation"]["round_no"] == 1
    assert result["evaluation"]["accuracy"] > 0.5


@pytest.mark.slow
def test_ten_rounds_of_three_silos_reach_ninety_percent(tmp_path: Path, spawn: SpawnFn) -> None:
    result = _run_the_example(tmp_path, spawn, rounds=10) | {"root": tmp_path}
    _check_rounds(result, 10)
    assert result["evaluation"]["round_no"] == 10
    assert result["evaluation"]["accuracy"] >= 0.9
