# type: ignore  # run only by --flower-python's interpreter: fedrt's mypy cannot see flwr
"""Flower's SecAgg+ timed the way ``fedrt bench secagg`` times fedrt's (``--flower-python``).

Runs as a script under an interpreter that has ``flwr`` (a throwaway venv: Flower is never a
dependency of fedrt, and this file imports nothing of fedrt). It drives Flower's own
``SecAggPlusWorkflow`` stage by stage against ``secaggplus_mod`` on N in-process clients
through a grid stand-in that carries every message as Flower's protobuf bytes, so both
sides pay for their encoding as on a network. Server time is each stage's wall time less
the time spent inside client calls; client time is the mean per client that took part in
the stage. A fraction D of the clients vanish, spread round-robin over the two stages after
key sharing (``LATE``). The result is checked against the plain weighted mean of the
included clients' clipped updates. The fit instructions carry no model, so the bytes counted
are the protocol's. It prints one JSON line (medians over ``--repeat`` rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
    serde,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.task_identity import TaskIdentity

STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
# Flower 1.42 cannot finish a round in which a client vanished before its key shares went
# out (its neighbours are asked for shares of it that they never got: KeyError in _unmask),
# so the dropouts are spread over the two stages after that.
LATE = ("collect_masked_vectors", "unmask")
CLIP = 8.0  # Flower's default clipping range; updates here stay far inside it


class _Proxy:
    """What the workflow's legacy path needs of a client proxy: its node id."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


class _Strategy:
    """Selects every client and keeps the aggregate the workflow hands to aggregate_fit."""

    def __init__(self, proxies: list[_Proxy]) -> None:
        self.proxies = proxies
        self.aggregate: np.ndarray | None = None

    def configure_fit(self, server_round: int, parameters: Any, manager: Any) -> list[Any]:
        empty = Parameters(tensors=[], tensor_type="")  # count protocol bytes, not a model
        return [(p, FitIns(empty, {})) for p in self.proxies]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        if results:
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)[0]
        return None, {}


class _Grid:
    """The workflow's grid: every message crosses as protobuf bytes to an in-process client."""

    def __init__(
        self, updates: dict[int, tuple[np.ndarray, int]], drop: dict[int, str], clock: Any
    ) -> None:
        self.clock = clock
        self.updates = updates
        self.drop = drop
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in updates
        }
        self.stage = STAGES[0]
        self.client_time: dict[str, dict[int, float]] = defaultdict(dict)
        self.in_clients = 0.0  # seconds of the current stage spent inside clients
        self.up: dict[int, int] = defaultdict(int)
        self.down: dict[int, int] = defaultdict(int)

    def _fit(self, nid: int) -> Any:
        vector, examples = self.updates[nid]

        def call_next(msg: Message, ctxt: Context) -> Message:
            fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), examples, {})
            return Message(compat.fitres_to_recorddict(fitres, True), reply_to=msg)

        return call_next

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            wire = serde.message_to_proto(msg).SerializeToString()  # server side
            nid = msg.metadata.dst_node_id
            if self.drop.get(nid) == self.stage:
                continue
            start = self.clock()
            incoming = serde.message_from_proto(ProtoMessage.FromString(wire))
            reply = secaggplus_mod(incoming, self.contexts[nid], self._fit(nid))
            answer = serde.message_to_proto(reply).SerializeToString()
            spent = self.clock() - start
            self.client_time[self.stage][nid] = spent
            self.in_clients += spent
            self.down[nid] += len(wire)
            self.up[nid] += len(answer)
            replies.append(serde.message_from_proto(ProtoMessage.FromString(answer)))
        return replies


def _round(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n, m = args.clients, args.params
    nids = list(range(1, n + 1))
    updates = {
        nid: (
            (rng.standard_normal(m, dtype=np.float32) * np.float32(0.01)),
            int(rng.integers(1, 1000)),
        )
        for nid in nids
    }
    victims = rng.choice(nids, size=round(args.dropout * n), replace=False)
    drop = {int(v): LATE[i % len(LATE)] for i, v in enumerate(victims)}
    # CPU time of the process: Flower's create_shares / combine_shares run thread pools.
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    grid = _Grid(updates, drop, clock)
    strategy = _Strategy([_Proxy(nid) for nid in nids])
    state = RecordDict()
    state.config_records["config"] = ConfigRecord({"current_round": 1})
    start = ndarrays_to_parameters([np.zeros(m, dtype=np.float32)])
    state.array_records["parameters"] = compat.parameters_to_arrayrecord(start, True)
    base = Context(run_id=1, node_id=0, node_config={}, state=state, run_config={})
    context = LegacyContext(base, strategy=strategy)
    workflow = SecAggPlusWorkflow(
        num_shares=args.num_shares, reconstruction_threshold=args.threshold
    )
    wstate = WorkflowState()
    steps = (
        workflow.setup_stage,
        workflow.share_keys_stage,
        workflow.collect_masked_vectors_stage,
        workflow.unmask_stage,
    )
    server: dict[str, float] = {}
    included = 0
    for name, step in zip(STAGES, steps, strict=True):
        grid.stage, grid.in_clients = name, 0.0
        begin = clock()
        ok = step(grid, context, wstate)
        server[name] = clock() - begin - grid.in_clients
        if name == "collect_masked_vectors":
            included = len(wstate.active_node_ids)
        if not ok:
            raise SystemExit(f"Flower's SecAgg+ halted in stage {name}")
    done = list(grid.client_time["unmask"])
    kept = [nid for nid in nids if nid in grid.client_time["collect_masked_vectors"]]
    weights = np.array([updates[nid][1] / 1000.0 for nid in kept])
    plain = sum(
        w * np.clip(updates[nid][0], -CLIP, CLIP) for w, nid in zip(weights, kept, strict=True)
    )
    expected = plain / weights.sum()
    error = float(np.max(np.abs(strategy.aggregate - expected)))
    client = {s: statistics.fmean(grid.client_time[s].values()) for s in STAGES}
    return {
        "server_seconds": {"total": sum(server.values()), **server},
        "client_seconds": {"total": sum(client.values()), **client},
        "upload_bytes_per_client": statistics.fmean(grid.up[nid] for nid in done),
        "download_bytes_per_client": statistics.fmean(grid.down[nid] for nid in done),
        "included": included,
        "max_abs_error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--params", type=int, required=True)
    parser.add_argument("--num-shares", type=int, required=True, help="k + 1 (self included)")
    parser.add_argument("--threshold", type=int, required=True)
    parser.add_argument("--dropout", type=float, required=True)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    TaskIdentity.run_id = 1  # what a SuperLink sets for a ServerApp's run
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 1
    rounds = [_round(args, args.seed + i) for i in range(args.repeat)]
    report: dict[str, Any] = dict(rounds[0])
    for key in ("server_seconds", "client_seconds"):
        report[key] = {s: statistics.median(r[key][s] for r in rounds) for s in rounds[0][key]}
    report["max_abs_error"] = max(r["max_abs_error"] for r in rounds)
    import flwr

    report.update(
        flwr_version=getattr(flwr, "__version__", "unknown"),
        clients=args.clients,
        params=args.params,
        num_shares=args.num_shares,
        threshold=args.threshold,
        dropout=args.dropout,
        repeat=args.repeat,
        clock=args.clock,
        matched_plain_mean=report["max_abs_error"] < 1e-3,
    )
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
