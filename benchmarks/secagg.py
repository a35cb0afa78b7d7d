"""``fedrt bench secagg``: one SecAgg+ round of the real state machines, timed per stage.

N devices quantize a random float update (``encode_update``), then run all five stages
(the fourth is the consistency check) against the server in one process, every message
going through the codec. A fraction D of the devices vanish, spread round-robin over the
five stages (``--drop-stage`` puts them all in one). Client figures are the mean per
device that took part in the stage; server figures are the sum of its ``receive`` and
``close_stage`` calls, plus setting the server up (in the first stage) and decoding the sum
into the mean update (in the unmask stage, as Flower's dequantizing is in its own). The
result is checked against the plain sum of the included devices' quantized vectors. With
``--repeat R`` it runs R rounds (seeds S..S+R-1) and reports the median of each timing,
which tames a busy machine; ``--clock cpu`` times the process's CPU time (all threads)
instead of wall time, which other jobs disturb less. With ``--flower-python PATH`` Flower's
SecAgg+ runs too, at the same size (``secagg_compare``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np

from fedrt.benchmarks import secagg_compare
from fedrt.errors import UsageError
from fedrt.protocol.graph import choose_parameters, validate_parameters
from fedrt.protocol.messages import Stage
from fedrt.protocol.quantize import QuantSpec, decode_update_sum, encode_update, ring_bits
from fedrt.protocol.secagg import STAGE_NAMES, Observer, SecAggServer, drive, make_cohort

T = TypeVar("T")
QUANTIZE = "quantize"
# Targets of issue 4 at N=100, D=0.1 (seconds), keyed by parameter count.
SERVER_TARGET = {100_000: 0.15, 1_000_000: 1.0}
CLIENT_TARGET = {100_000: 0.015, 1_000_000: 0.060}
# Flower 1.41 SecAgg+ measured on this machine (n=100, k=14, t=8, 10% dropout).
FLOWER = {100_000: {"client": 0.089, "server": 7.3}, 1_000_000: {"client": 0.206, "server": 7.9}}


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall time, or the CPU time of the whole process, every thread counted (Flower
runs its Shamir steps in thread pools), which other jobs on the cores disturb less."""


class _Meter(Observer):
    """Times every call and counts the bytes each device sends and receives."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.client_time: dict[str, dict[int, float]] = defaultdict(dict)
        self.server_time: dict[str, float] = defaultdict(float)
        self.up: dict[int, int] = defaultdict(int)
        self.down: dict[int, int] = defaultdict(int)
        self.masked_bytes = 0

    def client(
        self, index: int, stage: Stage, call: Callable[[], bytes | None], incoming: bytes | None
    ) -> bytes | None:
        start = self.clock()
        reply = call()
        self.client_time[stage.value][index] = self.clock() - start
        self.down[index] += len(incoming or b"")
        self.up[index] += len(reply or b"")
        if stage is Stage.MASKED_INPUT and reply:
            self.masked_bytes = len(reply)
        return reply

    def server(self, stage: Stage, call: Callable[[], T]) -> T:
        start = self.clock()
        result = call()
        self.server_time[stage.value] += self.clock() - start
        return result


def _drop_plan(args: argparse.Namespace, rng: np.random.Generator) -> dict[int, Stage]:
    count = round(args.dropout * args.clients)
    victims = rng.choice(args.clients, size=count, replace=False)
    stages = [Stage(name) for name in STAGE_NAMES]
    if args.drop_stage == "late":
        stages = [Stage.MASKED_INPUT, Stage.UNMASK]
    elif args.drop_stage != "spread":
        return {int(v): Stage(args.drop_stage) for v in victims}
    return {int(v): stages[i % len(stages)] for i, v in enumerate(victims)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run one round as configured and return the report (the JSON object)."""
    n, m = args.clients, args.params
    if args.neighbors is None:
        k, t = choose_parameters(n, dropout=max(args.dropout, 0.01))
    else:
        k = args.neighbors
        t = args.threshold or (k + 1) // 2 + 1
    if args.threshold is not None:
        t = args.threshold
    spec = QuantSpec(params=m, bits=args.bits, clip_norm=1.0, weight_cap=1000)
    bits = ring_bits(args.bits, n)
    try:
        validate_parameters(n, k, t)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rng = np.random.default_rng(args.seed)
    config, clients = make_cohort(
        n, length=spec.length, bits=bits, threshold=t, neighbors=k, seed=args.seed
    )
    meter = _Meter(CLOCKS[args.clock])
    inputs = []
    for index, client in enumerate(clients):
        delta = rng.standard_normal(m, dtype=np.float32) * np.float32(0.01)
        start = meter.clock()
        vector = encode_update(delta, spec=spec, examples=int(rng.integers(1, 1000)), rng=rng)
        meter.client_time[QUANTIZE][index] = meter.clock() - start
        client.set_input(vector)
        inputs.append(vector)
    drop = _drop_plan(args, rng)
    # Setting the round up (neighbour graph, identity keys) is server work of the first stage.
    server = meter.server(Stage.ADVERTISE_KEYS, partial(SecAggServer, config))
    result = drive(server, dict(enumerate(clients)), drop=drop, observer=meter)
    included = sorted(server.included)
    # The sum turned into the mean update is server work too (Flower's unmask stage
    # dequantizes its aggregate), so it counts in the unmask stage.
    start = meter.clock()
    decode_update_sum(result, spec=spec, contributors=len(included))
    meter.server_time[Stage.UNMASK.value] += meter.clock() - start
    plain = np.zeros(spec.length, dtype=np.uint64)
    for i in included:
        plain += inputs[i]
    matched = bool(np.array_equal(result, plain % (1 << bits)))
    stages = [QUANTIZE, *STAGE_NAMES]
    client_seconds = {s: float(np.mean(list(meter.client_time[s].values()))) for s in stages}
    server_seconds = {s: meter.server_time[s] for s in STAGE_NAMES}
    complete = [i for i in meter.client_time[Stage.UNMASK.value]]
    upload = float(np.mean([meter.up[i] for i in complete]))
    return {
        "clients": n,
        "params": m,
        "dropout": args.dropout,
        "drop_stage": args.drop_stage,
        "clock": args.clock,
        "neighbors": k,
        "threshold": t,
        "bits": args.bits,
        "ring_bits": bits,
        "included": len(included),
        "client_seconds": {"total": sum(client_seconds.values()), **client_seconds},
        "server_seconds": {"total": sum(server_seconds.values()), **server_seconds},
        "upload_bytes_per_client": upload,
        "masked_input_bytes": meter.masked_bytes,
        "download_bytes_per_client": float(np.mean([meter.down[i] for i in complete])),
        "upload_bytes_per_param": upload / m,
        "upload_target_bytes_per_param": (args.bits + math.ceil(math.log2(n))) / 8 * 1.01,
        "matched_plain_sum": matched,
    }


