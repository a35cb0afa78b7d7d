"""Two coordinator instances on one PostgreSQL and a three-node NATS cluster, all on hosts of
their own (network namespaces), devices on two more: a round commits, and the fleet goes on
when the instance running the round is killed and when a NATS node is killed."""

from __future__ import annotations

import pytest

from fedrt.benchmarks.failover import SPEC, run_failover
from fedrt.benchmarks.instances_deployment import InstancesDeployment
from fedrt.benchmarks.processes import until
from fedrt.benchmarks.recovery import start_task

# Devices sent away after a round come back within seconds (the default waits >= 60 s).
FAST_PACE = ["--pace-min-delay", "1", "--pace-spread", "2"]
# A bound on each step, not a timing assertion: `fedrt bench failover` measures the seconds.
STEP_BOUND_S = 120.0


def test_a_secagg_round_commits_on_the_nats_cluster_and_names_its_instance(
    instances: InstancesDeployment,
) -> None:
    dep = instances
    dep.coordinator_args += FAST_PACE
    task_id = start_task(dep, devices_per_host=2, spec=SPEC)
    first = until(lambda: dep.committed(task_id), STEP_BOUND_S, "a committed round", every=1.0)
    assert first[0]["reporting"] >= SPEC["min_reports"]
    assert dep.owner(first[0]) in dep.instances
    # The HTTP API answers on every instance, from the one store.
    for name in dep.instances:
        seen = dep.api("GET", f"/v1/tasks/{task_id}/rounds", base=dep.url_of(name))
        rounds = seen["rounds"] if isinstance(seen, dict) else seen
        assert first[0]["round_no"] in [r["round_no"] for r in rounds]


@pytest.mark.slow
def test_killed_owner_and_killed_nats_node_lose_no_committed_round(
    instances: InstancesDeployment,
) -> None:
    dep = instances
    dep.coordinator_args += FAST_PACE
    task_id = start_task(dep, devices_per_host=2, spec=SPEC)
    figures = run_failover(dep, task_id, bound=STEP_BOUND_S)
    # The round after the kill was run by the instance left standing.
    assert figures.taken_over_by != figures.killed_instance
    assert figures.rounds_committed >= 3
    print(f"\n{figures}")
