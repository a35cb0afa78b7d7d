"""``fedrt bench failover``: seconds from a killed coordinator instance or NATS node to a commit.

Two ``fedrt coordinator serve`` instances on one PostgreSQL, a three-node NATS cluster and
``fedrt device run`` processes, each on a LAN host of its own (``instances_deployment``;
needs root). After a first committed round, the instance that owns the running round is
killed (-9): the other takes the task over when the lease expires (15 s) and a later round
commits. Then a NATS node (every client's first listener) is killed mid-round and a round
commits again. Each time no committed round may change and every device takes part again.
Target (issue 17, benchmark 4): at most 60 s each.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrt.benchmarks.instances_deployment import InstancesDeployment, build_instances_deployment
from fedrt.benchmarks.lan import Lan
from fedrt.benchmarks.processes import until
from fedrt.benchmarks.recovery import (
    SPEC,
    add_lan_options,
    recovered_after,
    report_seconds,
    round_in_progress,
    run_on_lan,
    start_task,
)

__all__ = ["SPEC", "FailoverFigures", "register", "run_failover"]

# How long the scenario waits for each step before it calls the step failed.
STEP_BOUND_S = 180.0


@dataclass(frozen=True, slots=True)
class FailoverFigures:
    killed_instance: str
    taken_over_by: str
    instance_kill_to_commit_s: float
    nats_kill_to_commit_s: float
    rounds_committed: int


def run_failover(
    dep: InstancesDeployment, task_id: str, bound: float = STEP_BOUND_S
) -> FailoverFigures:
    """Kill -9 the instance owning the running round; later kill a NATS node mid-round."""
    until(lambda: dep.committed(task_id), bound, "a first committed round", every=1.0)
    victim = round_in_progress(dep, task_id, bound)
    killed = dep.owner(victim)
    dep.kill_instance(killed)
    since = time.monotonic()
    instance_s = recovered_after(dep, task_id, victim, f"instance {killed}'s kill", since, bound)
    # A round opened after the kill is run by an instance still standing.
    later = until(
        lambda: [r for r in dep.committed(task_id) if r["round_no"] > victim["round_no"]],
        bound,
        "a round opened after the kill, committed",
        every=0.5,
    )
    taken_over_by = dep.owner(later[0])
    victim = round_in_progress(dep, task_id, bound)
    dep.kill_nats_node(0)
    since = time.monotonic()
    nats_s = recovered_after(dep, task_id, victim, "a NATS node's kill", since, bound)
    return FailoverFigures(
        killed_instance=killed,
        taken_over_by=taken_over_by,
        instance_kill_to_commit_s=instance_s,
        nats_kill_to_commit_s=nats_s,
        rounds_committed=len(dep.committed(task_id)),
    )


def run(args: argparse.Namespace) -> int:
    def build(lan: Lan, root: Path) -> InstancesDeployment:
        dep = build_instances_deployment(lan, root, device_hosts=args.device_hosts)
        dep.coordinator_args += ["--pace-min-delay", str(args.pace_min_delay),
                                 "--pace-spread", str(args.pace_spread)]  # fmt: skip
        return dep

    def scenario(dep: InstancesDeployment) -> FailoverFigures:
        goal = args.device_hosts * args.devices_per_host
        spec = {**SPEC, "goal_count": goal, "min_reports": max(1, goal - 1)}
        return run_failover(dep, start_task(dep, devices_per_host=args.devices_per_host,
                                            spec=spec))  # fmt: skip

    done = run_on_lan("failover", build, scenario)
    if done is None:
        return 2
    figures, root = done
    return report_seconds(
        [(f"instance {figures.killed_instance} kill -9 -> next commit",
          "instance_kill_to_commit_s", figures.instance_kill_to_commit_s),
         ("NATS node kill -9 -> next commit", "nats_kill_to_commit_s",
          figures.nats_kill_to_commit_s)],
        f"(rounds after the kill run by instance {figures.taken_over_by}; rounds committed: "
        f"{figures.rounds_committed}; logs under {root})",
        as_json=args.json,
    )  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "failover",
        help="multi-host (netns, root): 2 instances on PostgreSQL, NATS cluster; kill -9 each",
    )
    add_lan_options(parser, pace_min_delay=1.0, pace_help="pace steering min delay (1 s)")
    parser.add_argument("--pace-spread", type=float, default=2.0, help="pace spread (2 s)")
    parser.set_defaults(run=run)
