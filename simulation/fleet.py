"""Simulated devices: real SDK ``Device``s, each with its own MQTT client, credentials,
example store and LiteRT interpreter, many per process.

Their device state follows an availability trace on a compressed clock, and a chaos hook
can make a device vanish abruptly mid-round (``--dropout``) and come back later, as a
killed app or a phone in a tunnel would.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.sdk.device import Device, DeviceConfig, DeviceEvent
from fedrt.sdk.device_hub import DeviceHub
from fedrt.sdk.device_state import DeviceSnapshot, DeviceState, NetworkKind
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.example_store import ExampleStore, Retention
from fedrt.sdk.network_loop import NetworkLoop
from fedrt.sdk.scheduler import SchedulerConfig
from fedrt.sdk.transport import MqttConfig, PahoTransport, Transport
from fedrt.simulation.datasets import Dataset
from fedrt.simulation.speed import slow_trainer_factory
from fedrt.simulation.timings import PARTICIPANT_TIMINGS
from fedrt.simulation.traces import DeviceTrace

log = logging.getLogger(__name__)

# How often the fleet looks at its devices' traces for connectivity (real seconds).
_CONNECTIVITY_STEP_S = 0.2
# Devices stopped at once when a run ends (each waits on its own threads and sockets).
_STOPPERS = 32


class TracedState(DeviceState):
    """Device state from an availability trace, on a clock ``speed`` times faster than real."""

    def __init__(self, trace: DeviceTrace, *, t0: float, speed: float, sim_start: float) -> None:
        self.trace, self.t0, self.speed, self.sim_start = trace, t0, speed, sim_start

    def sim_now(self, now: float) -> float:
        return self.sim_start + (now - self.t0) * self.speed

    def snapshot(self, now: float) -> DeviceSnapshot:
        sim_now = self.sim_now(now)
        snap = self.trace.state.snapshot(sim_now)
        if not self.trace.online(sim_now):
            snap = replace(snap, network=NetworkKind.NONE, network_interface=None, metered=None)
        return replace(snap, taken_at=now)

    def online(self, now: float) -> bool:
        return self.trace.online(self.sim_now(now))


def _transport(config: MqttConfig, *, loop: NetworkLoop | None) -> Transport:
    return PahoTransport(config, loop=loop)


@dataclass(slots=True)
class SimDevice:
    index: int
    directory: Path
    data: Dataset
    state: TracedState
    device: Device | None = None
    crashes: int = 0
    # Connectivity as the trace says now; spells offline so far.
    online: bool = True
    offline_spells: int = 0
    restarting: bool = False
    # Bytes moved by earlier incarnations of this device (before a crash).
    past_up: int = 0
    past_down: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)
    # (round id, delta, examples) of every update this device sent, for reports and tests.
    updates: list[tuple[int, Any, int]] = field(default_factory=list)


class Fleet:
    """Creates, enrolls, starts and stops the simulated devices of one run."""

    def __init__(
        self,
        directory: Path,
        *,
        coordinator_url: str,
        task_id: str,
        mqtt_protocol: int,
        token_factory: Callable[[], str],
        dropout: float,
        rng: np.random.Generator,
        poll_s: float = 0.2,
        devices_per_thread: int = 0,
        slowdowns: Sequence[float] = (),
        train_seconds: float = 0.0,
        first_index: int = 0,
        connect_rate: float = 0.0,
        checkin_spread: float = 0.0,
    ) -> None:
        self.directory = directory
        # The devices' ``participant.checkin_spread``: the whole fleet over the pace target.
        self.checkin_spread = checkin_spread
        # The index of this fleet's first device (a shard of a larger fleet: fleet_procs).
        self.first_index = first_index
        # Devices started (connecting) a second at most; 0: all at once.
        self.connect_rate = connect_rate
        self.coordinator_url = coordinator_url
        self.task_id = task_id
        self.mqtt_protocol = mqtt_protocol
        self.token_factory = token_factory
        self.dropout = dropout
        self.rng = rng
        self.poll_s = poll_s
        # 0: every device has its own event and network threads, as on a phone. Else one
        # DeviceHub and one NetworkLoop serve this many devices each (scale runs).
        self.devices_per_thread = devices_per_thread
        # Device i trains slowdowns[i] times slower (--speed-spread; empty: all at full speed).
        self.slowdowns = tuple(slowdowns)
        # A local training takes at least this x the device's multiple (--train-seconds).
        self.train_seconds = train_seconds
        self._hubs: list[DeviceHub] = []
        self._loops: list[NetworkLoop] = []
        self.devices: list[SimDevice] = []
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._stopping = False
        self._stop = threading.Event()
        self._checkins = itertools.count()
        self.checkins = 0  # check-ins its devices sent, all incarnations together

    def add(self, index: int, data: Dataset, state: TracedState) -> SimDevice:
        sim = SimDevice(
            index=index, directory=self.directory / f"device-{index:04d}", data=data, state=state
        )
        self.devices.append(sim)
        return sim

    def _make(self, sim: SimDevice) -> Device:
        sim.directory.mkdir(parents=True, exist_ok=True)
        store = ExampleStore(
            sim.directory / "examples.sqlite3",
            x_shape=sim.data.input_shape,
            x_dtype=np.float32,
            y_shape=(),
            y_dtype=np.int32,
            retention=Retention(max_examples=max(1000, len(sim.data))),
            # Each device's held-out split from its index: the same devices hold out the
            # same examples in every run (a real device draws its seed at random).
            holdout_seed=hashlib.blake2b(b"fedrt-sim/%d" % sim.index, digest_size=16).digest(),
        )
        if len(store) == 0:
            store.extend(list(sim.data.x), list(sim.data.y))
        config = DeviceConfig(
            data_dir=sim.directory,
            coordinator_url=self.coordinator_url,
            task_id=self.task_id,
            mqtt_protocol=self.mqtt_protocol,
            policy=EligibilityPolicy(),
            scheduler=SchedulerConfig(wait_poll_s=self.poll_s),
            poll_s=self.poll_s,
            participant={**PARTICIPANT_TIMINGS, "checkin_spread": self.checkin_spread},
            # Enrolled with the class most of its examples hold: evaluation rounds report
            # their figures per label, so a skewed partition shows who is served worst.
            labels={"majority_class": str(int(np.bincount(sim.data.y).argmax()))},
        )
        seed = int(self.rng.integers(2**63))
        hub = loop = None
        local = sim.index - self.first_index
        if self.devices_per_thread > 0:
            shard = local // self.devices_per_thread
            hub, loop = self._hubs[shard], self._loops[shard]
        return Device(
            config,
            store=store,
            device_state=sim.state,
            rng=np.random.default_rng(seed),
            on_event=functools.partial(self._on_event, sim),
            hub=hub,
            transport_factory=functools.partial(_transport, loop=loop),
            trainer_factory=(
                slow_trainer_factory(
                    self.slowdowns[local],
                    base_seconds=self.train_seconds,
                    num_threads=config.num_threads,
                )
                if local < len(self.slowdowns)
                else None
            ),
        )

    def start_all(self, *, enroll_workers: int = 8) -> None:
        if self.devices_per_thread > 0:
            shards = -(-len(self.devices) // self.devices_per_thread)
            for n in range(shards):
                hub, loop = DeviceHub(name=f"fedrt-hub-{n}"), NetworkLoop(name=f"fedrt-net-{n}")
                hub.start()
                loop.start()
                self._hubs.append(hub)
                self._loops.append(loop)
        # Devices are made (and their seeds drawn) in index order: the same seed gives the
        # same devices. Enrollment is network-bound: a few at a time (the coordinator
        # batches the enrollments that arrive together: api.enroll_batch). Every device is
        # enrolled before any connects: each enrollment batch reloads Mosquitto, which then
        # checks every connected client's password again (10,000 devices enrolling while
        # thousands were connected: its listen queue overflowed, keepalives lapsed).
        made = [(sim, self._make(sim)) for sim in self.devices]
        with ThreadPoolExecutor(enroll_workers, thread_name_prefix="fedrt-enroll") as pool:
            list(pool.map(lambda pair: pair[1].enroll(self.token_factory()), made))
        # At most connect_rate connections a second (0: all at once): a burst of thousands
        # overflows the broker's listen queue (Mosquitto's is 100), and a refused SYN
        # blocks the shared network loop's connect for a second or more.
        gap = 1.0 / self.connect_rate if self.connect_rate > 0 else 0.0
        next_at = time.monotonic()
        for sim, device in made:
            if gap and self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at += gap
            device.start()
            sim.device = device
        if any(sim.state.trace.offline for sim in self.devices):
            thread = threading.Thread(target=self._connectivity, name="fedrt-sim-net", daemon=True)
            thread.start()

    def wait_connected(self, timeout: float) -> int:
        """Wait (at most ``timeout`` s) until every device is connected; how many are."""
        deadline = time.monotonic() + timeout
        while True:
            devices = [sim.device for sim in self.devices if sim.device is not None]
            up = sum(d.status().connected for d in devices)
            if up == len(self.devices) or time.monotonic() >= deadline:
                return up
            time.sleep(0.2)

    def stop_all(self) -> None:
        with self._lock:
            self._stopping = True
            self._stop.set()
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()

        def stop(sim: SimDevice) -> None:
            if sim.device is not None:
                sim.device.stop(timeout=5.0)
                sim.device.store.close()
                sim.device = None

        # Side by side: one after another, 1,300 devices took ten minutes to stop.
        with ThreadPoolExecutor(max_workers=_STOPPERS, thread_name_prefix="fedrt-stop") as pool:
            list(pool.map(stop, self.devices))
        for hub in self._hubs:
            hub.stop()
        for loop in self._loops:
            loop.stop()
        self._hubs, self._loops = [], []

    # ------------------------------------------------------------------ connectivity
    def _connectivity(self) -> None:
        """Cut and restore devices' MQTT links as their traces go offline and back."""
        while not self._stop.wait(_CONNECTIVITY_STEP_S):
            now = time.time()
            for sim in self.devices:
                online = sim.state.online(now)
                if online == sim.online:
                    continue
                sim.online = online
                sim.offline_spells += not online
                device = sim.device
                if device is not None:
                    device.network_changed(online)

    # ------------------------------------------------------------------ chaos
    def _on_event(self, sim: SimDevice, event: DeviceEvent, detail: dict[str, Any]) -> None:
        sim.events.append((time.time(), event.value))
        if event is DeviceEvent.CHECKED_IN:
            self.checkins = next(self._checkins) + 1  # one count, whichever hub thread
        if event is DeviceEvent.UPDATE_SENT:
            sim.updates.append((detail["round_id"], detail["delta"], detail["n_examples"]))
        if event is not DeviceEvent.TRAINING_STARTED or self.dropout <= 0:
            return
        with self._lock:
            if self._stopping or sim.restarting or self.rng.random() >= self.dropout:
                return
            sim.restarting = True
            # Vanish at a random moment of the round: during training or any SecAgg+ stage.
            delay = float(self.rng.uniform(0.0, 3.0))
            self._later(delay, lambda: self._crash(sim))

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _crash(self, sim: SimDevice) -> None:
        device, sim.device = sim.device, None
        if device is None:
            return
        sim.crashes += 1
        log.info("device %d drops out", sim.index)
        status = device.status()
        sim.past_up += status.bytes_up
        sim.past_down += status.bytes_down
        device.stop(timeout=5.0)
        device.store.close()
        with self._lock:
            if not self._stopping:
                self._later(float(self.rng.uniform(3.0, 6.0)), lambda: self._restart(sim))

    def _restart(self, sim: SimDevice) -> None:
        with self._lock:
            if self._stopping:
                return
        device = self._make(sim)
        if not sim.online:
            device.network_changed(False)
        device.start()
        with self._lock:
            sim.device = device
            sim.restarting = False

    # ------------------------------------------------------------------ figures
    def bytes_moved(self) -> tuple[int, int]:
        up = down = 0
        for sim in self.devices:
            up, down = up + sim.past_up, down + sim.past_down
            device = sim.device
            if device is not None:
                status = device.status()
                up, down = up + status.bytes_up, down + status.bytes_down
        return up, down
