"""``fedrt simulate`` and ``fedrt demo``."""

from __future__ import annotations

import argparse
import contextlib
import threading
from pathlib import Path
from typing import Any

from fedrt.errors import UsageError

DEMO_DEFAULTS: dict[str, Any] = {
    "devices": 20,
    "per_round": 10,
    "rounds": 15,
    "model": "zoo:cnn",
    "partition": "dirichlet:0.5",
    "bits": 8,
    "dropout": 0.1,
}


def _add_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    from fedrt.simulation.runner import SCALE_DEVICES_PER_THREAD, SCALE_MODE_FROM, SimConfig

    base = SimConfig()
    d = {**{f: getattr(base, f) for f in base.__dataclass_fields__}, **defaults}
    parser.add_argument("--devices", type=int, default=d["devices"])
    parser.add_argument("--per-round", type=int, default=d["per_round"])
    parser.add_argument("--rounds", type=int, default=d["rounds"])
    parser.add_argument("--model", default=d["model"], help="zoo:cnn, zoo:mlp or an export DIR")
    parser.add_argument("--dataset", default=d["dataset"], choices=["digits"])
    parser.add_argument(
        "--partition", default=d["partition"], help="iid, dirichlet:ALPHA or shards:S"
    )
    parser.add_argument("--strategy", default=d["strategy"])
    parser.add_argument("--server-lr", type=float, default=d["server_lr"])
    parser.add_argument("--bits", type=int, default=d["bits"])
    parser.add_argument("--download-bits", type=int, default=d["download_bits"],
                        help="width of the downlink's version deltas (0: exact)")  # fmt: skip
    parser.add_argument("--secagg", action=argparse.BooleanOptionalAction, default=d["secagg"])
    parser.add_argument(
        "--dropout",
        type=float,
        default=d["dropout"],
        help="probability that a selected device vanishes mid-round",
    )
    parser.add_argument(
        "--availability",
        default=d["availability"],
        help="always or diurnal (phone-like days, compressed clock)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=d["speed"],
        help="simulated seconds per real second for --availability",
    )
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument(
        "--speed-spread",
        type=float,
        default=d["speed_spread"],
        metavar="X",
        help="each device trains a fixed multiple slower, log-uniform over [1, X] (seeded)",
    )
    parser.add_argument(
        "--train-seconds",
        type=float,
        default=d["train_seconds"],
        metavar="S",
        help="a device's local training takes at least S x its --speed-spread multiple "
        "(a phone-like base time; 0: only the real steps)",
    )
    parser.add_argument(
        "--target-accuracy",
        type=float,
        default=d["target_accuracy"],
        metavar="A",
        help="report seconds_to_target and rounds_to_target: the first version at A or better",
    )
    parser.add_argument(
        "--stop-at-target",
        action="store_true",
        default=d["stop_at_target"],
        help="end the run once --target-accuracy is reached",
    )
    parser.add_argument("--local-epochs", type=int, default=d["local_epochs"])
    parser.add_argument("--lr", type=float, default=d["learning_rate"])
    parser.add_argument("--batch", type=int, default=d["batch_size"])
    parser.add_argument("--clip", type=float, default=d["clip_norm"])
    parser.add_argument(
        "--broker",
        default=d["broker"],
        help="auto (Mosquitto if installed), embedded, nats-cluster (3 NATS nodes) or mqtt://…",
    )
    parser.add_argument(
        "--coordinators",
        type=int,
        default=d["coordinators"],
        metavar="N",
        help="coordinator instances, as processes of their own when N > 1 (needs --store)",
    )
    parser.add_argument(
        "--store",
        default=d["store"],
        metavar="URL",
        help="postgresql://... for the coordinators' state (default: SQLite in the run dir)",
    )
    parser.add_argument(
        "--chaos",
        action="append",
        default=[],
        metavar="EVENT@ROUND",
        help="inject a fault during ROUND: kill-coordinator (the round's owner; --coordinators"
        " > 1), kill-broker-node (nats-cluster) or restart-broker",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        default=d["baseline"],
        help="also train the model centrally on the pooled data",
    )
    parser.add_argument("--data-dir", type=Path, default=d["data_dir"])
    parser.add_argument(
        "--http",
        default=f"{d['http_host']}:{d['http_port']}",
        help="coordinator HTTP HOST:PORT (port 0: any free one)",
    )
    parser.add_argument("--time-limit", type=float, default=d["time_limit_s"])
    parser.add_argument(
        "--devices-per-thread",
        type=int,
        default=d["devices_per_thread"],
        help="0: a thread per device; N: one event loop serves N devices (default: "
        f"0 below {SCALE_MODE_FROM} devices, else {SCALE_DEVICES_PER_THREAD})",
    )
    parser.add_argument(
        "--cohort-size",
        type=int,
        default=d["cohort_size"],
        help="most devices in one SecAgg+ instance; larger rounds run in cohorts "
        "(default: the task default, see docs/secagg.md)",
    )
    parser.add_argument(
        "--stage-deadline",
        type=float,
        default=d["stage_s"],
        help="seconds for each SecAgg+ stage (default: 5 + 0.025 x --per-round, as the "
        "simulated devices share this machine's cores); a missed one is named in the reason",
    )
    rounds = parser.add_argument_group("asynchronous rounds (FedBuff; docs/async.md)")
    rounds.add_argument(
        "--mode",
        default=d["mode"],
        choices=["sync", "async"],
        help="async: commit every --buffer-size updates; --rounds then counts commits",
    )
    rounds.add_argument("--buffer-size", type=int, default=d["buffer_size"], metavar="K")
    rounds.add_argument(
        "--max-staleness",
        type=int,
        default=d["max_staleness"],
        metavar="S",
        help="refuse an update trained from a version more than S commits old",
    )
    rounds.add_argument(
        "--max-concurrent",
        type=int,
        default=d["max_concurrent"],
        metavar="N",
        help="devices training at once (default: 3 x --buffer-size, at most --devices)",
    )
    fair = parser.add_argument_group("federated evaluation and fairness (docs/evaluation.md)")
    fair.add_argument(
        "--eval-every",
        type=int,
        default=d["eval_every"],
        metavar="N",
        help="a federated evaluation round after every N training rounds (0: none)",
    )
    fair.add_argument(
        "--holdout",
        type=float,
        default=d["holdout"],
        metavar="SHARE",
        help="share of each device's examples held out (never trained on) for evaluation",
    )
    fair.add_argument(
        "--q", type=float, dest="qfedavg_q", default=d["qfedavg_q"], help="q of --strategy qfedavg"
    )
    parser.add_argument(
        "--fedprox-mu",
        type=float,
        default=d["fedprox_mu"],
        help="FedProx's proximal mu (a zoo model is exported with --fedprox)",
    )
    mine = parser.add_argument_group("personalization (issue 18)")
    mine.add_argument(
        "--personal-layers",
        type=int,
        default=d["personal_layers"],
        metavar="N",
        help="the model's last N layers stay on the devices (FedPer; needs --holdout)",
    )
    mine.add_argument(
        "--finetune-steps",
        type=int,
        default=d["finetune_steps"],
        metavar="K",
        help="K local SGD steps before a device evaluates (needs --holdout)",
    )
    dp = parser.add_argument_group("differential privacy")
    dp.add_argument("--dp", default=d["dp"], choices=["none", "central", "distributed"])
    noise = dp.add_mutually_exclusive_group()
    noise.add_argument("--noise-multiplier", type=float, default=d["noise_multiplier"])
    noise.add_argument(
        "--target-epsilon", type=float, default=d["target_epsilon"], help="over all --rounds"
    )
    dp.add_argument("--delta", type=float, default=d["delta"])
    dp.add_argument(
        "--adaptive-clip",
        type=float,
        metavar="QUANTILE",
        default=d["adaptive_clip"],
        help="track this quantile of update norms (--clip is the starting bound)",
    )
    dp.add_argument(
        "--dp-budget", type=float, default=d["dp_budget"], help="stop before epsilon passes it"
    )
    parser.add_argument(
        "--inbox-qos",
        type=int,
        choices=[0, 1],
        default=d["inbox_qos"],
        help="the QoS devices read their inbox at (broker.device_inbox_qos; 0: no JetStream"
        " consumer per device on a NATS cluster)",
    )
    parser.add_argument(
        "--device-processes",
        type=int,
        default=d["device_processes"],
        metavar="N",
        help="run the devices in N processes of their own (1: in this process; default: "
        "from 500 devices a process per core, at most 4)",
    )
    parser.add_argument(
        "--pace-rate",
        type=float,
        default=d["pace_rate"],
        help="check-ins per second at most from devices the coordinator turns away (pace "
        "steering; lower it for large fleets)",
    )
    parser.add_argument("--json", type=Path, dest="json_report", help="write the report here")


