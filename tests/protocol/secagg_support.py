"""Shared pieces of the SecAgg+ tests: a hand-driven round and an independent outcome oracle."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.protocol import codec
from fedrt.protocol.crypto import identity_from_seed, sign_digest
from fedrt.protocol.graph import neighbor_graph
from fedrt.protocol.messages import (
    ClientMessage,
    ConsistencyCheck,
    ConsistencyRequest,
    PeerSignature,
    UnmaskRequest,
)
from fedrt.protocol.prg import SeededRandom
from fedrt.protocol.secagg import SecAggClient, SecAggServer
from fedrt.protocol.secagg_config import Member, SecAggConfig

ABORT = "abort"


def identities(n: int, tag: bytes = b"test") -> list[Ed25519PrivateKey]:
    return [identity_from_seed(tag + b"/%d" % i) for i in range(n)]


def config_for(
    keys: Sequence[Ed25519PrivateKey],
    *,
    round_id: bytes = b"R" * 16,
    threshold: int = 3,
    neighbors: int | None = None,
    bits: int = 12,
    length: int = 6,
) -> SecAggConfig:
    members = tuple(
        Member(device_id=f"dev-{i}", identity_key=k.public_key().public_bytes_raw())
        for i, k in enumerate(keys)
    )
    return SecAggConfig(
        round_id=round_id,
        members=members,
        threshold=threshold,
        neighbors=len(keys) - 1 if neighbors is None else neighbors,
        bits=bits,
        length=length,
    )


@dataclasses.dataclass
class Round:
    """A round driven by hand, stage by stage, so tests can intercept any message."""

    config: SecAggConfig
    keys: list[Ed25519PrivateKey]
    clients: list[SecAggClient]
    server: SecAggServer
    inputs: list[npt.NDArray[np.uint64]]

    @classmethod
    def new(cls, n: int = 5, *, seed: int = 1, tag: bytes = b"test", **kw: object) -> Round:
        keys = identities(n, tag)
        config = config_for(keys, **kw)  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        inputs = [rng.integers(0, 2**config.bits, config.length, dtype=np.uint64) for _ in range(n)]
        clients = [
            SecAggClient(config, index=i, identity=k, random=SeededRandom(b"%d/%d" % (seed, i)))
            for i, k in enumerate(keys)
        ]
        for client, x in zip(clients, inputs, strict=True):
            client.set_input(x)
        return cls(config, keys, clients, SecAggServer(config), inputs)

    def advertise(self, skip: Sequence[int] = ()) -> dict[int, bytes]:
        for i, client in enumerate(self.clients):
            if i not in skip:
                self.server.receive(client.start())
        return self.server.close_stage()

    def step(self, outgoing: Mapping[int, bytes], skip: Sequence[int] = ()) -> dict[int, bytes]:
        """Feed server messages to clients, their replies to the server, close the stage."""
        for i, data in outgoing.items():
            if i not in skip:
                reply = self.clients[i].receive(data)
                assert reply is not None
                self.server.receive(reply)
        return self.server.close_stage()

    def replies(self, outgoing: Mapping[int, bytes]) -> dict[int, bytes]:
        """The clients' replies to ``outgoing`` without giving them to the server."""
        out = {}
        for i, data in outgoing.items():
            reply = self.clients[i].receive(data)
            assert reply is not None
            out[i] = reply
        return out

    def show(self, survivors: tuple[int, ...], to: Sequence[int]) -> dict[int, ConsistencyCheck]:
        """Act as a lying server: ask devices ``to`` to sign ``survivors``; their answers."""
        checks = {}
        for i in to:
            request = ConsistencyRequest(
                round_id=self.config.round_id, recipient=i, survivors=survivors
            )
            check = codec.decode(self.clients[i].receive(codec.encode(request)) or b"")
            assert isinstance(check, ConsistencyCheck)
            checks[i] = check
        return checks

    def unmask_request(
        self, recipient: int, survivors: tuple[int, ...], checks: Mapping[int, ConsistencyCheck]
    ) -> bytes:
        """An unmask request forwarding the committee's signatures in ``checks``."""
        signatures = tuple(
            PeerSignature(signer=j, signature=c.signature)
            for j, c in sorted(checks.items())
            if j != recipient and j in self.config.committee()
        )
        return codec.encode(
            UnmaskRequest(
                round_id=self.config.round_id,
                recipient=recipient,
                survivors=survivors,
                signatures=signatures,
            )
        )

    def expected(self, included: Sequence[int]) -> npt.NDArray[np.uint64]:
        total = np.zeros(self.config.length, dtype=np.uint64)
        for i in included:
            total += self.inputs[i]
        return total % np.uint64(1 << self.config.bits) if self.config.bits < 64 else total

    def resign(self, message: ClientMessage) -> bytes:
        """Re-sign a (tampered) message with its sender's real identity key."""
        signature = sign_digest(self.keys[message.sender], codec.signing_digest(message))
        return codec.encode(dataclasses.replace(message, signature=signature))


def oracle(
    n: int, k: int, t: int, seed_round_id: bytes, drop: Mapping[int, str]
) -> frozenset[int] | str:
    """Who ends up included, or ABORT, restated from the protocol description.

    Every device holds shares of its own secrets and its k neighbours'. A device aborts
    for itself when fewer than t holders (itself included) are live in its view; the server
    aborts when a stage ends with fewer than t devices or a needed secret has fewer than t
    live holders, or fewer than t of the committee (the first k + 1 devices) sign the set.
    """
    graph = [set(row) for row in neighbor_graph(n, k, seed_round_id)]
    u1 = {i for i in range(n) if drop.get(i) != "advertise_keys"}
    if len(u1) < t:
        return ABORT
    u2 = {i for i in u1 if drop.get(i) != "share_keys" and len(graph[i] & u1) + 1 >= t}
    if len(u2) < t:
        return ABORT
    u3 = {i for i in u2 if drop.get(i) != "masked_input" and len(graph[i] & u2) + 1 >= t}
    if len(u3) < t:
        return ABORT
    secrets = {u: (graph[u] | {u}) for u in u3}
    secrets |= {j: graph[j] for j in u2 - u3 if graph[j] & u3}
    if any(len(h & u3) < t for h in secrets.values()):
        return ABORT
    u4 = {i for i in u3 if drop.get(i) != "consistency_check"}
    if len(u4) < t or len(u4 & set(range(k + 1))) < t:  # the committee: first k + 1
        return ABORT
    if any(len(h & u4) < t for h in secrets.values()):
        return ABORT
    u5 = {i for i in u4 if drop.get(i) != "unmask"}
    if len(u5) < t or any(len(h & u5) < t for h in secrets.values()):
        return ABORT
    return frozenset(u3)
