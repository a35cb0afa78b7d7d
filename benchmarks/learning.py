"""``fedrt bench learning``: learning on skewed fleets, one ``fedrt simulate`` run per cell.

Every cell trains the same model on the same data set with the same seed, SecAgg+ on, so the
cells differ only in the algorithm (issue 18's benchmark):

- at ``dirichlet:0.1`` (labels skewed per device): FedAvg, FedProx, FedAdam and SCAFFOLD, each
  with the rounds it takes to reach ``--target`` held-out accuracy (the coordinator's held-out
  quarter of the data set) and its accuracy halfway and at the end (rounds 30 and 60 of 60);
- at ``shards:2`` (two labels per device): the global model, FedPer (the last
  ``--personal-layers`` layers stay on the devices) and local fine-tuning (``--finetune-steps``
  steps before evaluating), each with the mean and worst-decile accuracy of the devices on
  their own held-out examples (``--holdout``), from the federated evaluation round after the
  last training round (``--eval-every``).

A cell whose ``fedrt simulate`` option is missing from this build (a strategy it does not
know, a flag it lacks) is listed as "n/a (not available)" and not run. The reports are kept
in ``--out``; the table and ``learning.json`` are written there too. Beside the dirichlet
cells, the same algorithms in plain numpy on the same partition (``learning_reference``)
show whether a missed target is the algorithm's or fedrt's (``--no-reference``: skip it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrt.errors import UsageError

__all__ = [
    "CELLS", "Cell", "available", "cell_command", "cell_row", "eval_every", "register", "run",
    "tables",
]  # fmt: skip

DIRICHLET = "dirichlet:0.1"
SHARDS = "shards:2"
NOT_AVAILABLE = "n/a (not available)"
# Evaluation options every shards cell needs (federated evaluation on held-out examples).
_EVAL = ("--eval-every", "--holdout")


@dataclass(frozen=True, slots=True)
class Cell:
    """One ``fedrt simulate`` run of the benchmark."""

    name: str
    partition: str
    label: str
    # simulate flags the cell needs beyond the basics, and a strategy it must know.
    flags: tuple[str, ...] = ()
    strategy: str = "fedavg"


CELLS: tuple[Cell, ...] = (
    Cell("fedavg", DIRICHLET, "FedAvg"),
    Cell("fedprox", DIRICHLET, "FedProx", flags=("--fedprox-mu",)),
    Cell("fedadam", DIRICHLET, "FedAdam", strategy="fedadam"),
    Cell("scaffold", DIRICHLET, "SCAFFOLD", strategy="scaffold"),
    Cell("global", SHARDS, "global model", flags=_EVAL),
    Cell("fedper", SHARDS, "FedPer", flags=(*_EVAL, "--personal-layers")),
    Cell("finetune", SHARDS, "local fine-tuning", flags=(*_EVAL, "--finetune-steps")),
)
_BY_NAME = {c.name: c for c in CELLS}


def simulate_options() -> tuple[frozenset[str], frozenset[str]]:
    """The option strings ``fedrt simulate`` takes and the strategies a task accepts."""
    from fedrt.coordinator.tasks import STRATEGIES
    from fedrt.simulation.cli import register_simulate

    root = argparse.ArgumentParser()
    register_simulate(root.add_subparsers())
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["simulate"]
    flags = {s for action in parser._actions for s in action.option_strings}
    return frozenset(flags), frozenset(STRATEGIES)


def available(cell: Cell, flags: Iterable[str], strategies: Iterable[str]) -> bool:
    return set(cell.flags) <= set(flags) and cell.strategy in set(strategies)


def _cells(text: str) -> list[Cell]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown or not names:
        raise UsageError(f"--cells: names from {', '.join(_BY_NAME)}, got {text!r}")
    return [_BY_NAME[n] for n in names]


def eval_every(rounds: int, most: int) -> int:
    """The largest divisor of ``rounds`` up to ``most``: an evaluation round then follows the
    last training round (simulate evaluates after every N training rounds)."""
    return max(d for d in range(1, max(1, min(most, rounds)) + 1) if rounds % d == 0)


def cell_command(args: argparse.Namespace, cell: Cell, report: Path) -> list[str]:
    """The ``fedrt simulate`` command line of one cell."""
    cmd = [
        sys.executable, "-m", "fedrt", "simulate",
        "--devices", str(args.devices), "--per-round", str(args.per_round),
        "--rounds", str(args.rounds), "--model", args.model, "--partition", cell.partition,
        "--strategy", cell.strategy, "--seed", str(args.seed), "--secagg",
        "--data-dir", str(args.out / "data"), "--time-limit", str(args.time_limit),
        "--json", str(report),
    ]  # fmt: skip
    if args.broker:
        cmd += ["--broker", args.broker]
    for flag, value in (("--local-epochs", args.local_epochs), ("--lr", args.lr)):
        if value is not None:
            cmd += [flag, str(value)]
    if cell.strategy == "fedadam":
        cmd += ["--server-lr", str(args.fedadam_lr)]
    if "--fedprox-mu" in cell.flags:
        cmd += ["--fedprox-mu", str(args.fedprox_mu)]
    if cell.partition == SHARDS:
        every = eval_every(args.rounds, args.eval_every)
        cmd += ["--eval-every", str(every), "--holdout", str(args.holdout)]
    if "--personal-layers" in cell.flags:
        cmd += ["--personal-layers", str(args.personal_layers)]
    if "--finetune-steps" in cell.flags:
        cmd += ["--finetune-steps", str(args.finetune_steps)]
    return cmd


def _at(rows: Sequence[Mapping[str, Any]], key: str, round_no: int) -> float | None:
    """The latest ``key`` of a row at or before ``round_no``."""
    values = [r[key] for r in rows if r["round"] <= round_no and r.get(key) is not None]
    return float(values[-1]) if values else None


def cell_row(
    cell: Cell, report: Mapping[str, Any] | None, *, rounds: int, target: float
) -> dict[str, Any]:
    """A cell's figures from its simulate report (None: not run)."""
    row: dict[str, Any] = {"cell": cell.name, "method": cell.label, "partition": cell.partition}
    if report is None:
        return row
    rows: list[Mapping[str, Any]] = list(report.get("rounds", []))
    # The dirichlet cells run no evaluation rounds: round numbers count training rounds.
    last = max((r["round"] for r in rows), default=rounds)
    reached = [r["round"] for r in rows if (r.get("accuracy") or 0.0) >= target]
    row |= {
        "committed": sum(r.get("status") == "committed" for r in rows),
        "rounds": len(rows),
        "rounds_to_target": reached[0] if reached else None,
        "accuracy_mid": _at(rows, "accuracy", rounds // 2),
        "accuracy_final": _at(rows, "accuracy", last),
        "final_accuracy": report.get("final_accuracy"),
    }
    if cell.partition == SHARDS:
        row |= _device_figures(cell, report, rows, last)
    return row


def _device_figures(
    cell: Cell, report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], last: int
) -> dict[str, Any]:
    """Mean and worst-decile device accuracy of a shards cell.

    With personalization, simulate evaluates every device's global and personalized model on
    its held-out share after the last round (``report["personalization"]``, the mean over
    devices); otherwise the last federated evaluation round gives them (its mean weighs
    devices by their held-out examples: ``mean_weighted`` says so).
    """
    personal = report.get("personalization") or {}
    if personal.get("personalized"):
        mine = personal["personalized"] if cell.name != "global" else personal["global"]
        return {
            "mean_device_accuracy": mine.get("mean_device_accuracy"),
            "worst_decile_accuracy": mine.get("worst_decile_accuracy"),
            "global_mean_device_accuracy": personal["global"].get("mean_device_accuracy"),
            "global_worst_decile_accuracy": personal["global"].get("worst_decile_accuracy"),
            "mean_weighted": False,
        }
    mean = "personalized_accuracy" if cell.name != "global" else "federated_accuracy"
    return {
        "mean_device_accuracy": _at(rows, mean, last),
        "worst_decile_accuracy": _at(rows, "worst_decile_accuracy", last)
        if cell.name == "global"
        else None,
        "mean_weighted": True,
    }


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def tables(rows: Sequence[Mapping[str, Any]], *, rounds: int, target: float) -> str:
    """The two markdown tables: the dirichlet cells, then the shards cells."""
    mid = rounds // 2
    out = [
        f"{DIRICHLET}: held-out accuracy (coordinator's held-out set)",
        "",
        f"| method | rounds to {target:.2f} | acc @{mid} | acc @{rounds} | committed | s |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["partition"] == DIRICHLET):
        if r.get("status") != "ok":
            out.append(f"| {r['method']} | {r.get('status', NOT_AVAILABLE)} | | | | |")
            continue
        to_target = r["rounds_to_target"] or f"> {r['rounds']}"
        out.append(
            f"| {r['method']} | {to_target} | {_f(r['accuracy_mid'])} | "
            f"{_f(r['accuracy_final'])} | {r['committed']}/{r['rounds']} | {_f(r['seconds'], 0)} |"
        )
    out += [
        "",
        f"{SHARDS}: devices' accuracy on their own held-out examples (last evaluation round)",
        "",
        "| method | mean device acc | worst-decile acc | its run's global model | committed | s |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["partition"] == SHARDS):
        if r.get("status") != "ok":
            out.append(f"| {r['method']} | {r.get('status', NOT_AVAILABLE)} | | | | |")
            continue
        out.append(
            f"| {r['method']} | {_f(r['mean_device_accuracy'])}{' (w)' * r['mean_weighted']} | "
            f"{_f(r['worst_decile_accuracy'])} | {_global(r)} | {r['committed']}/{r['rounds']} | "
            f"{_f(r['seconds'], 0)} |"
        )
    out += [
        "",
        "(w): weighted by each device's held-out examples (federated_accuracy). Its run's global",
        "model: mean / worst decile of the same devices with the run's global model (for local",
        "fine-tuning that is the global model of plain FedAvg, averaged over devices).",
    ]
    return "\n".join([*out, "", *targets(rows)])


def _global(row: Mapping[str, Any]) -> str:
    mean, worst = row.get("global_mean_device_accuracy"), row.get("global_worst_decile_accuracy")
    return "-" if mean is None else f"{_f(mean)} / {_f(worst)}"


def targets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The issue's two targets, met or not, where both cells ran."""
    by = {r["cell"]: r for r in rows if r.get("status") == "ok"}
    lines = []
    if "fedavg" in by and "scaffold" in by:
        avg, sc = by["fedavg"]["rounds_to_target"], by["scaffold"]["rounds_to_target"]
        met = sc is not None and (avg is None or sc <= 2 * avg / 3)
        never = f"> {by['fedavg']['rounds']}"
        lines.append(f"target SCAFFOLD <= 2/3 of FedAvg's rounds: {'met' if met else 'not met'} "
                     f"({sc or never} vs {avg or never})")  # fmt: skip
    if "global" in by and "fedper" in by:
        glob, per = by["global"]["mean_device_accuracy"], by["fedper"]["mean_device_accuracy"]
        # Devices counted alike on both sides: the fine-tuning run's global model is plain
        # FedAvg's, evaluated per device (the global cell's own mean weighs by examples).
        tuned = by.get("finetune", {}).get("global_mean_device_accuracy")
        if by["global"].get("mean_weighted") and tuned is not None:
            glob = tuned
        verdict = (
            "unknown"
            if glob is None or per is None
            else "met"
            if per >= glob + 0.05
            else ("not met")
        )
        lines.append(f"target FedPer mean >= global + 0.05: {verdict} ({_f(per)} vs {_f(glob)})")
    return lines


def _run_cell(args: argparse.Namespace, cell: Cell) -> dict[str, Any]:
    report_path = args.out / f"{cell.name}.json"
    report_path.unlink(missing_ok=True)
    cmd = cell_command(args, cell, report_path)
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.time()
    # In --out: a folder named fedrt in the caller's folder would shadow the package.
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=args.out)
    seconds = round(time.time() - start, 1)
    if not report_path.is_file():
        print(done.stdout[-2000:] + done.stderr[-2000:], file=sys.stderr)
        row = cell_row(cell, None, rounds=args.rounds, target=args.target)
        return row | {"status": f"failed (exit {done.returncode})", "seconds": seconds,
                      "command": cmd[2:]}  # fmt: skip
    report = json.loads(report_path.read_text())
    row = cell_row(cell, report, rounds=args.rounds, target=args.target)
    return row | {"status": "ok", "seconds": seconds, "command": cmd[2:]}


def run(args: argparse.Namespace) -> int:
    cells = _cells(args.cells)
    if args.devices < 2 or not 2 <= args.per_round <= args.devices or args.rounds < 1:
        raise UsageError("need --devices >= --per-round >= 2 (SecAgg+) and --rounds >= 1")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    flags, strategies = simulate_options()
    rows = []
    for cell in cells:
        if not available(cell, flags, strategies):
            row = cell_row(cell, None, rounds=args.rounds, target=args.target)
            rows.append(row | {"status": NOT_AVAILABLE})
            print(f"{cell.name}: {NOT_AVAILABLE}", file=sys.stderr, flush=True)
            continue
        rows.append(_run_cell(args, cell))
        print(f"{cell.name}: {rows[-1]['status']} in {rows[-1]['seconds']} s", file=sys.stderr)
        # What has run so far survives a run cut short (each cell takes minutes).
        partial = {"config": _config(args), "cells": rows, "partial": True}
        (args.out / "learning.json").write_text(json.dumps(partial, indent=2))
    document: dict[str, Any] = {"config": _config(args), "cells": rows}
    if args.reference:
        document["reference"] = _reference(
            args, [c.name for c in cells if c.partition == DIRICHLET]
        )
    (args.out / "learning.json").write_text(json.dumps(document, indent=2))
    text = tables(rows, rounds=args.rounds, target=args.target)
    if document.get("reference"):
        text += "\n\n" + reference_table(
            document["reference"], rounds=args.rounds, target=args.target
        )
    (args.out / "table.md").write_text(text + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"digits, {args.model}, {args.devices} devices, {args.per_round} per round, "
              f"{args.rounds} rounds, SecAgg+ on, seed {args.seed}\n")  # fmt: skip
        print(text)
    return 0


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
            if k not in ("run", "json")}  # fmt: skip


