"""An in-memory network: one RoundMachine and N Participants exchanging ENCODED messages.

Everything the two sides say goes through ``round_codec`` (and SecAgg+'s own codec inside
the payloads), exactly as it would over MQTT; only the broker is replaced by a FIFO queue
and the clock by a number. Devices train instantly with the delta the test gives them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedrt.coordinator.rounds import commands as rc
from fedrt.coordinator.rounds.machine import RoundMachine
from fedrt.coordinator.selection.pace import PaceSteering
from fedrt.coordinator.strategies import FedAvg, OptimizerState, ServerOptimizer
from fedrt.protocol import round_messages as rm
from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.prg import SeededRandom
from fedrt.protocol.round_codec import encode_message
from fedrt.sdk import participant_commands as pc
from fedrt.sdk.participant import Participant

SHA = "ab" * 32
MODEL = rm.ModelRef(version=3, sha256=SHA, url=f"/v1/models/{SHA}")

# Where a device can vanish: before it would send the named thing.
DROP_POINTS = (
    "training",
    "advertise_keys",
    "share_keys",
    "masked_input",
    "consistency_check",
    "unmask",
)
_STAGE_DROP = {
    rm.Stage.ADVERTISE_KEYS: "advertise_keys",
    rm.Stage.SHARE_KEYS: "share_keys",
    rm.Stage.MASKED_INPUT: "masked_input",
    rm.Stage.CONSISTENCY_CHECK: "consistency_check",
    rm.Stage.UNMASK: "unmask",
    rm.Stage.PLAIN_UPDATE: "advertise_keys",
}


def config(**overrides: object) -> rc.RoundConfig:
    base: dict[str, object] = dict(
        task_id="mnist",
        round_id=7,
        model=MODEL,
        goal_count=6,
        over_selection=1.0,
        # The pool is the cohort: these tests script who is selected; sampling from a larger
        # pool is tested in test_round_selection.
        pool_factor=1.0,
        min_reports=4,
        clip_norm=1.0,
        bits=16,
        weight_cap=100,
        secagg_neighbors=5,
        secagg_threshold=4,
        checkin_timeout=30.0,
        training_timeout=60.0,
        stage_timeout=10.0,
    )
    base.update(overrides)
    return rc.RoundConfig(**base)  # type: ignore[arg-type]


@dataclass
class Network:
    cfg: rc.RoundConfig
    n_devices: int
    weights: npt.NDArray[np.float32]
    deltas: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    drop: dict[str, str] = field(default_factory=dict)
    optimizer: ServerOptimizer = field(default_factory=FedAvg)
    seed: int = 0
    # Devices that never answer a Train command (straggle forever).
    stragglers: set[str] = field(default_factory=set)
    now: float = 0.0
    server_out: list[rc.Command] = field(default_factory=list)
    device_out: dict[str, list[pc.Command]] = field(default_factory=dict)
    # Called with every encoded device message right after the coordinator took it.
    tap: Callable[[str, bytes], None] | None = None
    # The cohort topic key each queued device message was published under (as a broker
    # would carry it in the topic), by (device id, bytes); absent: a plain up-topic.
    topic_keys: dict[tuple[str, bytes], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [f"dev-{i:02d}" for i in range(self.n_devices)]
        keys = {d: identity_from_seed(bytes([i + 1]) * 32) for i, d in enumerate(self.ids)}
        public = {d: k.public_key().public_bytes_raw() for d, k in keys.items()}
        self.machine = RoundMachine(
            self.cfg,
            weights=self.weights,
            optimizer=self.optimizer,
            optimizer_state=OptimizerState(),
            pace=PaceSteering(),
            rng=np.random.default_rng(self.seed),
            identity_keys=public,
        )
        self.devices = {
            d: Participant(
                pc.ParticipantConfig(device_id=d, task_id=self.cfg.task_id, grace=5.0),
                identity=keys[d],
                rng=np.random.default_rng([self.seed, i]),
                random=SeededRandom(bytes([i]) * 32),
            )
            for i, d in enumerate(self.ids)
        }
        self.dead: set[str] = set()
        self.to_server: deque[tuple[str, bytes]] = deque()
        self.to_device: deque[tuple[str, bytes]] = deque()

    # --- driving ---------------------------------------------------------------------------

    def start(self, checkin: list[str] | None = None) -> None:
        self._server(self.machine.start(self.now))
        for d in checkin if checkin is not None else self.ids:
            self._device(d, self.devices[d].check_in(self.now))

    def deliver(self, max_steps: int = 10_000) -> None:
        """Deliver every queued message (and what it triggers) without moving the clock."""
        for _ in range(max_steps):
            if self.to_server:
                device_id, data = self.to_server.popleft()
                self._server(self.receive(device_id, data))
            elif self.to_device:
                device_id, data = self.to_device.popleft()
                if device_id not in self.dead:
                    self._device(device_id, self.devices[device_id].receive_data(data, self.now))
            else:
                return
        raise AssertionError("messages kept coming")

    def run(self, max_steps: int = 10_000) -> None:
        """Deliver everything, advancing the clock to the next deadline when idle."""
        for _ in range(max_steps):
            if self.to_server:
                device_id, data = self.to_server.popleft()
                self._server(self.receive(device_id, data))
                if self.tap is not None:
                    self.tap(device_id, data)
            elif self.to_device:
                device_id, data = self.to_device.popleft()
                if device_id not in self.dead:
                    self._device(device_id, self.devices[device_id].receive_data(data, self.now))
            else:
                deadlines = [self.machine.next_deadline()] + [
                    p.next_deadline() for d, p in self.devices.items() if d not in self.dead
                ]
                pending = [t for t in deadlines if t is not None]
                if self.machine.finished and all(
                    self.devices[d].state.value == "idle" for d in self.ids if d not in self.dead
                ):
                    return
                if not pending:
                    return
                self.now = max(self.now, min(pending))
                self._server(self.machine.tick(self.now))
                for d, p in self.devices.items():
                    if d not in self.dead:
                        self._device(d, p.tick(self.now))
        raise AssertionError("the round did not settle")

    def receive(self, device_id: str, data: bytes) -> list[rc.Command]:
        """The machine takes ``data`` as the coordinator would from its topic."""
        key = self.topic_keys.pop((device_id, data), None)
        return self.machine.receive_data(device_id, data, self.now, cohort=key)

    # --- acting on commands ----------------------------------------------------------------

    def _server(self, commands: list[rc.Command]) -> None:
        self.server_out.extend(commands)
        for c in commands:
            if isinstance(c, rc.Send):
                self.to_device.append((c.device_id, encode_message(c.message)))
            elif isinstance(c, rc.Announce):
                for d in self.ids:
                    self.to_device.append((d, encode_message(c.message)))

    def _device(self, device_id: str, commands: list[pc.Command]) -> None:
        self.device_out.setdefault(device_id, []).extend(commands)
        p = self.devices[device_id]
        for c in commands:
            if device_id in self.dead:
                return
            if isinstance(c, pc.Publish):
                msg = c.message
                point = _STAGE_DROP.get(msg.stage) if isinstance(msg, rm.StageResponse) else None
                if point is not None and self.drop.get(device_id) == point:
                    self.dead.add(device_id)
                    return
                data = encode_message(msg)
                if c.cohort:
                    self.topic_keys[(device_id, data)] = c.cohort
                self.to_server.append((device_id, data))
            elif isinstance(c, pc.Train):
                if self.drop.get(device_id) == "training":
                    self.dead.add(device_id)
                    return
                if device_id in self.stragglers:
                    continue
                delta = self.deltas[device_id]
                self._device(
                    device_id, p.training_done(delta, self.examples.get(device_id, 10), self.now)
                )
            elif isinstance(c, pc.Evaluate):
                n = self.examples.get(device_id, 10)
                sums = {"loss_sum": 0.5 * n, "correct": 0.75 * n}
                self._device(device_id, p.evaluation_done(n, sums, self.now))

    # --- results ---------------------------------------------------------------------------

    def outcome(self) -> rc.Commit | rc.AbandonRound | rc.EvaluationDone:
        final = [
            c
            for c in self.server_out
            if isinstance(c, rc.Commit | rc.AbandonRound | rc.EvaluationDone)
        ]
        assert len(final) == 1, final
        return final[0]


def fedavg(deltas: list[npt.NDArray[np.float64]], counts: list[int]) -> npt.NDArray[np.float64]:
    total = sum(counts)
    return sum((c / total) * d for d, c in zip(deltas, counts, strict=True))  # type: ignore[return-value]
