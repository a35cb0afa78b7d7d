"""The SecAgg+ wire vocabulary: one frozen dataclass per message, shared by both sides.

Client -> server messages name their ``sender`` (the device's index in the cohort) and carry
an Ed25519 ``signature`` by the device's long-term identity key over the SHA-256 digest of
their encoding (see ``codec.signing_digest``). Server -> client messages name their
``recipient``; what they relay is either signed by the peer (``AdvertiseKeys``,
``PeerSignature``) or sealed between the two devices (``EncryptedShare``). Every message
carries the round id, and its type fixes the stage it belongs to (``STAGE_OF``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "STAGE_OF",
    "AdvertiseKeys",
    "ClientMessage",
    "ConsistencyCheck",
    "ConsistencyRequest",
    "EncryptedShare",
    "KeysBroadcast",
    "MaskedInput",
    "Message",
    "PeerSignature",
    "RevealedShare",
    "ServerMessage",
    "ShareKeys",
    "ShareKind",
    "SharesRelay",
    "Stage",
    "UnmaskRequest",
    "UnmaskShares",
]


class Stage(enum.Enum):
    """Protocol stages in order; a machine in stage S waits for (or sends) S's messages."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


class ShareKind(enum.IntEnum):
    """Which secret a revealed share belongs to."""

    SEED = 0  # self-mask seed b_i of a device whose masked input was included
    KEY = 1  # masking private key s_i of a device that dropped after sharing


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys:
    """Stage 1, client -> server: the device's two fresh X25519 public keys for this round."""

    round_id: bytes
    sender: int
    encryption_key: bytes  # c_i: agrees the AES-GCM keys for shares, never revealed
    masking_key: bytes  # s_i: agrees the pairwise masks, its private half is secret-shared
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedShare:
    """A pair of shares (seed and key) from dealer ``peer`` to the relay's recipient.

    ``ciphertext`` is the sealed pair, or empty when the recipient is one of the dealer's
    first t - 1 holders and derives its shares from the pairwise key instead.
    """

    peer: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys:
    """Stage 2, client -> server: sealed shares for the neighbours, a commitment to the seed.

    The holders are the sender's neighbours that advertised keys, in index order; the first
    t - 1 derive their shares, so ``ciphertexts`` holds one sealed pair for each of the rest,
    in that order (the server knows the order, so no recipient ids travel).
    """

    round_id: bytes
    sender: int
    seed_digest: bytes  # SHA-256 of the self-mask seed: the server checks reconstructions
    ciphertexts: tuple[bytes, ...]
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInput:
    """Stage 3, client -> server: the masked vector, bit-packed to ``bits`` per coordinate."""

    round_id: bytes
    sender: int
    bits: int
    length: int
    payload: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyCheck:
    """Stage 4, client -> server: the device signs the included set U3 it was shown.

    ``survivors`` is the whole cohort's included set (sorted, unique), not the device's
    neighbourhood: every honest device signs exactly one set per round, so the signatures a
    device later checks prove which set its neighbours saw.
    """

    round_id: bytes
    sender: int
    survivors: tuple[int, ...]
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class RevealedShare:
    """One plaintext share a device reveals for its neighbour ``owner``."""

    owner: int
    kind: ShareKind
    share: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskShares:
    """Stage 5, client -> server: one share per holder's peer (and itself), seed or key.

    ``shares`` are sorted by owner, one per owner (the codec sends the owners as a set).
    """

    round_id: bytes
    sender: int
    shares: tuple[RevealedShare, ...]
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysBroadcast:
    """Server -> client after stage 1: the signed keys of the recipient's live neighbours."""

    round_id: bytes
    recipient: int
    keys: tuple[AdvertiseKeys, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SharesRelay:
    """Server -> client after stage 2: the ciphertexts addressed to the recipient."""

    round_id: bytes
    recipient: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyRequest:
    """Server -> client after stage 3: the included set U3 (sorted, unique) to sign."""

    round_id: bytes
    recipient: int
    survivors: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSignature:
    """A neighbour's ``ConsistencyCheck`` signature, forwarded by the server."""

    signer: int
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest:
    """Server -> client after stage 4: the signed set U3 and the neighbours' signatures on it."""

    round_id: bytes
    recipient: int
    survivors: tuple[int, ...]
    signatures: tuple[PeerSignature, ...] = ()


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | ConsistencyCheck | UnmaskShares
ServerMessage = KeysBroadcast | SharesRelay | ConsistencyRequest | UnmaskRequest
Message = ClientMessage | ServerMessage

STAGE_OF: dict[type[Message], Stage] = {
    AdvertiseKeys: Stage.ADVERTISE_KEYS,
    ShareKeys: Stage.SHARE_KEYS,
    MaskedInput: Stage.MASKED_INPUT,
    ConsistencyCheck: Stage.CONSISTENCY_CHECK,
    UnmaskShares: Stage.UNMASK,
    KeysBroadcast: Stage.SHARE_KEYS,
    SharesRelay: Stage.MASKED_INPUT,
    ConsistencyRequest: Stage.CONSISTENCY_CHECK,
    UnmaskRequest: Stage.UNMASK,
}
"""The stage a message belongs to; server messages open the stage they name."""
