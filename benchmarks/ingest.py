"""``fedrt bench ingest``: how fast the coordinator takes device updates from Mosquitto.

For each N in ``--devices``, N real MQTT clients (in ``--publishers`` child processes) each
publish ``--updates`` device-sized plain updates (a real ``StageResponse`` carrying an M-param
update quantized to ``--bits``) at QoS 1 on their own ``fedrt/v1/dev/{id}/up/update`` topic,
twice on one fresh Mosquitto: first to a bare paho subscriber (the raw broker rate), then to a
real ``CoordinatorService`` (``LocalStack``), whose MQTT link, topic parsing, size and rate
checks and enrollment lookup hand each message to a driver that decodes, dequantizes, clips
and adds it to a running weighted sum, as a streaming FedAvg would. Rates are messages over
the time from the first publish to the last message handled. The coordinator's RSS is sampled
in this process, which holds nothing else while it ingests (publishers are child processes).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.errors import UsageError

TARGET_RATIO = 0.5
# Every update must be delivered so that both sides count the same messages: the broker's
# per-client queue is unbounded here (the coordinator acknowledges only what it handled,
# so a burst it is behind on waits in the broker).
BROKER_QUEUE = 0
# paho's own loop waits with select(), which takes no descriptor above 1023, and each client
# holds three (its socket and a wake-up pair): past ~330 clients a process stops connecting.
CLIENTS_PER_PUBLISHER = 250


def register(subparsers: Any) -> None:
    """Entry point of ``fedrt bench ingest`` (group ``fedrt.bench``); imports stay light."""
    p = subparsers.add_parser("ingest", help="coordinator ingest rate vs the raw broker rate")
    p.add_argument("--devices", default="50,200", help="N, or several: 50,200 (default)")
    p.add_argument("--params", type=int, default=100_000, help="M parameters per update")
    p.add_argument("--bits", type=int, default=8, help="quantization bits (default 8)")
    p.add_argument("--updates", type=int, default=5, help="updates per device (1..10)")
    p.add_argument(
        "--publishers", type=int, default=2, help="publisher processes (at least N / 250)"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per phase")
    p.add_argument("--json", action="store_true", help="end with a JSON line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("fedrt").setLevel(logging.WARNING)
    try:
        counts = [int(x) for x in str(args.devices).split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--devices must be integers: {args.devices!r}") from None
    if not counts or min(counts) < 1 or args.params < 1 or not 1 <= args.publishers <= 64:
        raise UsageError("--devices, --params and --publishers must be positive")
    if not 1 <= args.updates <= 10:
        # Two coordinator phases must fit the default per-device MQTT burst of 20 messages.
        raise UsageError("--updates must be within 1..10 (half the per-device burst)")
    if not 2 <= args.bits <= 16:
        raise UsageError("--bits must be within 2..16")
    runs = [measure(n, args) for n in counts]
    report = {
        "params": args.params,
        "bits": args.bits,
        "updates_per_device": args.updates,
        "target_ratio": TARGET_RATIO,
        "runs": runs,
    }
    print(table(report))
    if args.json:
        print(json.dumps(report))
    return 0


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Both phases for N devices on one fresh broker; the figures of one table row."""
    from fedrt.benchmarks.ingest_clients import RawSubscriber
    from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker
    from fedrt.protocol.topics import UpChannel, device_up

    payload, spec = _payload(args.params, args.bits)
    topics = [device_up(f"bench-{i:05d}", UpChannel.UPDATE) for i in range(n)]
    total = n * args.updates
    with tempfile.TemporaryDirectory(prefix="fedrt-bench-ingest-") as tmp:
        config = BrokerConfig(directory=Path(tmp) / "mq", max_queued_messages=BROKER_QUEUE)
        broker = MosquittoBroker(config)
        broker.start()
        try:
            sub = RawSubscriber(broker.host, broker.port)
            sub.start()
            sub.arm(total)
            try:
                raw_s = _publish(
                    broker.host,
                    broker.port,
                    topics,
                    payload,
                    args,
                    lambda t: sub.done_at if sub.done.wait(t) else None,
                )
                raw_count, raw_bytes = sub.count, sub.bytes
            finally:
                sub.stop()
            transport, fedavg = _coordinator_phases(
                Path(tmp), broker.url, topics, payload, spec, args
            )
        finally:
            broker.stop()
    raw = _rates(raw_count, raw_bytes, raw_s)
    return {
        "devices": n,
        "messages": total,
        "payload_bytes": len(payload),
        "raw": raw,
        "coordinator_transport": transport,
        "coordinator_fedavg": fedavg,
        "ratio_transport": transport["updates_per_s"] / raw["updates_per_s"] if raw_count else 0.0,
        "ratio_fedavg": fedavg["updates_per_s"] / raw["updates_per_s"] if raw_count else 0.0,
    }


def _rates(count: int, size: int, seconds: float) -> dict[str, Any]:
    return {
        "received": count,
        "seconds": seconds,
        "updates_per_s": count / seconds if seconds else 0.0,
        "mb_per_s": size / seconds / 1e6 if seconds else 0.0,
    }


def _payload(params: int, bits: int) -> tuple[bytes, Any]:
    """A real encoded plain-update message for ``params`` weights, and its update spec."""
    from fedrt.protocol import round_messages as rm
    from fedrt.protocol import round_update
    from fedrt.protocol.round_codec import encode_message
    from fedrt.protocol.round_plan import UpdateSpec

    spec = UpdateSpec(params=params, clip_norm=1.0, bits=bits, weight_cap=100)
    rng = np.random.default_rng(0)
    delta = rng.standard_normal(params) * (0.5 / np.sqrt(params))
    vector = round_update.encode(delta, 50, spec, rng, weighted=False)
    message = rm.StageResponse(
        msg_id=1,
        task_id="bench",
        round_id=1,
        stage=rm.Stage.PLAIN_UPDATE,
        payload=round_update.pack(vector, bits),
    )
    return encode_message(message), spec


