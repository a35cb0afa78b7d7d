"""``fedrt bench fleet``: a large fleet connected and checking in under pace steering (issue 17,
benchmark 3: 10,000 devices, 1,000 a round).

One ``fedrt simulate`` run in this process (the coordinator and its event loops here, a
managed Mosquitto, the devices in ``--device-processes`` processes of their own), sampled
every second: the check-ins the coordinator answered (its ``fedrt_mqtt_messages_total``
counter, channel ``checkin``), the devices connected, and the RSS of every process. The
table gives the rounds committed and their seconds, how long the fleet took to connect,
check-ins answered per second (mean over the rounds, and the peak second), and peak RSS:
each device process, their total, the idle RSS per device (once all its devices are
connected, before any round), the coordinator's process (this one: it also holds the
data set and the evaluation model) and the broker. Timings on a shared machine are
noisy: report the load average with them (the table has it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrt.benchmarks.rss import peak_rss_mib, vm_mib

__all__ = ["Sampler", "config", "register", "run", "table"]

_SAMPLE_S = 1.0


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


@dataclass
class Sampler:
    """Samples the coordinator's check-in counter, the fleet and the RSS every second."""

    sim: Any
    samples: list[dict[str, Any]] = field(default_factory=list)
    connected_at: float | None = None
    most_at: float | None = None  # 99 % connected
    fleet_started: float | None = None
    broker_peak_mib: float = 0.0
    loads: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedrt-bench-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def checkins_answered(self) -> tuple[float, float]:
        """(accepted, all) check-ins the coordinator has handled so far."""
        stack = self.sim.stack
        svc = stack.service if stack is not None else None
        if svc is None:
            return 0.0, 0.0
        counter = svc.metrics.mqtt_messages
        accepted = total = 0.0
        for metric in counter.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels.get("channel") == "checkin":
                    total += s.value
                    accepted += s.value if s.labels.get("outcome") == "accepted" else 0.0
        return accepted, total

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        fleet = self.sim.fleet
        connected = devices = None
        if fleet is not None:
            if self.fleet_started is None:
                self.fleet_started = now
            connected = self.sim._devices_connected()
            if connected is not None:
                connected, devices = connected
                if self.most_at is None and devices and connected >= 0.99 * devices:
                    self.most_at = now
                if self.connected_at is None and devices and connected >= devices:
                    self.connected_at = now
        accepted, total = self.checkins_answered()
        stack = self.sim.stack
        broker = stack.mosquitto if stack is not None else None
        pid = broker.pid if broker is not None else None
        if pid is not None:
            self.broker_peak_mib = max(self.broker_peak_mib, vm_mib("VmHWM", pid) or 0.0)
        if len(self.samples) % 30 == 0:
            self.loads.append(_load())
        self.samples.append(
            {"t": now, "accepted": accepted, "checkins": total, "connected": connected}
        )


def rates(samples: list[dict[str, Any]], t0: float, t1: float) -> tuple[float, float, float]:
    """(mean, peak 1 s, peak 10 s) check-ins answered per second between t0 and t1."""
    inside = [s for s in samples if t0 <= s["t"] <= t1]
    if len(inside) < 2:
        return 0.0, 0.0, 0.0
    mean = (inside[-1]["checkins"] - inside[0]["checkins"]) / max(1e-9, inside[-1]["t"] - t0)
    peak1 = peak10 = 0.0
    for a, b in itertools.pairwise(inside):
        peak1 = max(peak1, (b["checkins"] - a["checkins"]) / max(1e-9, b["t"] - a["t"]))
    for i, a in enumerate(inside):
        later = [b for b in inside[i + 1 :] if b["t"] - a["t"] >= 10.0]
        if later:
            b = later[0]
            peak10 = max(peak10, (b["checkins"] - a["checkins"]) / (b["t"] - a["t"]))
    return mean, peak1, peak10


def config(args: argparse.Namespace) -> Any:
    from fedrt.simulation.runner import SimConfig

    return SimConfig(
        devices=args.devices,
        per_round=args.per_round,
        rounds=args.rounds,
        model=args.model,
        partition="iid",
        dropout=args.dropout,
        secagg=args.secagg,
        cohort_size=args.cohort_size,
        seed=args.seed,
        broker="mosquitto",
        data_dir=args.data_dir if args.data_dir is not None else args.out / "data",
        time_limit_s=args.time_limit,
        device_processes=args.device_processes,
        pace_rate=args.pace_rate,
    )


