"""``fedrt simulate --device-processes N``: the simulated devices in N processes of their own.

One Python process holding 10,000 MQTT clients, their sockets, SQLite files and threads runs
out of file descriptors and of its one core (the GIL) long before the coordinator does. Here
the fleet is split into contiguous shards of device indices, each a ``Fleet`` in a worker
process (``python -m fedrt.simulation.fleet_procs SPEC.json``) enrolling, connecting and
running its devices exactly as an in-process fleet does. The parent hands each worker its
one-time enrollment tokens (made in one transaction), its devices' examples and indices;
each worker writes its figures (devices connected, check-ins sent, bytes, RSS now and at
its peak) to a status file every second, which ``ProcessFleet`` reads.

What a worker does not do: tell the parent about single devices (``devices`` is empty here,
so per-device personalization reports are unavailable) or share one availability trace draw
with an in-process run of the same seed (each worker draws its devices' traces from
``seed`` and its shard number).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.benchmarks.rss import vm_mib
from fedrt.errors import UsageError
from fedrt.logs import configure
from fedrt.simulation import traces
from fedrt.simulation.datasets import Dataset

__all__ = ["ProcessFleet", "WorkerStatus", "raise_fd_limit", "shards"]

# Named: the worker runs as ``__main__``.
log = logging.getLogger("fedrt.simulation.fleet_procs")

_STATUS_EVERY_S = 1.0
_STOP_TIMEOUT_S = 120.0


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def shards(count: int, processes: int) -> list[range]:
    """``count`` device indices in ``processes`` contiguous shards, sizes within one."""
    if count < 1 or processes < 1:
        raise UsageError("a fleet needs at least one device and one process")
    processes = min(processes, count)
    base, extra = divmod(count, processes)
    out, start = [], 0
    for n in range(processes):
        size = base + (n < extra)
        out.append(range(start, start + size))
        start += size
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatus:
    """One worker's last status file."""

    shard: int
    devices: int
    enrolled: int
    connected: int
    checkins: int
    bytes_up: int
    bytes_down: int
    crashes: int
    offline_spells: int
    rss_mib: float
    peak_rss_mib: float
    # RSS before its devices existed, and once all were connected (before any round).
    base_rss_mib: float
    idle_rss_mib: float | None
    fd_limit: int
    start_s: float | None
    done: bool
    error: str | None = None

    @classmethod
    def read(cls, path: Path) -> WorkerStatus | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(**{k: data.get(k) for k in cls.__slots__})