def _publish(
    host: str,
    port: int,
    topics: list[str],
    payload: bytes,
    args: argparse.Namespace,
    wait_done: Callable[[float], float | None],
) -> float:
    """Connect every device, start them together, return seconds until ``wait_done`` saw the
    last message (the whole timeout if it never did)."""
    from fedrt.benchmarks.ingest_clients import PublisherJob, run_publishers

    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    n_procs = max(args.publishers, -(-len(topics) // CLIENTS_PER_PUBLISHER))
    shares = [topics[i::n_procs] for i in range(n_procs)]
    procs, readies = [], []
    for share in (s for s in shares if s):
        ready = ctx.Event()
        job = PublisherJob(
            host=host,
            port=port,
            topics=share,
            payload=payload,
            updates=args.updates,
            timeout_s=args.timeout,
        )
        proc = ctx.Process(target=run_publishers, args=(job, ready, go, results), daemon=True)
        proc.start()
        procs.append(proc)
        readies.append(ready)
    try:
        for ready in readies:
            if not ready.wait(60):
                raise UsageError("publisher processes did not connect within 60 s")
        start = time.perf_counter()
        go.set()
        done_at = wait_done(args.timeout)
        return (done_at if done_at is not None else time.perf_counter()) - start
    finally:
        for proc in procs:
            proc.join(args.timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _coordinator_phases(
    tmp: Path, url: str, topics: list[str], payload: bytes, spec: Any, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    from fedrt.benchmarks.ingest_driver import IngestDriver, register_devices
    from fedrt.coordinator.driver import DriverContext
    from fedrt.simulation.stack import LocalStack

    holder: list[IngestDriver] = []

    def factory(ctx: DriverContext) -> IngestDriver:
        holder.append(IngestDriver(ctx, spec))
        return holder[-1]

    stack = LocalStack(tmp / "stack", broker=url, driver_factory=factory)
    stack.start()
    try:
        svc = stack.service
        assert svc is not None
        ids = [t.split("/")[3] for t in topics]
        stack.call(lambda: register_devices(svc.store, ids))
        driver = holder[0]
        phases = []
        # Transport alone first, then the same traffic with the update arithmetic.
        for aggregate in (False, True):
            driver.aggregate = aggregate
            driver.arm(len(topics) * args.updates)
            cpu_before = time.process_time()
            with _RssSampler() as rss:
                seconds = _publish(
                    svc.config.broker.host,
                    svc.config.broker.port,
                    topics,
                    payload,
                    args,
                    lambda t: driver.done_at if driver.done.wait(t) else None,
                )
            phase = _rates(driver.count, driver.bytes, seconds)
            # CPU of this process (the coordinator; publishers are other processes) per
            # update: unlike the rates, it hardly depends on what else the machine runs.
            cpu_s = time.process_time() - cpu_before
            phase["cpu_ms_per_update"] = 1e3 * cpu_s / driver.count if driver.count else 0.0
            phase["rss_before_mib"] = rss.before / 2**20
            phase["rss_peak_mib"] = rss.peak / 2**20
            phase["rss_growth_mib"] = (rss.peak - rss.before) / 2**20
            phases.append(phase)
        return phases[0], phases[1]
    finally:
        stack.stop()


class _RssSampler:
    """This process's resident set size before a phase and its peak during it (10 ms steps)."""

    def __init__(self) -> None:
        self.before = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def table(report: dict[str, Any]) -> str:
    rows = [
        f"ingest through Mosquitto: M={report['params']} params at {report['bits']} bits, "
        f"{report['updates_per_device']} updates per device; target: coordinator >= "
        f"{report['target_ratio']:.0%} of the raw broker rate, RSS flat in N",
        "transport = MQTT link + service checks, count only; fedavg = + decode, dequantize, "
        "clip, running weighted sum; cpu = coordinator CPU ms per update (transport/fedavg)",
        f"{'N':>5}{'KB':>6}{'msgs':>6}{'raw upd/s':>10}{'MB/s':>7}"
        f"{'transport':>10}{'MB/s':>7}{'ratio':>6}{'fedavg':>8}{'MB/s':>7}{'ratio':>6}"
        f"{'cpu ms':>11}{'RSS MiB':>8}{'peak':>7}{'growth':>7}",
    ]
    for r in report["runs"]:
        raw, t, f = r["raw"], r["coordinator_transport"], r["coordinator_fedavg"]
        short = [
            f"{name} got {p['received']}"
            for name, p in (("raw", raw), ("transport", t), ("fedavg", f))
            if p["received"] != r["messages"]
        ]
        rows.append(
            f"{r['devices']:>5}{r['payload_bytes'] / 1e3:>6.0f}{r['messages']:>6}"
            f"{raw['updates_per_s']:>10.0f}{raw['mb_per_s']:>7.1f}"
            f"{t['updates_per_s']:>10.0f}{t['mb_per_s']:>7.1f}{r['ratio_transport']:>6.2f}"
            f"{f['updates_per_s']:>8.0f}{f['mb_per_s']:>7.1f}{r['ratio_fedavg']:>6.2f}"
            f"{t['cpu_ms_per_update']:>6.2f}/{f['cpu_ms_per_update']:<4.2f}"
            f"{f['rss_before_mib']:>8.1f}{f['rss_peak_mib']:>7.1f}{f['rss_growth_mib']:>7.1f}"
            + (f"  (INCOMPLETE: {', '.join(short)})" if short else "")
        )
    return "\n".join(rows)


__all__ = ["measure", "register", "run", "table"]
