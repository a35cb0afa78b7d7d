"""SecAgg+ entry points: the client and server machines and an in-memory driver.

``run_in_memory`` runs the real ``SecAggClient`` and ``SecAggServer`` against each other
through the codec in one process; ``drive`` is its loop, reusable with an ``Observer`` that
sees every call (the benchmark times them and counts bytes). A device listed in ``drop``
vanishes right before sending that stage's message; a device whose own checks abort the
round for it (``RoundAborted`` from the client, ``ConsistencyCheckFailed`` included)
vanishes too, as it would in the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fedrt.protocol.crypto import identity_from_seed
from fedrt.protocol.errors import LengthError, ParameterError, RoundAborted
from fedrt.protocol.messages import Stage
from fedrt.protocol.prg import SeededRandom
from fedrt.protocol.secagg_client import SecAggClient
from fedrt.protocol.secagg_config import ROUND_ID_BYTES, Member, SecAggConfig
from fedrt.protocol.secagg_server import SecAggServer

__all__ = [
    "STAGE_NAMES",
    "Observer",
    "SecAggClient",
    "SecAggServer",
    "drive",
    "make_cohort",
    "run_in_memory",
]

_CLIENT_STAGES = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
)
STAGE_NAMES = tuple(s.value for s in _CLIENT_STAGES)
"""The names accepted in ``drop``: the five message-carrying stages, in order."""

T = TypeVar("T")
Vector = npt.NDArray[np.unsignedinteger]


class Observer:
    """Sees every machine call of ``drive``; this base class just makes the call."""

    def client(
        self, index: int, stage: Stage, call: Callable[[], bytes | None], incoming: bytes | None
    ) -> bytes | None:
        """Run device ``index``'s ``call`` for ``stage`` (``incoming`` is what it was fed)."""
        return call()

    def server(self, stage: Stage, call: Callable[[], T]) -> T:
        """Run the server's ``receive`` of each reply of ``stage``, or its ``close_stage``."""
        return call()


def drive(
    server: SecAggServer,
    clients: Mapping[int, SecAggClient],
    *,
    drop: Mapping[int, Stage] | None = None,
    observer: Observer | None = None,
) -> Vector:
    """Run one round to the end and return ``server.result``; raises ``RoundAborted``."""
    obs = observer or Observer()
    drops = drop or {}
    gone = {i for i in range(server.config.clients) if i not in clients}

    def vanishes(index: int, stage: Stage) -> bool:
        if index in gone or drops.get(index) is stage:
            gone.add(index)
            return True
        return False

    def hear(replies: list[bytes]) -> None:
        for reply in replies:
            server.receive(reply)

    def deliver(stage: Stage, replies: list[bytes]) -> dict[int, bytes]:
        # The server hears a stage's replies once the devices have sent them, as a coordinator
        # drains its inbox: interleaving each device's own work between two server calls
        # would only stand for both sides sharing one machine's caches.
        obs.server(stage, partial(hear, replies))
        return obs.server(stage, server.close_stage)

    first = Stage.ADVERTISE_KEYS
    adverts = []
    for index, client in sorted(clients.items()):
        if not vanishes(index, first):
            advert = obs.client(index, first, client.start, None)
            assert advert is not None
            adverts.append(advert)
    outgoing = deliver(first, adverts)
    for stage in _CLIENT_STAGES[1:]:
        replies = []
        for index, data in outgoing.items():
            if vanishes(index, stage):
                continue
            try:
                reply = obs.client(index, stage, partial(clients[index].receive, data), data)
            except RoundAborted:
                gone.add(index)
                continue
            if reply is not None:
                replies.append(reply)
        outgoing = deliver(stage, replies)
    return server.result


def make_cohort(
    clients: int, *, length: int, bits: int, threshold: int, neighbors: int, seed: int = 0
) -> tuple[SecAggConfig, list[SecAggClient]]:
    """A reproducible simulated cohort: identities, round id and randomness from ``seed``."""
    identities = [
        identity_from_seed(b"fedrt/sim/identity/%d/%d" % (seed, i)) for i in range(clients)
    ]
    members = tuple(
        Member(device_id=f"sim-{i}", identity_key=key.public_key().public_bytes_raw())
        for i, key in enumerate(identities)
    )
    config = SecAggConfig(
        round_id=hashlib.sha256(b"fedrt/sim/round/%d" % seed).digest()[:ROUND_ID_BYTES],
        members=members,
        threshold=threshold,
        neighbors=neighbors,
        bits=bits,
        length=length,
    )
    machines = [
        SecAggClient(
            config,
            index=i,
            identity=key,
            random=SeededRandom(b"fedrt/sim/random/%d/%d" % (seed, i)),
        )
        for i, key in enumerate(identities)
    ]
    return config, machines


def run_in_memory(
    inputs: Sequence[npt.NDArray[np.unsignedinteger]],
    *,
    bits: int,
    threshold: int,
    neighbors: int,
    drop: Mapping[int, str] | None = None,
    seed: int = 0,
) -> Vector:
    """Sum mod 2**bits of the inputs whose masked input was included, via the real machines.

    ``inputs`` are equal-length unsigned arrays with values < 2**bits; ``neighbors`` is k
    (n - 1 is classic SecAgg); ``drop`` maps a device index to the stage name
    (``STAGE_NAMES``) before whose message it vanishes. The sum comes back as the ring's
    word type (uint16 up to 16 bits, then uint32, uint64). Raises ``RoundAborted`` when
    fewer than ``threshold`` devices (or holders of a needed secret) survive.
    """
    if len(inputs) < 2:
        raise ParameterError("need inputs of at least 2 devices")
    length = len(inputs[0])
    if any(len(x) != length for x in inputs):
        raise LengthError("inputs must all have the same length")
    stages: dict[int, Stage] = {}
    for index, name in (drop or {}).items():
        if not 0 <= index < len(inputs) or name not in STAGE_NAMES:
            raise ParameterError(f"bad drop entry {index}: {name!r} (stages: {STAGE_NAMES})")
        stages[index] = Stage(name)
    config, clients = make_cohort(
        len(inputs), length=length, bits=bits, threshold=threshold, neighbors=neighbors, seed=seed
    )
    for client, vector in zip(clients, inputs, strict=True):
        client.set_input(vector)
    return drive(SecAggServer(config), dict(enumerate(clients)), drop=stages)