class ProcessFleet:
    """The fleet of one run in worker processes; the ``Fleet`` methods a run uses."""

    def __init__(
        self,
        directory: Path,
        *,
        processes: int,
        tokens: Callable[[int], list[str]],
        train: Dataset,
        parts: Sequence[Any],
        settings: dict[str, Any],
        slowdowns: Sequence[float] = (),
    ) -> None:
        self.directory = directory
        self.processes = processes
        self._tokens = tokens
        self._train = train
        self._parts = [np.asarray(p, dtype=np.int64) for p in parts]
        # coordinator_url, task_id, mqtt_protocol, dropout, seed, poll_s, devices_per_thread,
        # train_seconds, availability, speed, time_limit_s: as the in-process Fleet takes them.
        self._settings = dict(settings)
        self._slowdowns = list(slowdowns)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._status_paths: list[Path] = []
        # The devices live in the workers: none here (see the module docstring).
        self.devices: list[Any] = []
        self.last: list[WorkerStatus] = []
        self.peak_rss_mib: list[float] = []

    @property
    def size(self) -> int:
        return len(self._parts)

    def start_all(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = self.directory / "train.npz"
        np.savez(data, x=self._train.x, y=self._train.y)
        tokens = self._tokens(self.size)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for n, shard in enumerate(shards(self.size, self.processes)):
            spec = self.directory / f"worker-{n}.json"
            status = self.directory / f"worker-{n}.status.json"
            status.unlink(missing_ok=True)
            spec.write_text(
                json.dumps(
                    {
                        **self._settings,
                        "shard": n,
                        "directory": str(self.directory / f"shard-{n}"),
                        "data": str(data),
                        "classes": self._train.classes,
                        "name": self._train.name,
                        "indices": [shard.start, shard.stop],
                        "parts": [self._parts[i].tolist() for i in shard],
                        "tokens": tokens[shard.start : shard.stop],
                        "slowdowns": self._slowdowns[shard.start : shard.stop],
                        "status": str(status),
                    }
                )
            )
            spec.chmod(0o600)  # one-time tokens
            log = (self.directory / f"worker-{n}.log").open("wb")
            argv = [sys.executable, "-m", "fedrt.simulation.fleet_procs", str(spec)]
            self._procs.append(subprocess.Popen(argv, stdout=log, stderr=log, env=env))
            log.close()
            self._status_paths.append(status)

    def statuses(self) -> list[WorkerStatus]:
        """Every worker's last status (a worker not yet reporting is left out)."""
        out = [WorkerStatus.read(p) for p in self._status_paths]
        self.last = [s for s in out if s is not None]
        for proc in self._procs:
            peak = vm_mib("VmHWM", proc.pid)
            if peak is not None:
                self._note_peak(self._procs.index(proc), peak)
        return self.last

    def _note_peak(self, n: int, peak: float) -> None:
        while len(self.peak_rss_mib) <= n:
            self.peak_rss_mib.append(0.0)
        self.peak_rss_mib[n] = max(self.peak_rss_mib[n], peak)

    def _failed(self) -> str | None:
        for n, proc in enumerate(self._procs):
            if proc.poll() is not None:
                log = self.directory / f"worker-{n}.log"
                tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
                return f"device process {n} exited ({proc.returncode}):\n{tail}"
        return None

    def connected(self) -> int:
        return sum(s.connected for s in self.statuses())

    def wait_connected(self, timeout: float) -> int:
        """Wait (at most ``timeout`` s) until every device is connected; how many are."""
        deadline = time.monotonic() + timeout
        while True:
            up = self.connected()
            if up >= self.size or time.monotonic() >= deadline:
                return up
            failed = self._failed()
            if failed is not None:
                raise UsageError(failed)
            time.sleep(0.5)

    def bytes_moved(self) -> tuple[int, int]:
        last = self.statuses()
        return sum(s.bytes_up for s in last), sum(s.bytes_down for s in last)

    def checkins(self) -> int:
        return sum(s.checkins for s in self.statuses())

    def stop_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.statuses()
        for s in self.last:
            self._note_peak(s.shard, s.peak_rss_mib)
        self._procs = []

    @property
    def crashes(self) -> int:
        return sum(s.crashes for s in self.last)

    @property
    def offline_spells(self) -> int:
        return sum(s.offline_spells for s in self.last)


# ---------------------------------------------------------------------- the worker process
def _worker(spec_path: Path) -> int:
    # Imported here: the parent needs none of the SDK.
    from fedrt.simulation.fleet import Fleet, TracedState

    spec = json.loads(spec_path.read_text())
    # Python's stderr (its log file) on a descriptor of its own: loading a model points fd 2
    # elsewhere for a while (model_export.litert_model._drop_stderr_line), and devices load
    # theirs on several threads at once; this log must not go along.
    sys.stderr = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
    # The devices' own log, set up as a command's (FEDRT_LOG_LEVEL, FEDRT_LOG_FORMAT).
    configure(default_level="WARNING")
    fd_limit = raise_fd_limit()
    base_rss = vm_mib("VmRSS") or 0.0
    stop = threading.Event()
    why: list[str] = []

    def on_signal(number: int, _: Any) -> None:
        why.append(signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status_path = Path(spec["status"])
    npz = np.load(spec["data"])
    train = Dataset(spec["name"], npz["x"], npz["y"], int(spec["classes"]))
    first, _ = spec["indices"]
    tokens = [str(t) for t in spec["tokens"]]
    token_lock = threading.Lock()

    def token() -> str:
        with token_lock:
            return tokens.pop()

    shard = int(spec["shard"])
    rng = np.random.default_rng([int(spec["seed"]), shard])
    fleet = Fleet(
        Path(spec["directory"]),
        coordinator_url=spec["coordinator_url"],
        task_id=spec["task_id"],
        mqtt_protocol=int(spec["mqtt_protocol"]),
        token_factory=token,
        dropout=float(spec["dropout"]),
        rng=rng,
        poll_s=float(spec["poll_s"]),
        devices_per_thread=int(spec["devices_per_thread"]),
        slowdowns=spec["slowdowns"],
        train_seconds=float(spec["train_seconds"]),
        first_index=first,
        connect_rate=float(spec.get("connect_rate", 0.0)),
        checkin_spread=float(spec.get("checkin_spread", 0.0)),
    )
    parts = spec["parts"]
    days = max(1, math.ceil(float(spec["time_limit_s"]) * float(spec["speed"]) / traces.DAY) + 1)
    device_traces = traces.generate(spec["availability"], len(parts), days=days, rng=rng)
    t0 = float(spec["t0"])
    for i, (idx, trace) in enumerate(zip(parts, device_traces, strict=True)):
        fleet.add(
            first + i,
            train.subset(np.asarray(idx, dtype=np.int64)),
            TracedState(trace, t0=t0, speed=float(spec["speed"]), sim_start=spec["sim_start"]),
        )
    started = time.monotonic()
    facts: dict[str, Any] = {"start_s": None, "idle_rss_mib": None, "error": None}

    def write(done: bool = False) -> None:
        present = [s.device for s in fleet.devices if s.device is not None]
        statuses = [d.status() for d in present]
        up, down = fleet.bytes_moved()
        record = {
            "shard": shard,
            "devices": len(fleet.devices),
            "enrolled": sum(s.credentials is not None for s in present),
            "connected": sum(st.connected for st in statuses),
            "checkins": fleet.checkins,
            "bytes_up": up,
            "bytes_down": down,
            "crashes": sum(s.crashes for s in fleet.devices),
            "offline_spells": sum(s.offline_spells for s in fleet.devices),
            "rss_mib": vm_mib("VmRSS") or 0.0,
            "peak_rss_mib": vm_mib("VmHWM") or 0.0,
            "base_rss_mib": base_rss,
            "fd_limit": fd_limit,
            "done": done,
            **facts,
        }
        if facts["start_s"] is None and record["connected"] == len(fleet.devices):
            facts["start_s"] = record["start_s"] = round(time.monotonic() - started, 2)
            facts["idle_rss_mib"] = record["idle_rss_mib"] = record["rss_mib"]
        tmp = status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, status_path)

    starter = threading.Thread(
        target=lambda: _start(fleet, facts, int(spec["enroll_workers"])), daemon=True
    )
    starter.start()
    failure: BaseException | None = None
    try:
        while not stop.wait(_STATUS_EVERY_S):
            try:
                write()
            except Exception:  # a status is advisory: a failed one must not stop the devices
                log.exception("device process %d: no status written", shard)
            if os.getppid() == 1:  # the run's process is gone
                why.append("the run's process is gone")
                break
    except BaseException as exc:  # logged once, below; the exit status tells the parent
        failure = exc
        why.append(f"{type(exc).__name__}: {exc}")
    facts["stopped"] = ", ".join(why)
    log.warning("device process %d stops: %s", shard, facts["stopped"], exc_info=failure)
    starter.join(_STOP_TIMEOUT_S)
    fleet.stop_all()
    write(done=True)
    return 0 if failure is None else 1


def _start(fleet: Any, facts: dict[str, Any], workers: int) -> None:
    try:
        fleet.start_all(enroll_workers=workers)
    except Exception as exc:  # reported in the status file, and the parent's wait fails
        facts["error"] = f"{type(exc).__name__}: {exc}"
        raise


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
