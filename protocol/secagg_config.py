"""SecAgg+ round parameters shared by every party, and the keys derived per device pair.

A round is fixed by ``SecAggConfig``: the round id, the ordered cohort (device ids with their
registered Ed25519 identity keys), threshold t, neighbour degree k, ring bits and vector
length. Device *indices* (positions in ``members``) name devices on the wire; the neighbour
graph is derived from the round id, so the server cannot choose it per device.

Pairwise derivations (HKDF-SHA256, salt = round id, info names purpose and the two indices):
  * mask key of {i, j}  = HKDF(X25519(s_i, s_j), "fedrt/secagg/v1/mask" || lo || hi)
  * share key of i -> j = HKDF(X25519(c_i, c_j), "fedrt/secagg/v1/share" || i || j)
Device i adds the mask of {i, j} when i < j and subtracts it when i > j, so the pair cancels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fedrt.protocol.crypto import KEY_BYTES, derive
from fedrt.protocol.errors import DuplicateDevice, ParameterError
from fedrt.protocol.graph import Graph, neighbor_graph, neighbors_of, validate_parameters

__all__ = [
    "ROUND_ID_BYTES",
    "Member",
    "SecAggConfig",
    "mask_key",
    "mask_sign",
    "share_aad",
    "share_key",
]

ROUND_ID_BYTES = 16
_PAIR = struct.Struct("<II")


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A selected device: its id and the Ed25519 public key it registered."""

    device_id: str
    identity_key: bytes

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ParameterError("device_id must not be empty")
        if len(self.identity_key) != KEY_BYTES:
            raise ParameterError(f"identity key of {self.device_id!r} must be 32 raw bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggConfig:
    """Everything client and server must agree on before the first message."""

    round_id: bytes
    members: tuple[Member, ...]
    threshold: int
    neighbors: int
    bits: int
    length: int

    def __post_init__(self) -> None:
        if len(self.round_id) != ROUND_ID_BYTES:
            raise ParameterError(f"round_id must be {ROUND_ID_BYTES} bytes")
        if len({m.device_id for m in self.members}) != len(self.members):
            raise DuplicateDevice("a device id appears twice in the cohort")
        if len({m.identity_key for m in self.members}) != len(self.members):
            raise DuplicateDevice("two cohort members share one identity key")
        validate_parameters(len(self.members), self.neighbors, self.threshold)
        if not 1 <= self.bits <= 64:
            raise ParameterError(f"ring bits must be in 1..64, got {self.bits}")
        if not 1 <= self.length < 2**32:
            raise ParameterError(f"vector length must be in 1..2**32-1, got {self.length}")

    @property
    def clients(self) -> int:
        """Number of devices in the cohort (n)."""
        return len(self.members)

    def graph(self) -> Graph:
        """Sorted neighbours of every device index (computed on each call: cache it)."""
        return neighbor_graph(self.clients, self.neighbors, self.round_id)

    def committee(self) -> range:
        """The devices whose signatures certify the survivor set: the first k + 1 indices.

        A device reveals shares only with t signatures from this committee on the set it
        signed itself. Since t > (k + 1) / 2, two different sets can never both gather t
        signatures from honest members, so every honest device that reveals anything acts on
        the same set. With classic SecAgg (k = n - 1) it is the whole cohort (Bonawitz et al.
        2017); in SecAgg+ it costs t signatures per device instead of a majority of n.
        """
        return range(min(self.clients, self.neighbors + 1))

    def neighbors_of(self, index: int) -> tuple[int, ...]:
        """Sorted neighbours of device ``index`` (what ``graph()[index]`` holds)."""
        return neighbors_of(self.clients, self.neighbors, self.round_id, index)


def mask_sign(own: int, peer: int) -> int:
    """+1 when ``own`` adds the pair mask, -1 when it subtracts it."""
    return 1 if own < peer else -1


def mask_key(shared: bytes, round_id: bytes, a: int, b: int) -> bytes:
    """The pairwise mask key of devices ``a`` and ``b`` (symmetric in a and b)."""
    info = b"fedrt/secagg/v1/mask" + _PAIR.pack(min(a, b), max(a, b))
    return derive(shared, salt=round_id, info=info)


def share_key(shared: bytes, round_id: bytes, sender: int, recipient: int) -> bytes:
    """The single-use AES-256-GCM key for ``sender``'s shares sealed to ``recipient``."""
    info = b"fedrt/secagg/v1/share" + _PAIR.pack(sender, recipient)
    return derive(shared, salt=round_id, info=info)


def share_aad(round_id: bytes, sender: int, recipient: int) -> bytes:
    """Associated data binding a sealed share to its round and endpoints."""
    return b"fedrt/secagg/v1/share" + round_id + _PAIR.pack(sender, recipient)