def _config(args: argparse.Namespace) -> Any:
    from fedrt.simulation.runner import SimConfig

    host, _, port = str(args.http).rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--http must be HOST:PORT, got {args.http!r}")
    return SimConfig(
        devices=args.devices,
        per_round=args.per_round,
        rounds=args.rounds,
        model=args.model,
        dataset=args.dataset,
        partition=args.partition,
        strategy=args.strategy,
        server_lr=args.server_lr,
        bits=args.bits,
        download_bits=args.download_bits,
        secagg=args.secagg,
        dropout=args.dropout,
        availability=args.availability,
        speed=args.speed,
        seed=args.seed,
        speed_spread=args.speed_spread,
        train_seconds=args.train_seconds,
        target_accuracy=args.target_accuracy,
        stop_at_target=args.stop_at_target,
        mode=args.mode,
        buffer_size=args.buffer_size,
        max_staleness=args.max_staleness,
        max_concurrent=args.max_concurrent,
        local_epochs=args.local_epochs,
        learning_rate=args.lr,
        batch_size=args.batch,
        clip_norm=args.clip,
        broker=args.broker,
        chaos=tuple(args.chaos),
        coordinators=args.coordinators,
        store=args.store,
        baseline=args.baseline,
        data_dir=args.data_dir,
        http_host=host,
        http_port=int(port),
        time_limit_s=args.time_limit,
        dp=args.dp,
        noise_multiplier=args.noise_multiplier,
        target_epsilon=args.target_epsilon,
        delta=args.delta,
        adaptive_clip=args.adaptive_clip,
        dp_budget=args.dp_budget,
        devices_per_thread=args.devices_per_thread,
        cohort_size=args.cohort_size,
        stage_s=args.stage_deadline,
        eval_every=args.eval_every,
        holdout=args.holdout,
        qfedavg_q=args.qfedavg_q,
        fedprox_mu=args.fedprox_mu,
        personal_layers=args.personal_layers,
        finetune_steps=args.finetune_steps,
        device_processes=args.device_processes,
        inbox_qos=args.inbox_qos,
        pace_rate=args.pace_rate,
    )


