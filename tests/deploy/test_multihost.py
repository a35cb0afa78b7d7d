"""fedrt on separate hosts: HTTPS at a public URL, mqtts, and recovery from killed parts.

The hosts are network namespaces on one bridge (tests/deploy/conftest.py). Devices run
``fedrt device run`` with the SDK's default timers and reach the coordinator only through
its public HTTPS URL and the broker only over mqtts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fedrt.benchmarks.deployment import DEFAULT_MODEL_DIR, Deployment, until

# Four devices on two hosts, all of them wanted in every round, SecAgg+ on.
SPEC = {
    "goal_count": 4,
    "over_selection": 1.0,
    "min_reports": 3,
    "eval_every": 0,
    "secagg": True,
    "checkin_deadline_s": 20.0,
    "training_deadline_s": 30.0,
    "secagg_stage_deadline_s": 15.0,
    "max_rounds": 1000,
}
# Devices sent away after a round come back within seconds (the default waits >= 60 s).
FAST_PACE = ["--pace-min-delay", "1", "--pace-spread", "2"]
# From a kill or restart to the next committed round (the target is 60 s).
RECOVERY_BOUND_S = 90.0


def _start(dep: Deployment, *, devices_per_host: int = 2, pace: list[str] | None = None) -> str:
    dep.coordinator_args += FAST_PACE if pace is None else pace
    dep.start_broker()
    dep.start_coordinator()
    task = dep.api("POST", "/v1/tasks", {"name": "deploy", "model_dir": str(DEFAULT_MODEL_DIR),
                                         "spec": SPEC})  # fmt: skip
    task_id: str = task["task_id"]
    seed = 0
    for host in dep.device_hosts:
        for _ in range(devices_per_host):
            dep.add_device(host, task_id, seed)
            seed += 1
    dep.api("POST", f"/v1/tasks/{task_id}/start", {})
    return task_id


def _everyone_took_part_since(dep: Deployment, before: dict[str, int]) -> bool:
    return all(d.rounds_completed() > before[d.name] for d in dep.devices)


def test_a_round_commits_across_hosts_over_https_and_mqtts(deployment: Deployment) -> None:
    dep = deployment
    task_id = _start(dep)
    first = until(lambda: dep.committed(task_id), 120, "a committed round", every=1.0)
    assert first[0]["reporting"] >= SPEC["min_reports"]
    # Every plan pointed at the public URL: the devices fetched their model over HTTPS from
    # the coordinator's LAN address (a wildcard bind address would have failed them).
    until(lambda: all(d.rounds_completed() >= 1 for d in dep.devices), 60, "every device")
    info = dep.api("GET", f"/v1/tasks/{task_id}")
    assert info["status"] == "running"


def _mid_round(dep: Deployment, task_id: str) -> dict[str, Any]:
    """Wait for a round after the last committed one to be running past its check-in."""
    last = max(r["round_no"] for r in dep.committed(task_id))

    def open_round() -> dict[str, Any] | None:
        rounds = dep.rounds(task_id)
        if not rounds:
            return None
        r = rounds[-1]
        busy = r["status"] == "running" and r["round_no"] > last and r.get("selected", 0) > 0
        return r if busy else None

    victim: dict[str, Any] = until(open_round, 60, "a round in progress", every=0.3)
    return victim


@pytest.mark.slow
def test_killed_coordinator_and_restarted_broker_recover_within_a_minute(
    deployment: Deployment,
) -> None:
    dep = deployment
    task_id = _start(dep)
    until(lambda: dep.committed(task_id), 120, "a first committed round", every=1.0)

    # 1. kill -9 the coordinator's host process mid-round, restart it on the same data dir.
    before_kill = {r["round_no"]: r for r in dep.committed(task_id)}
    taken = {d.name: d.rounds_completed() for d in dep.devices}
    victim = _mid_round(dep, task_id)
    dep.kill_coordinator()
    killed_at = time.monotonic()
    dep.start_coordinator()
    after = until(
        lambda: [r for r in dep.committed(task_id) if r["round_no"] > victim["round_no"]],
        RECOVERY_BOUND_S,
        "a round committed after the coordinator's kill",
        every=1.0,
    )
    coordinator_recovery_s = time.monotonic() - killed_at
    rounds = {r["round_no"]: r for r in dep.rounds(task_id)}
    for no, r in before_kill.items():
        assert rounds[no]["status"] == "committed"
        assert rounds[no]["result_sha256"] == r["result_sha256"]
    until(lambda: _everyone_took_part_since(dep, taken), RECOVERY_BOUND_S, "every device back")

    # 2. restart the broker mid-round.
    before_restart = {r["round_no"]: r for r in dep.committed(task_id)}
    taken = {d.name: d.rounds_completed() for d in dep.devices}
    victim = _mid_round(dep, task_id)
    dep.stop_broker()
    restarted_at = time.monotonic()
    dep.start_broker()
    until(
        lambda: [r for r in dep.committed(task_id) if r["round_no"] > victim["round_no"]],
        RECOVERY_BOUND_S,
        "a round committed after the broker's restart",
        every=1.0,
    )
    broker_recovery_s = time.monotonic() - restarted_at
    rounds = {r["round_no"]: r for r in dep.rounds(task_id)}
    for no, r in before_restart.items():
        assert rounds[no]["result_sha256"] == r["result_sha256"]
    until(lambda: _everyone_took_part_since(dep, taken), RECOVERY_BOUND_S, "every device back")
    print(
        f"\nrecovery: coordinator kill -> commit {coordinator_recovery_s:.1f} s, "
        f"broker restart -> commit {broker_recovery_s:.1f} s; first after kill: {after[0]}"
    )
