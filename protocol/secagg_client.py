"""The device side of SecAgg+: a sans-I/O state machine fed server messages as bytes.

Theory of operation. ``SecAggClient`` is in the stage whose message it sends next:

    ADVERTISE_KEYS --start()--> SHARE_KEYS --KeysBroadcast--> MASKED_INPUT
    MASKED_INPUT --SharesRelay + set_input()--> CONSISTENCY_CHECK
    CONSISTENCY_CHECK --ConsistencyRequest--> UNMASK --UnmaskRequest--> DONE
    (any stage) --fewer than t usable neighbours--> ABORTED (raises RoundAborted)
    UNMASK --set not certified by t committee members--> ABORTED (ConsistencyCheckFailed)

``start()`` returns the signed ``AdvertiseKeys``; ``receive(data)`` checks one server message
and returns the device's signed reply (``None`` only while the relay waits for
``set_input``). A message that fails any check raises a ``ProtocolError`` subclass and
leaves the client as it was. A device holds shares of its neighbours' secrets and of its
own, and keeps four rules that protect it from a lying server: it answers each stage once;
in the unmask stage it reveals for every peer either the seed share (peer included) or the
key share (peer dropped), never both; it answers only if it is itself listed as included
(so it never reveals its own key share) with at least t holders in all; and (Bonawitz et al.
2017's consistency check) it signs the included set U3 once, then reveals only for that very
set and only with valid signatures on it from t members of the committee
(``SecAggConfig.committee``, itself counted when it is a member).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrt.protocol import codec, shamir
from fedrt.protocol.bitpack import pack, word_dtype
from fedrt.protocol.crypto import (
    SHARE_TAG_BYTES,
    IdentityVerifier,
    agree,
    new_x25519,
    open_sealed,
    seal,
    sign_digest,
    x25519_public,
)
from fedrt.protocol.errors import (
    ConsistencyCheckFailed,
    ConsistencyError,
    DuplicateDevice,
    DuplicateMessage,
    DuplicateShare,
    LengthError,
    ParameterError,
    ReplayError,
    RoundAborted,
    StageError,
    UnknownDevice,
)
from fedrt.protocol.messages import (
    STAGE_OF,
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    ConsistencyRequest,
    KeysBroadcast,
    MaskedInput,
    RevealedShare,
    ShareKeys,
    ShareKind,
    SharesRelay,
    Stage,
    UnmaskRequest,
    UnmaskShares,
)
from fedrt.protocol.prg import MaskAccumulator, RandomSource, system_random
from fedrt.protocol.secagg_config import (
    SecAggConfig,
    derived_shares,
    mask_key,
    mask_sign,
    masking_private_key,
    seed_digest,
    self_mask_key,
    share_aad,
    share_key,
)

__all__ = ["SecAggClient"]

_Signed = TypeVar("_Signed", AdvertiseKeys, ShareKeys, MaskedInput, ConsistencyCheck, UnmaskShares)


@dataclass(frozen=True, slots=True)
class _Peer:
    masking_key: bytes
    inbound_key: bytes  # AES-GCM key of the shares this peer seals to us


_LATE = frozenset({Stage.CONSISTENCY_CHECK, Stage.UNMASK, Stage.DONE, Stage.ABORTED})


class SecAggClient:
    """One device's SecAgg+ state machine for one round."""

    def __init__(
        self,
        config: SecAggConfig,
        *,
        index: int,
        identity: Ed25519PrivateKey,
        random: RandomSource = system_random,
    ) -> None:
        if not 0 <= index < config.clients:
            raise UnknownDevice(f"index {index} is not in the cohort of {config.clients}")
        own = identity.public_key().public_bytes_raw()
        if own != config.members[index].identity_key:
            raise ParameterError("identity key differs from the one registered for this index")
        self.config = config
        self.index = index
        self.stage = Stage.ADVERTISE_KEYS
        self._identity = identity
        self._random = random
        self._neighbors = frozenset(config.neighbors_of(index))
        # A device checks k neighbours' key adverts and t committee signatures a round, about
        # half of its SecAgg+ CPU time through OpenSSL: libsodium's check first when PyNaCl
        # is installed, with OpenSSL deciding whatever libsodium rejects (``IdentityVerifier``).
        self._identities = {
            j: IdentityVerifier(config.members[j].identity_key) for j in self._neighbors
        }
        self._committee = {
            j: self._identities.get(j) or IdentityVerifier(config.members[j].identity_key)
            for j in config.committee()
            if j != index
        }
        self._encryption: X25519PrivateKey | None = None
        self._masking: X25519PrivateKey | None = None
        self._peers: dict[int, _Peer] = {}
        self._seed = b""
        self._masking_seed = b""
        self._own = (b"", b"")  # this device's shares of its own seed and key
        self._held: dict[int, tuple[bytes, bytes]] = {}  # peer -> (seed share, key share)
        self._input: npt.NDArray[np.unsignedinteger] | None = None
        self._relayed = False
        self._signed: tuple[int, ...] | None = None  # the one set U3 this device signed

    # -- public API -----------------------------------------------------------------------

    def start(self) -> bytes:
        """Create this round's key pairs and return the signed ``AdvertiseKeys``."""
        self._expect(Stage.ADVERTISE_KEYS)
        encryption = new_x25519(self._random)
        masking_seed = shamir.new_secret(self._random)
        masking = masking_private_key(masking_seed, self.config.round_id)
        message = self._sign(
            AdvertiseKeys(
                round_id=self.config.round_id,
                sender=self.index,
                encryption_key=x25519_public(encryption),
                masking_key=x25519_public(masking),
            )
        )
        self._encryption, self._masking, self._masking_seed = encryption, masking, masking_seed
        self.stage = Stage.SHARE_KEYS
        return codec.encode(message)

    def set_input(self, vector: npt.NDArray[np.unsignedinteger]) -> bytes | None:
        """Give the vector to aggregate (values < 2**bits); returns the masked input if due."""
        if self._input is not None or self.stage in _LATE:
            raise StageError(f"no input accepted now (stage {self.stage.value})")
        values = np.asarray(vector)
        if values.ndim != 1 or values.dtype.kind != "u":
            raise ParameterError("input must be a 1-d array of unsigned integers")
        if values.size != self.config.length:
            raise LengthError(
                f"input has {values.size} values, the round needs {self.config.length}"
            )
        if values.size and self.config.bits < 64 and int(values.max()) >> self.config.bits:
            raise ParameterError(f"an input value does not fit in {self.config.bits} bits")
        self._input = values.astype(word_dtype(self.config.bits), copy=True)
        return self._masked_input() if self._relayed else None

    def receive(self, data: bytes) -> bytes | None:
        """Check one server message and return this device's reply to it."""
        message = codec.decode(data)
        if isinstance(message, ClientMessage):
            raise StageError(f"{type(message).__name__} is a client message")
        if message.round_id != self.config.round_id:
            raise ReplayError("message belongs to another round")
        if message.recipient != self.index:
            raise UnknownDevice(f"message is addressed to device {message.recipient}")
        if isinstance(message, SharesRelay) and self._relayed:
            raise DuplicateMessage("the shares were already relayed")
        self._expect(STAGE_OF[type(message)])
        if isinstance(message, KeysBroadcast):
            return self._on_keys(message)
        if isinstance(message, SharesRelay):
            return self._on_relay(message)
        if isinstance(message, ConsistencyRequest):
            return self._on_consistency(message)
        return self._on_request(message)

    # -- stages ---------------------------------------------------------------------------

    def _on_keys(self, message: KeysBroadcast) -> bytes:
        adverts: dict[int, AdvertiseKeys] = {}
        seen_keys = {x25519_public(k) for k in (self._encryption, self._masking) if k}
        for advert in message.keys:
            if advert.sender not in self._neighbors:
                raise UnknownDevice(f"device {advert.sender} is not a neighbour")
            if advert.sender in adverts:
                raise DuplicateDevice(f"device {advert.sender} advertised twice")
            self._identities[advert.sender].verify(advert.signature, codec.signing_digest(advert))
            for key in (advert.encryption_key, advert.masking_key):
                if key in seen_keys:
                    raise DuplicateDevice("a public key appears twice in this round")
                seen_keys.add(key)
            adverts[advert.sender] = advert
        rid, me, t = self.config.round_id, self.index, self.config.threshold
        self._require(len(adverts) + 1, Stage.SHARE_KEYS)  # a device holds its own shares too
        assert self._encryption is not None
        seed = shamir.new_secret(self._random)
        secrets = shamir.secrets_to_field([seed, self._masking_seed])
        neighbours = sorted(adverts)
        peers, outbound = {}, {}
        for j in neighbours:
            shared = agree(self._encryption, adverts[j].encryption_key)
            outbound[j] = share_key(shared, rid, me, j)
            peers[j] = _Peer(adverts[j].masking_key, share_key(shared, rid, j, me))
        # The first t - 1 neighbours derive their shares; the polynomials go through those.
        derived, sent = neighbours[: t - 1], neighbours[t - 1 :]
        fixed = derived_shares([outbound[j] for j in derived])  # t >= 2: never empty
        shares = shamir.split_through(
            secrets, [j + 1 for j in derived], fixed, [x + 1 for x in [me, *sent]]
        )
        own = shamir.share_to_bytes(shares[0].ravel())
        sealed = tuple(
            seal(
                outbound[j],
                shamir.share_to_bytes(shares[row].ravel()),
                share_aad(rid, me, j),
                tag_bytes=SHARE_TAG_BYTES,
            )
            for row, j in enumerate(sent, start=1)
        )
        reply = self._sign(
            ShareKeys(
                round_id=rid,
                sender=me,
                seed_digest=seed_digest(seed, rid),
                ciphertexts=sealed,
            )
        )
        self._peers, self._seed = peers, seed
        self._own = (own[: shamir.SHARE_BYTES], own[shamir.SHARE_BYTES :])
        self._masking_seed = b""
        self.stage = Stage.MASKED_INPUT
        return codec.encode(reply)

    def _on_relay(self, message: SharesRelay) -> bytes | None:
        plain: dict[int, bytes] = {}
        derived: list[int] = []
        rid = self.config.round_id
        for item in message.shares:
            peer = self._peers.get(item.peer)
            if peer is None:
                raise UnknownDevice(f"device {item.peer} did not advertise keys to this device")
            if item.peer in plain or item.peer in derived:
                raise DuplicateShare(f"two ciphertexts from device {item.peer}")
            if not item.ciphertext:
                derived.append(item.peer)  # one of the dealer's first t - 1 holders
                continue
            aad = share_aad(rid, item.peer, self.index)
            plain[item.peer] = open_sealed(
                peer.inbound_key, item.ciphertext, aad, tag_bytes=SHARE_TAG_BYTES
            )
        if derived:
            values = derived_shares([self._peers[j].inbound_key for j in derived])
            for j, row in zip(derived, values, strict=True):
                plain[j] = shamir.share_to_bytes(row.ravel())
        shamir.check_shares(b"".join(plain.values()))
        size = shamir.SHARE_BYTES
        held = {j: (data[:size], data[size:]) for j, data in plain.items()}
        held[self.index] = self._own
        self._require(len(held), Stage.MASKED_INPUT)
        self._held, self._relayed = held, True
        return self._masked_input() if self._input is not None else None

    def _masked_input(self) -> bytes:
        assert self._input is not None
        assert self._masking is not None
        config = self.config
        masked = MaskAccumulator(self._input)
        masked.add(self_mask_key(self._seed, config.round_id))
        for peer in sorted(self._peers.keys() & self._held.keys()):
            shared = agree(self._masking, self._peers[peer].masking_key)
            masked.add(
                mask_key(shared, config.round_id, self.index, peer),
                sign=mask_sign(self.index, peer),
            )
        values = masked.values
        if config.bits < values.dtype.itemsize * 8:
            np.bitwise_and(values, values.dtype.type((1 << config.bits) - 1), out=values)
        reply = self._sign(
            MaskedInput(
                round_id=config.round_id,
                sender=self.index,
                bits=config.bits,
                length=config.length,
                payload=pack(values, config.bits, check=False),
            )
        )
        # The seed and the masking key are no longer needed: drop them with the input.
        self._input, self._seed, self._masking = None, b"", None
        self.stage = Stage.CONSISTENCY_CHECK
        return codec.encode(reply)

    def _local_view(self, survivors: tuple[int, ...]) -> frozenset[int]:
        """The holders (this device and its neighbours) that ``survivors`` lists as included."""
        listed = set(survivors)
        if len(listed) != len(survivors):
            raise DuplicateDevice("a survivor is listed twice")
        local = frozenset(listed & (self._neighbors | {self.index}))
        strangers = local - self._held.keys()
        if strangers:
            raise ConsistencyError(f"survivors {sorted(strangers)} did not share with this device")
        if self.index not in local:
            # Otherwise this device would reveal a share of its own masking key.
            raise ConsistencyError("this device is asked to unmask but not listed as included")
        return local

    def _on_consistency(self, message: ConsistencyRequest) -> bytes:
        local = self._local_view(message.survivors)
        self._require(len(local), Stage.CONSISTENCY_CHECK)
        reply = self._sign(
            ConsistencyCheck(
                round_id=self.config.round_id, sender=self.index, survivors=message.survivors
            )
        )
        self._signed = message.survivors
        self.stage = Stage.UNMASK
        return codec.encode(reply)

    def _certified(self, message: UnmaskRequest) -> frozenset[int]:
        """The local view of the set this device signed, once t committee members signed it."""
        if message.survivors != self._signed:
            self._fail("the unmask request names another survivor set than the one signed")
        local = self._local_view(message.survivors)
        committee = self.config.committee()
        signers = [s.signer for s in message.signatures]
        if len(set(signers)) != len(signers):
            raise DuplicateDevice("two signatures of one device")
        listed = set(message.survivors) - {self.index}
        if not all(j in committee and j in listed for j in signers):
            raise UnknownDevice("a signature is not from an included committee member")
        for item in message.signatures:
            signed = ConsistencyCheck(
                round_id=self.config.round_id, sender=item.signer, survivors=message.survivors
            )
            digest = codec.signing_digest(signed)
            self._committee[item.signer].verify(item.signature, digest)
        count = len(signers) + (self.index in committee)
        if count < self.config.threshold:
            self._fail(
                f"only {count} committee members signed the survivor set, "
                f"threshold is {self.config.threshold}",
                signed=count,
            )
        return local

    def _on_request(self, message: UnmaskRequest) -> bytes:
        survivors = self._certified(message)
        revealed = tuple(
            RevealedShare(owner=peer, kind=ShareKind.SEED, share=pair[0])
            if peer in survivors
            else RevealedShare(owner=peer, kind=ShareKind.KEY, share=pair[1])
            for peer, pair in sorted(self._held.items())
        )
        reply = self._sign(
            UnmaskShares(round_id=self.config.round_id, sender=self.index, shares=revealed)
        )
        self._held = {}
        self.stage = Stage.DONE
        return codec.encode(reply)

    # -- helpers --------------------------------------------------------------------------

    def _fail(self, why: str, *, signed: int = 0) -> NoReturn:
        self.stage = Stage.ABORTED
        self._held = {}
        raise ConsistencyCheckFailed(
            why, stage=Stage.UNMASK.value, survivors=signed, threshold=self.config.threshold
        )

    def _expect(self, stage: Stage) -> None:
        if self.stage is not stage:
            raise StageError(f"client is in stage {self.stage.value}, not {stage.value}")

    def _require(self, available: int, stage: Stage) -> None:
        if available < self.config.threshold:
            self.stage = Stage.ABORTED
            raise RoundAborted(
                f"only {available} usable neighbours in {stage.value}, "
                f"threshold is {self.config.threshold}",
                stage=stage.value,
                survivors=available,
                threshold=self.config.threshold,
            )

    def _sign(self, message: _Signed) -> _Signed:
        return replace(
            message, signature=sign_digest(self._identity, codec.signing_digest(message))
        )