def _table(report: dict[str, Any]) -> str:
    rows = [
        f"SecAgg+ n={report['clients']} m={report['params']} dropout={report['dropout']} "
        f"({report['drop_stage']}) k={report['neighbors']} t={report['threshold']} "
        f"b={report['bits']} ring={report['ring_bits']} bits, included={report['included']}, "
        f"median of {report['repeat']} round(s), {report['clock']} time",
        f"{'stage':<16}{'client ms (mean)':>18}{'server ms':>12}",
    ]
    client, server = report["client_seconds"], report["server_seconds"]
    for stage in [QUANTIZE, *STAGE_NAMES, "total"]:
        server_ms = f"{server[stage] * 1e3:12.2f}" if stage in server else f"{'-':>12}"
        rows.append(f"{stage:<16}{client[stage] * 1e3:18.2f}{server_ms}")
    per_param = report["upload_bytes_per_param"]
    rows += [
        f"upload/client: {report['upload_bytes_per_client']:.0f} B "
        f"({per_param:.4f} B/param, target <= {report['upload_target_bytes_per_param']:.4f}; "
        f"masked input {report['masked_input_bytes']} B)",
        f"download/client: {report['download_bytes_per_client']:.0f} B",
        f"matched plain sum: {report['matched_plain_sum']}",
    ]
    m = report["params"]
    if report["clients"] == 100 and m in SERVER_TARGET:
        rows.append(
            f"targets (n=100, m={m}): server <= {SERVER_TARGET[m]} s, client <= "
            f"{CLIENT_TARGET[m] * 1e3:.0f} ms; Flower 1.41: server {FLOWER[m]['server']} s, "
            f"client {FLOWER[m]['client'] * 1e3:.0f} ms"
        )
    return "\n".join(rows)


def _median_of(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The first report with every timing replaced by its median over all repeats."""
    merged = dict(reports[0])
    for key in ("client_seconds", "server_seconds"):
        merged[key] = {s: float(np.median([r[key][s] for r in reports])) for s in reports[0][key]}
    merged["matched_plain_sum"] = all(r["matched_plain_sum"] for r in reports)
    merged["repeat"] = len(reports)
    return merged


def run(args: argparse.Namespace) -> int:
    if args.clients < 2 or args.params < 1 or not 0.0 <= args.dropout < 1.0:
        raise UsageError("need --clients >= 2, --params >= 1 and 0 <= --dropout < 1")
    if not 1 <= args.bits <= 32 or args.repeat < 1:
        raise UsageError("--bits must be in 1..32 and --repeat >= 1")
    if args.flower_python:
        secagg_compare.check_interpreter(args.flower_python)
    if args.drop_stage is None:  # Flower survives only dropouts after key sharing
        args.drop_stage = "late" if args.flower_python else "spread"
    reports = [
        measure(argparse.Namespace(**{**vars(args), "seed": args.seed + i}))
        for i in range(args.repeat)
    ]
    report = _median_of(reports)
    print(_table(report))
    if args.flower_python:
        flower = secagg_compare.flower_report(args.flower_python, report, args.seed)
        print(secagg_compare.side_by_side(report, flower))
        report["flower"] = flower
        report["flower_over_fedrt"] = secagg_compare.ratios(report, flower)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0 if report["matched_plain_sum"] else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("secagg", help="SecAgg+ round: client/server time and bytes")
    parser.add_argument("--clients", type=int, default=100, help="devices N (default 100)")
    parser.add_argument("--params", type=int, default=100_000, help="parameters M")
    parser.add_argument("--dropout", type=float, default=0.1, help="fraction D that vanishes")
    parser.add_argument("--neighbors", type=int, default=None, help="k (default: chosen)")
    parser.add_argument("--threshold", type=int, default=None, help="t (default: chosen)")
    parser.add_argument("--bits", type=int, default=8, help="quantization bits b (default 8)")
    parser.add_argument(
        "--drop-stage",
        default=None,
        choices=["spread", "late", *STAGE_NAMES],
        help="where the dropouts happen: spread over the five stages (default), late (spread "
        "over masked_input and unmask: the default with --flower-python) or one stage",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time measured: wall (default) or the process's CPU time (all threads), "
        "steadier on busy cores",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds to run; timings are their medians"
    )
    parser.add_argument(
        "--flower-python",
        metavar="PATH",
        help="also run Flower's SecAgg+ (same n, m, k, t, dropout) under this interpreter, "
        "which must have flwr (e.g. a throwaway venv), and print both side by side",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.set_defaults(run=run)
