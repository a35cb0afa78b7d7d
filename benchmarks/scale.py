"""``fedrt bench scale``: large SecAgg+ rounds, one ``fedrt simulate`` process per cohort size.

Each cell is a fresh ``fedrt simulate --devices D --per-round N --cohort-size C`` run (real
Mosquitto, the coordinator in the simulate process, the devices on shared event loops in
``--device-processes`` processes of their own: simulate's automatic choice unless given), so
its numbers include the devices' own work on the same cores. The table gives, per cohort
size: the device processes, rounds committed of those run, seconds per round (median and
worst, from the report), the cohorts each round ran in and how many made it into the sum,
the devices in the sum, and the peak RSS of the simulate process (the coordinator, and the
devices when they run in it). Timings on a shared machine are noisy: say which machine.

With ``--profile DIR`` each run is also profiled with cProfile, every thread on its own
(the coordinator's loop, each device hub); ``DIR/C.pstats`` holds them merged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedrt.errors import UsageError

TARGET_S = 60.0  # issue 17: 1,000 a round with SecAgg+ in cohorts, every round, <= 60 s
_W = 16  # columns of one figure a round ("1000/1000/1000" and a space)


def _sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--cohort-sizes must be integers, got {text!r}") from None
    if not values or any(v < 5 for v in values):
        raise UsageError("--cohort-sizes must be integers >= 5")
    return values


def _command(args: argparse.Namespace, cohort: int, report: Path) -> list[str]:
    cmd = [
        "-m", "fedrt", "simulate",
        "--devices", str(args.devices), "--per-round", str(args.per_round),
        "--rounds", str(args.rounds), "--model", args.model, "--dropout", str(args.dropout),
        "--seed", str(args.seed), "--cohort-size", str(cohort), "--broker", args.broker,
        "--partition", args.partition,
        "--data-dir", str(args.out / "data"), "--time-limit", str(args.time_limit),
        "--json", str(report),
    ]  # fmt: skip
    if args.stage_deadline is not None:
        cmd += ["--stage-deadline", str(args.stage_deadline)]
    if args.device_processes is not None:
        cmd += ["--device-processes", str(args.device_processes)]
    if args.profile is not None:
        prof = args.profile / f"{cohort}.pstats"
        return [sys.executable, "-m", "fedrt.benchmarks.thread_profile", str(prof), *cmd]
    return [sys.executable, *cmd]


def _run_one(args: argparse.Namespace, cohort: int) -> dict[str, Any]:
    report = args.out / f"scale-{cohort}.json"
    log = args.out / f"scale-{cohort}.log"
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(_command(args, cohort, report), stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {
        "cohort_size": cohort,
        "exit": proc.returncode,
        "wall_s": round(time.time() - started, 1),
        # ru_maxrss of the child (KiB on Linux): devices and coordinator together.
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "log": str(log),
    }
    if not report.is_file():
        row["rounds"] = []
        return row
    data = json.loads(report.read_text())
    row["device_processes"] = data["config"].get("device_processes")
    row["rounds"] = [
        {k: r.get(k) for k in ("round", "status", "seconds", "selected", "reported", "cohorts",
                               "cohorts_committed", "reason")}
        for r in data["rounds"]
    ]  # fmt: skip
    return row


def table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"fedrt bench scale: --devices {args.devices} --per-round {args.per_round} --model "
        f"{args.model} --dropout {args.dropout} --rounds {args.rounds}"
        + (f" --stage-deadline {args.stage_deadline}" if args.stage_deadline else "")
        + f"; target: every round commits in <= {TARGET_S:.0f} s",
        f"{'cohort':>7}{'dev procs':>10}{'committed':>10}{'s/round med':>12}{'max':>7}"
        f"{'cohorts':>{_W}}{'in sum':>{_W}}{'included':>{_W}}{'peak RSS MiB':>13}",
    ]
    for r in rows:
        rounds = r["rounds"]
        done = [x for x in rounds if x["status"] == "committed"]
        secs = [float(x["seconds"]) for x in rounds] or [float("nan")]
        cohorts = "/".join(str(x["cohorts"]) for x in rounds) or "-"
        in_sum = "/".join(str(x["cohorts_committed"]) for x in rounds) or "-"
        included = "/".join(str(x["reported"]) for x in rounds) or "-"
        lines.append(
            f"{r['cohort_size']:>7}{r.get('device_processes') or '-':>10}"
            f"{f'{len(done)}/{len(rounds)}':>10}{statistics.median(secs):>12.1f}"
            f"{max(secs):>7.1f}{cohorts:>{_W}}{in_sum:>{_W}}{included:>{_W}}"
            f"{r['peak_rss_mib']:>13.0f}"
        )
        if not rounds:
            lines.append(f"{'':>7}no report: exit {r['exit']}, see {r['log']}")
        for x in rounds:
            if x["status"] != "committed":
                lines.append(f"{'':>7}round {x['round']}: {x['status']}: {x['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    sizes = _sizes(args.cohort_sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows = []
    for cohort in sizes:
        print(f"cohort size {cohort}: running ...", flush=True)
        rows.append(_run_one(args, cohort))
        print("\n".join(table(args, rows[-1:]).splitlines()[2:]), flush=True)
    print(table(args, rows))
    (args.out / "scale.json").write_text(json.dumps(rows, indent=2))
    print(f"reports and logs: {args.out}")
    ok = all(r["rounds"] and all(x["status"] == "committed" for x in r["rounds"]) for r in rows)
    return 0 if ok else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scale", help="large SecAgg+ rounds in cohorts: fedrt simulate per cohort size"
    )
    parser.add_argument("--devices", type=int, default=1300)
    parser.add_argument("--per-round", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="zoo:mlp")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    # digits has ~1,350 training examples: a Dirichlet split over 1,300 devices leaves some
    # with none, so the default is an even split.
    parser.add_argument("--partition", default="iid")
    parser.add_argument(
        "--cohort-sizes", default="250", help="comma-separated; one simulate run each"
    )
    parser.add_argument(
        "--stage-deadline", type=float, default=None, help="SecAgg+ stage deadline (s)"
    )
    parser.add_argument("--broker", default="mosquitto")
    parser.add_argument(
        "--device-processes",
        type=int,
        default=None,
        help="processes the devices run in (default: simulate's choice; 1: with the coordinator)",
    )
    parser.add_argument("--time-limit", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=Path("fedrt-bench-scale"))
    parser.add_argument("--profile", type=Path, default=None, help="cProfile every thread")
    parser.set_defaults(run=run, default_log_level="WARNING")


__all__ = ["register", "run", "table"]