def _summary(report: Any) -> str:
    committed = sum(r.status == "committed" for r in report.rounds)
    final = f"{report.final_accuracy:.3f}" if report.final_accuracy is not None else "-"
    text = (
        f"done: {committed}/{len(report.rounds)} rounds committed, held-out accuracy "
        f"{report.initial_accuracy:.3f} -> {final} in {report.wall_seconds:.0f} s"
    )
    if report.baseline_accuracy is not None:
        text += f" (centralized baseline {report.baseline_accuracy:.3f})"
    target = report.config.get("target_accuracy")
    if target is not None:
        text += (
            f"; accuracy {target} after {report.seconds_to_target:.0f} s (round "
            f"{report.rounds_to_target})"
            if report.rounds_to_target is not None
            else f"; accuracy {target} never reached"
        )
    return text


def run_simulate(args: argparse.Namespace) -> int:
    from fedrt.simulation.runner import Simulation, write_report

    report = Simulation(_config(args)).run()
    print(_summary(report), flush=True)
    if args.json_report is not None:
        write_report(report, args.json_report)
        print(f"report: {args.json_report}")
    return 0 if report.rounds and report.final_accuracy is not None else 1


def run_demo(args: argparse.Namespace) -> int:
    from fedrt.simulation.runner import Simulation, write_report

    def keep_serving(url: str) -> None:
        token = f"{args.data_dir}/run-*/coordinator/admin-token"
        print(f"\ndashboard: {url}/  (admin token in {token}); Ctrl-C to stop", flush=True)
        if not args.no_wait:
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()

    sim = Simulation(_config(args))
    print("the dashboard URL is printed below", flush=True)
    report = sim.run(keep_serving=keep_serving)
    print(_summary(report), flush=True)
    if args.json_report is not None:
        write_report(report, args.json_report)
    return 0 if report.final_accuracy is not None else 1


def register_simulate(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="run broker, coordinator and N real devices on this machine"
    )
    _add_options(parser, {})
    parser.set_defaults(run=run_simulate, default_log_level="WARNING")


def register_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="a few-minute federated run with the dashboard kept up until Ctrl-C"
    )
    _add_options(parser, DEMO_DEFAULTS)
    parser.add_argument("--no-wait", action="store_true", help="exit when the run ends")
    parser.set_defaults(run=run_demo, default_log_level="WARNING")