def _reference(args: argparse.Namespace, algorithms: list[str]) -> list[dict[str, Any]]:
    """The dirichlet cells' algorithms in plain numpy on the same partition (none: [])."""
    if not algorithms:
        return []
    from fedrt.benchmarks.learning_reference import reference_rows
    from fedrt.simulation.sim_config import SimConfig

    options = {"local_epochs": args.local_epochs, "learning_rate": args.lr}
    cfg = SimConfig(devices=args.devices, per_round=args.per_round, rounds=args.rounds,
                    partition=DIRICHLET, seed=args.seed,
                    **{k: v for k, v in options.items() if v is not None})  # fmt: skip
    return reference_rows(
        algorithms, cfg, target=args.target, mu=args.fedprox_mu, adam_lr=args.fedadam_lr
    )


def reference_table(rows: Sequence[Mapping[str, Any]], *, rounds: int, target: float) -> str:
    lines = [
        f"{DIRICHLET}, plain numpy reference (softmax regression, same partition, no SecAgg+)",
        "",
        f"| algorithm | rounds to {target:.2f} | acc @{rounds // 2} | acc @{rounds} |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['algorithm']} | {r['rounds_to_target'] or f'> {rounds}'} | "
            f"{_f(r['accuracy_mid'])} | {_f(r['accuracy_final'])} |"
        )
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "learning", help="skewed fleets: FedAvg/FedProx/FedAdam/SCAFFOLD, FedPer, fine-tuning"
    )
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=60, help="training rounds per cell")
    parser.add_argument("--model", default="zoo:cnn")
    parser.add_argument("--cells", default=",".join(_BY_NAME), help="a subset, comma-separated")
    parser.add_argument("--target", type=float, default=0.9, help="held-out accuracy to reach")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local-epochs", type=int, default=None, help="simulate's default")
    parser.add_argument("--lr", type=float, default=None, help="simulate's default")
    parser.add_argument("--fedprox-mu", type=float, default=0.01)
    parser.add_argument("--fedadam-lr", type=float, default=0.01, help="server learning rate")
    parser.add_argument("--eval-every", type=int, default=10, help="shards cells")
    parser.add_argument("--holdout", type=float, default=0.2, help="shards cells")
    parser.add_argument("--personal-layers", type=int, default=1, help="FedPer: the last N")
    parser.add_argument("--finetune-steps", type=int, default=10)
    parser.add_argument("--broker", default="", help="simulate's --broker (default: auto)")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds per cell")
    parser.add_argument("--out", type=Path, default=Path("fedrt-learning"))
    parser.add_argument("--json", action="store_true", help="print the JSON, not the tables")
    parser.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the dirichlet algorithms in plain numpy (benchmarks/learning_reference.py)",
    )
    parser.set_defaults(run=run, default_log_level="WARNING")
