"""``fedrt bench recovery``: seconds from a killed coordinator or a restarted broker to a commit.

A deployment on a LAN of network namespaces (``deployment``; needs root): Mosquitto over
mqtts, ``fedrt coordinator serve`` over HTTPS at its public URL, ``fedrt device run``
processes with the SDK's default timers on device hosts. After a first committed round the
coordinator is killed (-9) in the middle of a round and restarted on the same data dir; later
the broker is restarted in the middle of a round. Each time the scenario checks that no
committed version was lost and that every device takes part again, and measures the seconds
to the next committed round. Target (issue 16): at most 60 s each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fedrt.benchmarks.deployment import DEFAULT_MODEL_DIR, Deployment, build_deployment, until
from fedrt.benchmarks.lan import Lan, netns_unavailable_reason

__all__ = [
    "SPEC",
    "RecoveryFigures",
    "recovered_after",
    "register",
    "report_seconds",
    "round_in_progress",
    "run_on_lan",
    "run_scenario",
    "start_task",
]

# Every device wanted in every round, SecAgg+ on: a round cannot commit without the fleet.
SPEC: dict[str, Any] = {
    "goal_count": 4,
    "over_selection": 1.0,
    "min_reports": 3,
    "eval_every": 0,
    "secagg": True,
    # The default check-in window: longer than the pace spread (30 s) that devices come back over.
    "checkin_deadline_s": 60.0,
    "training_deadline_s": 30.0,
    "secagg_stage_deadline_s": 15.0,
    "max_rounds": 10_000,
}
TARGET_S = 60.0
# How long the scenario waits for each step before it calls the step failed.
STEP_BOUND_S = 180.0


@dataclass(frozen=True, slots=True)
class RecoveryFigures:
    coordinator_kill_to_commit_s: float
    broker_restart_to_commit_s: float
    rounds_committed: int


def start_task(dep: Deployment, *, devices_per_host: int, spec: dict[str, Any]) -> str:
    """Broker, coordinator, a task on the fixture model, and enrolled devices; task started."""
    dep.start_broker()
    dep.start_coordinator()
    body = {"name": "deploy", "model_dir": str(DEFAULT_MODEL_DIR), "spec": spec}
    task_id: str = dep.api("POST", "/v1/tasks", body)["task_id"]
    seed = 0
    for host in dep.device_hosts:
        for _ in range(devices_per_host):
            dep.add_device(host, task_id, seed)
            seed += 1
    dep.api("POST", f"/v1/tasks/{task_id}/start", {})
    return task_id


def round_in_progress(dep: Deployment, task_id: str, bound: float) -> dict[str, Any]:
    """Wait for a round after the last committed one to be past its check-in (devices are
    training or in SecAgg+: the moment a kill costs the most)."""
    last = max(r["round_no"] for r in dep.committed(task_id))

    def busy() -> dict[str, Any] | None:
        rounds = dep.rounds(task_id)
        r = rounds[-1] if rounds else None
        if r is None or r["status"] != "running" or r["round_no"] <= last:
            return None
        return r if r["stage"] not in ("created", "check_in") else None

    found: dict[str, Any] = until(busy, bound, "a round in progress", every=0.3)
    return found


def recovered_after(dep: Deployment, task_id: str, victim: dict[str, Any], what: str,
               since: float, bound: float) -> float:  # fmt: skip
    """Seconds from ``since`` until ``victim`` or a later round commits (then every device
    must take part again, and no committed round may have changed)."""
    taken = {d.name: d.rounds_completed() for d in dep.devices}
    before = {r["round_no"]: r["result_sha256"] for r in dep.committed(task_id)}
    # The round in flight counts when it survives the event and commits (it was running when
    # the event happened, so it committed after it); otherwise a later one.
    until(
        lambda: [r for r in dep.committed(task_id) if r["round_no"] >= victim["round_no"]],
        bound,
        f"a round committed after {what}",
        every=0.5,
    )
    seconds = time.monotonic() - since
    now = {r["round_no"]: r for r in dep.rounds(task_id)}
    lost = [no for no, sha in before.items() if now[no]["result_sha256"] != sha]
    if lost or any(now[no]["status"] != "committed" for no in before):
        raise AssertionError(f"committed rounds changed after {what}: {lost}")
    until(
        lambda: all(d.rounds_completed() > taken[d.name] for d in dep.devices),
        bound,
        f"every device taking part again after {what}",
    )
    return seconds


def run_scenario(dep: Deployment, task_id: str, bound: float = STEP_BOUND_S) -> RecoveryFigures:
    """Kill -9 the coordinator mid-round and restart it; then restart the broker mid-round."""
    until(lambda: dep.committed(task_id), bound, "a first committed round", every=1.0)
    victim = round_in_progress(dep, task_id, bound)
    dep.kill_coordinator()
    killed = time.monotonic()
    dep.start_coordinator()
    coordinator_s = recovered_after(dep, task_id, victim, "the coordinator's kill", killed, bound)
    victim = round_in_progress(dep, task_id, bound)
    dep.stop_broker()
    restarted = time.monotonic()
    dep.start_broker()
    broker_s = recovered_after(dep, task_id, victim, "the broker's restart", restarted, bound)
    return RecoveryFigures(
        coordinator_kill_to_commit_s=coordinator_s,
        broker_restart_to_commit_s=broker_s,
        rounds_committed=len(dep.committed(task_id)),
    )


D = TypeVar("D", bound=Deployment)
F = TypeVar("F")


def run_on_lan(
    bench: str, build: Callable[[Lan, Path], D], scenario: Callable[[D], F]
) -> tuple[F, Path] | None:
    """``scenario`` on a deployment ``build`` makes on a fresh LAN; everything stopped and
    the namespaces deleted after it. None (said why) where namespaces cannot be made."""
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"fedrt bench {bench}: {reason}")
        return None
    root = Path(tempfile.mkdtemp(prefix=f"fedrt-{bench}-"))
    with Lan() as lan:
        dep = build(lan, root)
        try:
            return scenario(dep), root
        except AssertionError:
            print(dep.logs())
            raise
        finally:
            dep.stop_all()


def report_seconds(rows: Sequence[tuple[str, str, float]], note: str, *, as_json: bool) -> int:
    """A table of seconds per event against the target, a note, and (``--json``) one line.

    Each row is (event, JSON key, seconds).
    """
    print(f"{'event':<36} {'seconds':>8} {'target':>7}  met")
    for name, _key, seconds in rows:
        met = "yes" if seconds <= TARGET_S else "NO"
        print(f"{name:<36} {seconds:8.1f} {TARGET_S:7.0f}  {met}")
    print(note)
    if as_json:
        print(json.dumps({**{key: seconds for _name, key, seconds in rows}, "target_s": TARGET_S}))
    return 0


def add_lan_options(parser: argparse.ArgumentParser, *, pace_min_delay: float | None,
                    pace_help: str) -> None:  # fmt: skip
    """The options every multi-host recovery scenario takes."""
    parser.add_argument("--device-hosts", type=int, default=2, help="device hosts (default 2)")
    parser.add_argument("--devices-per-host", type=int, default=2, help="devices on each (2)")
    parser.add_argument("--pace-min-delay", type=float, default=pace_min_delay, help=pace_help)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")


def run(args: argparse.Namespace) -> int:
    def build(lan: Lan, root: Path) -> Deployment:
        dep = build_deployment(lan, root, device_hosts=args.device_hosts)
        if args.pace_min_delay is not None:
            dep.coordinator_args += ["--pace-min-delay", str(args.pace_min_delay)]
        return dep

    def scenario(dep: Deployment) -> RecoveryFigures:
        task_id = start_task(dep, devices_per_host=args.devices_per_host,
                             spec={**SPEC, "goal_count": args.device_hosts *
                                   args.devices_per_host})  # fmt: skip
        return run_scenario(dep, task_id)

    done = run_on_lan("recovery", build, scenario)
    if done is None:
        return 2
    figures, root = done
    return report_seconds(
        [("coordinator kill -9 -> next commit", "coordinator_kill_to_commit_s",
          figures.coordinator_kill_to_commit_s),
         ("broker restart -> next commit", "broker_restart_to_commit_s",
          figures.broker_restart_to_commit_s)],
        f"(rounds committed in the run: {figures.rounds_committed}; logs under {root})",
        as_json=args.json,
    )  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recovery", help="multi-host (netns, root): recovery from coordinator kill, broker restart"
    )
    add_lan_options(
        parser, pace_min_delay=None, pace_help="pace steering min delay (the coordinator's default)"
    )
    parser.set_defaults(run=run)