def summary(args: argparse.Namespace, sim: Any, sampler: Sampler) -> dict[str, Any]:
    report = sim.report
    rounds = [
        {"round": r.round, "status": r.status, "seconds": r.seconds, "selected": r.selected,
         "reported": r.reported, "reason": r.reason}
        for r in report.rounds
    ]  # fmt: skip
    t0 = sim._task_started or time.time()
    t1 = t0 + (report.rounds[-1].elapsed_s or 0.0) if report.rounds else time.time()
    mean, peak1, peak10 = rates(sampler.samples, t0, t1)
    fleet = sim.fleet
    workers = getattr(fleet, "last", [])
    peaks = list(getattr(fleet, "peak_rss_mib", []))
    idle = [
        (w.idle_rss_mib - w.base_rss_mib) / w.devices
        for w in workers
        if w.idle_rss_mib is not None and w.devices
    ]
    started = sampler.fleet_started
    connect_s, most_s = (
        round(at - started, 1) if at is not None and started is not None else None
        for at in (sampler.connected_at, sampler.most_at)
    )
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                 if isinstance(v, str | int | float | bool | Path | None)},
        "rounds": rounds,
        "committed": sum(r["status"] == "committed" for r in rounds),
        "devices": args.devices,
        "connected": max((s["connected"] or 0 for s in sampler.samples), default=0),
        "connect_s": connect_s,
        "connect_99_s": most_s,
        "checkins_per_s": {"mean": round(mean, 1), "peak_1s": round(peak1, 1),
                           "peak_10s": round(peak10, 1)},
        # The last samples may come after the coordinator stopped: the highest count.
        "checkins_answered": max((x["checkins"] for x in sampler.samples), default=0),
        "device_processes": [
            {"shard": w.shard, "devices": w.devices, "peak_rss_mib": round(p, 1),
             "start_s": w.start_s, "fd_limit": w.fd_limit}
            for w, p in zip(workers, peaks, strict=False)
        ],
        "device_peak_rss_total_mib": round(sum(peaks), 1),
        "idle_rss_per_device_kib": round(1024 * sum(idle) / len(idle), 1) if idle else None,
        "coordinator_peak_rss_mib": round(peak_rss_mib(), 1),
        "broker_peak_rss_mib": round(sampler.broker_peak_mib, 1),
        "load_average": sampler.loads,
        "wall_s": report.wall_seconds,
    }  # fmt: skip


def _loads(loads: list[str]) -> str:
    """The 1-minute load average's range over the run, and the last reading."""
    ones = [float(x.split()[0]) for x in loads if x and x[0].isdigit()]
    if not ones:
        return "?"
    return f"1-min {min(ones):.1f} to {max(ones):.1f} over the run; last {loads[-1]}"


def table(s: dict[str, Any]) -> str:
    a = s["args"]
    secs = [r["seconds"] for r in s["rounds"]]
    lines = [
        f"fedrt bench fleet: --devices {a['devices']} --per-round {a['per_round']} --rounds "
        f"{a['rounds']} --model {a['model']} --dropout {a['dropout']} --device-processes "
        f"{a['device_processes']} --pace-rate {a['pace_rate']}"
        + ("" if a["secagg"] else " --no-secagg"),
        f"  rounds committed        {s['committed']}/{len(s['rounds'])}"
        + (f"   seconds: {', '.join(f'{x:.1f}' for x in secs)}" if secs else ""),
        f"  devices connected       {s['connected']}/{s['devices']}; all in "
        + (f"{s['connect_s']:.0f} s" if s["connect_s"] is not None else "- (never)")
        + "; 99 % in "
        + (f"{s['connect_99_s']:.0f} s" if s["connect_99_s"] is not None else "- (never)")
        + " (from the fleet's start: enrollment, then connections)",
        f"  check-ins answered/s    mean {s['checkins_per_s']['mean']:.1f}, peak "
        f"{s['checkins_per_s']['peak_1s']:.1f} (1 s), {s['checkins_per_s']['peak_10s']:.1f}"
        f" (10 s); {s['checkins_answered']:.0f} in all",
        "  peak RSS MiB            devices: "
        + " ".join(f"{p['peak_rss_mib']:.0f}" for p in s["device_processes"])
        + f" (total {s['device_peak_rss_total_mib']:.0f}); coordinator "
        f"{s['coordinator_peak_rss_mib']:.0f}; mosquitto {s['broker_peak_rss_mib']:.0f}",
        "  idle RSS per device     "
        + (f"{s['idle_rss_per_device_kib']:.0f} KiB" if s["idle_rss_per_device_kib"] else "-"),
        f"  load average (1/5/15)   {_loads(s['load_average'])}",
    ]
    for r in s["rounds"]:
        if r["status"] != "committed":
            lines.append(f"  round {r['round']}: {r['status']}: {r['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fedrt.simulation.runner import Simulation

    args.out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(config(args))
    sampler = Sampler(sim)
    sampler.start()
    try:
        sim.run()
    finally:
        sampler.stop()
    result = summary(args, sim, sampler)
    print(table(result))
    result["samples"] = sampler.samples
    out = args.json if args.json is not None else args.out / "fleet.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"report: {out}")
    return 0 if result["rounds"] and result["committed"] == len(result["rounds"]) else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fleet", help="a large fleet checking in under pace steering: rounds, rates, RSS"
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--per-round", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="zoo:mlp")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--secagg", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cohort-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device-processes",
        type=int,
        default=max(1, min(16, (os.cpu_count() or 1) * 2)),
        help="processes the devices run in (default: twice the cores, at most 16)",
    )
    parser.add_argument(
        "--pace-rate", type=float, default=100.0, help="pace steering: check-ins/s wanted"
    )
    parser.add_argument("--time-limit", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=Path("fedrt-bench-fleet"))
    parser.add_argument("--json", type=Path, default=None, help="the report (default OUT/...)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/dev/shm/fedrt-bench-fleet") if Path("/dev/shm").is_dir() else None,
        help="the devices' and coordinator's files (default: tmpfs, so that 10,000 devices' "
        "SQLite fsyncs do not measure this machine's disk; else OUT/data)",
    )
    parser.set_defaults(run=run, default_log_level="WARNING")
