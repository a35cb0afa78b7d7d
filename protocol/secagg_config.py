"""SecAgg+ round parameters shared by every party, and the keys derived per device pair.

A round is fixed by ``SecAggConfig``: the round id, the ordered cohort (device ids with their
registered Ed25519 identity keys), threshold t, neighbour degree k, ring bits and vector
length. Device *indices* (positions in ``members``) name devices on the wire; the neighbour
graph is derived from the round id, so the server cannot choose it per device.

Pairwise derivations (HKDF-SHA256, salt = round id, info names purpose and the two indices):
  * mask key of {i, j}  = HKDF(X25519(s_i, s_j), "fedrt/secagg/v1/mask" || lo || hi)
  * share key of i -> j = HKDF(X25519(c_i, c_j), "fedrt/secagg/v1/share" || i || j)
Device i adds the mask of {i, j} when i < j and subtracts it when i > j, so the pair cancels.
A device's two shared secrets are 127-bit seeds (``shamir.new_secret``), expanded with
HKDF-SHA256 (salt = round id): the self-mask key = HKDF(b_i, "fedrt/secagg/v2/self-mask"),
and the masking private key s_i = HKDF(seed_i, "fedrt/secagg/v2/masking-key"). The first
t - 1 holders (in index order) of i's shares derive theirs from the share key of i -> j
(``derived_shares``) instead of receiving them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrt.protocol import shamir
from fedrt.protocol.crypto import KEY_BYTES, derive
from fedrt.protocol.errors import DuplicateDevice, ParameterError
from fedrt.protocol.graph import Graph, neighbor_graph, neighbors_of, validate_parameters

__all__ = [
    "ROUND_ID_BYTES",
    "Member",
    "SecAggConfig",
    "derived_shares",
    "mask_key",
    "mask_sign",
    "masking_private_key",
    "self_mask_key",
    "share_aad",
    "share_key",
]

ROUND_ID_BYTES = 16
_PAIR = struct.Struct("<II")
_DERIVED_BYTES = 2 * shamir.CHUNKS * 16


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


def self_mask_key(seed: bytes, round_id: bytes) -> bytes:
    """The AES-256 key of a device's self mask, from its 127-bit seed b_i."""
    return derive(seed, salt=round_id, info=b"fedrt/secagg/v2/self-mask")


def masking_private_key(seed: bytes, round_id: bytes) -> X25519PrivateKey:
    """A device's masking key pair s_i, from the 127-bit seed that is secret-shared."""
    raw = derive(seed, salt=round_id, info=b"fedrt/secagg/v2/masking-key")
    return X25519PrivateKey.from_private_bytes(raw)


def derived_shares(keys: Sequence[bytes]) -> shamir.Field:
    """The (len(keys), 2, CHUNKS) shares (seed, masking seed) holders derive from share keys.

    HKDF-SHA256 output read as field elements (``shamir.field_from_words``); each key is the
    single-use share key of dealer -> holder, which nobody else can compute.
    """
    info = b"fedrt/secagg/v2/derived-shares"
    data = b"".join(derive(key, salt=b"", info=info, length=_DERIVED_BYTES) for key in keys)
    return shamir.field_from_words(data).reshape(len(keys), 2, shamir.CHUNKS)


def seed_digest(seed: bytes, round_id: bytes) -> bytes:
    """The commitment to a self-mask seed: SHA-256 truncated to 128 bits.

    The server checks reconstructed seeds against it to catch bad shares; 128 bits keep a
    second preimage out of reach (2**128) for a holder that corrupts its share. Only the
    dealer could look for a collision (2**64), and a dealer can spoil its own input anyway.
    """
    return hashlib.sha256(b"fedrt/secagg/v2/seed" + round_id + seed).digest()[:16]
