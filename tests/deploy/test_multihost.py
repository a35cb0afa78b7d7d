"""fedrt on separate hosts: HTTPS at a public URL, mqtts, and recovery from killed parts.

The hosts are network namespaces on one bridge (``fedrt.benchmarks.lan``). Devices run
``fedrt device run`` with the SDK's default timers and reach the coordinator only through
its public HTTPS URL and the broker only over mqtts (its plain listener is on its loopback).
"""

from __future__ import annotations

import pytest

from fedrt.benchmarks.deployment import Deployment, until
from fedrt.benchmarks.recovery import SPEC, run_scenario, start_task

# Devices sent away after a round come back within seconds (the default waits >= 60 s).
FAST_PACE = ["--pace-min-delay", "1", "--pace-spread", "2"]
# A bound on each step, not a timing assertion: `fedrt bench recovery` measures the seconds.
STEP_BOUND_S = 120.0


def test_a_round_commits_across_hosts_over_https_and_mqtts(deployment: Deployment) -> None:
    dep = deployment
    dep.coordinator_args += FAST_PACE
    task_id = start_task(dep, devices_per_host=2, spec=SPEC)
    first = until(lambda: dep.committed(task_id), STEP_BOUND_S, "a committed round", every=1.0)
    assert first[0]["reporting"] >= SPEC["min_reports"]
    # Every plan carried the public URL: the devices fetched the model over HTTPS from the
    # coordinator's LAN address (the bind address, 0.0.0.0, would have failed them).
    until(lambda: all(d.rounds_completed() >= 1 for d in dep.devices), 60, "every device")
    assert dep.api("GET", f"/v1/tasks/{task_id}")["status"] == "running"


@pytest.mark.slow
def test_killed_coordinator_and_restarted_broker_lose_nothing_and_everyone_returns(
    deployment: Deployment,
) -> None:
    dep = deployment
    dep.coordinator_args += FAST_PACE
    task_id = start_task(dep, devices_per_host=2, spec=SPEC)
    figures = run_scenario(dep, task_id, bound=STEP_BOUND_S)
    assert figures.rounds_committed >= 3
    print(f"\n{figures}")
