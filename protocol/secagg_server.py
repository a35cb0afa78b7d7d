"""The coordinator side of SecAgg+: a sans-I/O state machine that never sees an input.

Theory of operation. ``SecAggServer`` collects one stage's client messages at a time:

    ADVERTISE_KEYS -> SHARE_KEYS -> MASKED_INPUT -> CONSISTENCY_CHECK -> UNMASK -> DONE
    (any stage) -> ABORTED

``receive(data)`` checks one client message (round, stage, sender, duplicates, signature,
content) and stores it, or raises a ``ProtocolError`` subclass and stores nothing. The
coordinator calls ``close_stage()`` when ``waiting_for`` is empty or the stage's deadline
passes: whoever answered goes on, and the call returns the messages to relay, keyed by the
recipient's device index. With U1..U5 the devices that answered each stage, U3's masked
inputs are summed; every device in U3 is shown U3 and signs it (U4); the unmask request goes
to each signer with t committee members' signatures on U3 (a device reveals nothing without
them, see ``SecAggConfig.committee``), or the round aborts; unmasking needs, for every u
in U3, t seed shares from u and its neighbours in U5, and for every dropped j in U2 \\ U3
with a neighbour in U3, t key shares. When a stage closes with fewer than t devices, or
fewer than t holders able to reveal a needed secret, ``close_stage`` raises ``RoundAborted``
and the server moves to ABORTED.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from fedrt.protocol import codec, shamir
from fedrt.protocol.bitpack import unpack_add, word_dtype
from fedrt.protocol.crypto import IdentityVerifier, agree, x25519_public
from fedrt.protocol.errors import (
    ConsistencyError,
    DuplicateDevice,
    DuplicateMessage,
    DuplicateShare,
    LengthError,
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
    PeerSignature,
    ShareKeys,
    ShareKind,
    SharesRelay,
    Stage,
    UnmaskRequest,
    UnmaskShares,
)
from fedrt.protocol.prg import MaskAccumulator
from fedrt.protocol.secagg_config import (
    SecAggConfig,
    mask_key,
    mask_sign,
    masking_private_key,
    seed_digest,
    self_mask_key,
)

__all__ = ["SecAggServer"]

Vector = npt.NDArray[np.unsignedinteger]
_NEXT = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.CONSISTENCY_CHECK,
    Stage.CONSISTENCY_CHECK: Stage.UNMASK,
    Stage.UNMASK: Stage.DONE,
}


class SecAggServer:
    """The server's SecAgg+ state machine for one round; it learns only the sum."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.stage = Stage.ADVERTISE_KEYS
        self._graph = tuple(frozenset(row) for row in config.graph())
        # Holders of a device's shares: its neighbours and itself.
        self._holders = tuple(row | {i} for i, row in enumerate(self._graph))
        self._identities = [IdentityVerifier(m.identity_key) for m in config.members]
        self._expected: frozenset[int] = frozenset(range(config.clients))
        self._keys: dict[int, AdvertiseKeys] = {}
        self._entries: dict[int, bytes] = {}  # each device's keys as KeysBroadcast carries them
        self._public_keys: set[bytes] = set()
        self._shares: dict[int, ShareKeys] = {}
        self._sealed_to: dict[int, list[int]] = {}
        self._masked: set[int] = set()
        self._sum: Vector | None = None
        self._scratch: Vector | None = None  # shifted words of one masked input at a time
        self._view: tuple[int, ...] = ()  # U3 as shown to every device in it
        self._signatures: dict[int, bytes] = {}
        self._revealed: dict[int, dict[int, bytes]] = {}
        self._result: Vector | None = None
        self._bad: set[int] = set()

    # -- public API -----------------------------------------------------------------------

    @property
    def waiting_for(self) -> frozenset[int]:
        """Devices expected in this stage that have not answered yet."""
        return self._expected - frozenset(self._answered())

    @property
    def included(self) -> frozenset[int]:
        """Devices whose masked input is in the sum (known once MASKED_INPUT closed)."""
        if self.stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT):
            raise StageError("the included devices are known once the masked-input stage closed")
        return frozenset(self._masked)

    @property
    def bad_holders(self) -> frozenset[int]:
        """Devices that revealed a wrong share (found when the unmask stage closed)."""
        return frozenset(self._bad)

    @property
    def result(self) -> Vector:
        """The sum mod 2**bits of the included devices' inputs (``bitpack.word_dtype(bits)``)."""
        if self._result is None:
            raise StageError(f"no result in stage {self.stage.value}")
        return self._result

    def receive(self, data: bytes) -> None:
        """Check and store one client message; on any error nothing is stored."""
        message = codec.decode(data)
        if not isinstance(message, ClientMessage):
            raise StageError(f"{type(message).__name__} is a server message")
        if message.round_id != self.config.round_id:
            raise ReplayError("message belongs to another round")
        sender = message.sender
        if not 0 <= sender < self.config.clients:
            raise UnknownDevice(f"device index {sender} is not in the cohort")
        if STAGE_OF[type(message)] is not self.stage:
            raise StageError(f"{type(message).__name__} arrived in stage {self.stage.value}")
        if sender not in self._expected:
            raise StageError(f"device {sender} is not part of stage {self.stage.value}")
        if sender in self._answered():
            raise DuplicateMessage(f"device {sender} already answered {self.stage.value}")
        self._identities[sender].verify(message.signature, codec.wire_digest(data))
        if isinstance(message, AdvertiseKeys):
            self._on_advertise(message)
        elif isinstance(message, ShareKeys):
            self._on_share_keys(message)
        elif isinstance(message, MaskedInput):
            self._on_masked_input(message)
        elif isinstance(message, ConsistencyCheck):
            self._on_consistency(message)
        else:
            self._on_unmask(message)

    def close_stage(self) -> dict[int, bytes]:
        """End the stage with whoever answered; return the messages for the next one."""
        if self.stage not in _NEXT:
            raise StageError(f"nothing to close in stage {self.stage.value}")
        answered = frozenset(self._answered())
        self._check(len(answered) >= self.config.threshold, f"{len(answered)} devices answered")
        if self.stage is Stage.ADVERTISE_KEYS:
            outgoing = self._broadcast_keys(answered)
        elif self.stage is Stage.SHARE_KEYS:
            outgoing = self._relay_shares(answered)
        elif self.stage is Stage.MASKED_INPUT:
            outgoing = self._request_consistency(answered)
        elif self.stage is Stage.CONSISTENCY_CHECK:
            outgoing = self._request_unmask(answered)
        else:
            self._result = self._unmask(answered)
            outgoing = {}
        # Only the devices sent a request are heard from in the next stage.
        self._expected = frozenset(outgoing) if outgoing else answered
        self.stage = _NEXT[self.stage]
        return outgoing

    # -- receiving ------------------------------------------------------------------------

    def _answered(self) -> Collection[int]:
        """The devices heard from in this stage (a live view: copy it to keep it)."""
        if self.stage is Stage.ADVERTISE_KEYS:
            return self._keys.keys()
        if self.stage is Stage.SHARE_KEYS:
            return self._shares.keys()
        if self.stage is Stage.MASKED_INPUT:
            return self._masked
        if self.stage is Stage.CONSISTENCY_CHECK:
            return self._signatures.keys()
        return self._revealed.keys()

    def _on_advertise(self, message: AdvertiseKeys) -> None:
        keys = {message.encryption_key, message.masking_key}
        if len(keys) != 2 or keys & self._public_keys:
            raise DuplicateDevice("a public key was already advertised in this round")
        self._keys[message.sender] = message
        self._entries[message.sender] = codec.keys_entry(message)  # sent to every neighbour
        self._public_keys |= keys

    def _on_share_keys(self, message: ShareKeys) -> None:
        expected = len(self._sealed_to[message.sender])
        if len(message.ciphertexts) != expected:
            raise ConsistencyError(
                f"{len(message.ciphertexts)} sealed shares, the advertised neighbours need "
                f"{expected}"
            )
        self._shares[message.sender] = message

    def _on_masked_input(self, message: MaskedInput) -> None:
        if message.bits != self.config.bits or message.length != self.config.length:
            raise LengthError(
                f"masked input is {message.length} x {message.bits} bits, "
                f"the round needs {self.config.length} x {self.config.bits}"
            )
        if self._sum is None or self._scratch is None:
            self._sum = np.zeros(message.length, dtype=word_dtype(message.bits))
            self._scratch = np.empty_like(self._sum)
        # Words are summed modulo 2**W only; _unmask reduces to the ring once at the end.
        unpack_add(message.payload, message.bits, message.length, self._sum, scratch=self._scratch)
        self._masked.add(message.sender)

    def _on_consistency(self, message: ConsistencyCheck) -> None:
        if message.survivors != self._view:
            raise ConsistencyError("the device signed another survivor set than the one sent")
        self._signatures[message.sender] = message.signature

    def _on_unmask(self, message: UnmaskShares) -> None:
        sender = message.sender
        revealed = {item.owner: item.share for item in message.shares}
        if len(revealed) != len(message.shares):
            raise DuplicateShare("two shares for one owner in one message")
        if revealed.keys() != self._holders[sender] & self._shares.keys():
            raise ConsistencyError("shares must cover exactly the neighbours that shared, and self")
        for item in message.shares:
            want = ShareKind.SEED if item.owner in self._masked else ShareKind.KEY
            if item.kind is not want:
                raise ConsistencyError(f"device {item.owner} needs a {want.name} share")
        shamir.check_shares(b"".join(revealed.values()))
        self._revealed[sender] = revealed

    # -- closing --------------------------------------------------------------------------

    def _check(self, ok: bool, why: str) -> None:
        if not ok:
            self._abort(why)

    def _abort(self, why: str) -> NoReturn:
        stage, survivors = self.stage, len(self._answered())
        self.stage = Stage.ABORTED
        raise RoundAborted(
            f"round aborted in {stage.value}: {why} (threshold {self.config.threshold})",
            stage=stage.value,
            survivors=survivors,
            threshold=self.config.threshold,
        )

    def _broadcast_keys(self, live: frozenset[int]) -> dict[int, bytes]:
        rid, t = self.config.round_id, self.config.threshold
        outgoing = {}
        for i in sorted(live):
            neighbours = sorted(self._graph[i] & live)
            # Each dealer seals shares to its advertised neighbours after the first t - 1
            # (which derive theirs), in index order.
            self._sealed_to[i] = neighbours[t - 1 :]
            entries = [self._entries[j] for j in neighbours]
            outgoing[i] = codec.encode_entries(KeysBroadcast, rid, i, entries)
        return outgoing

    def _relay_shares(self, live: frozenset[int]) -> dict[int, bytes]:
        inbox: dict[int, list[bytes]] = {i: [] for i in live}
        for sender in sorted(live):
            sealed = dict(
                zip(self._sealed_to[sender], self._shares[sender].ciphertexts, strict=True)
            )
            derive = codec.relay_entry(sender, b"")  # tells a holder to derive its share
            for holder in sorted(self._graph[sender] & live):
                ciphertext = sealed.get(holder)
                inbox[holder].append(
                    derive if ciphertext is None else codec.relay_entry(sender, ciphertext)
                )
        rid = self.config.round_id
        return {
            i: codec.encode_entries(SharesRelay, rid, i, entries)
            for i, entries in sorted(inbox.items())
        }

    def _needed(self, holders: frozenset[int]) -> dict[int, frozenset[int]]:
        """For each secret the unmasking needs: which of ``holders`` can reveal a share."""
        included = frozenset(self._masked)
        needed = {u: self._holders[u] & holders for u in included}
        for j in self._shares.keys() - included:
            if self._graph[j] & included:
                needed[j] = self._graph[j] & holders
        return needed

    def _check_needed(self, holders: frozenset[int]) -> dict[int, frozenset[int]]:
        needed = self._needed(holders)
        short = sorted(d for d, h in needed.items() if len(h) < self.config.threshold)
        self._check(not short, f"devices {short[:8]} have fewer than t live neighbours")
        return needed

    def _request_consistency(self, included: frozenset[int]) -> dict[int, bytes]:
        self._check_needed(included)
        rid, self._view = self.config.round_id, tuple(sorted(included))
        request = ConsistencyRequest(round_id=rid, recipient=0, survivors=self._view)
        return codec.encode_for(request, self._view)  # the same request, one per device

    def _request_unmask(self, signers: frozenset[int]) -> dict[int, bytes]:
        t, rid = self.config.threshold, self.config.round_id
        committee = self.config.committee()
        certifiers = sorted(h for h in signers if h in committee)
        self._check(
            len(certifiers) >= t, f"only {len(certifiers)} committee members signed the set"
        )
        self._check_needed(signers)
        signed = [PeerSignature(signer=j, signature=self._signatures[j]) for j in certifiers]
        outsider = tuple(signed[:t])  # what every device outside the committee is shown
        shown = UnmaskRequest(round_id=rid, recipient=0, survivors=self._view, signatures=outsider)
        requests = codec.encode_for(shown, sorted(h for h in signers if h not in committee))
        for h in sorted(h for h in signers if h in committee):
            # Exactly t signatures reach each device: its own counts when it is a member.
            chosen = tuple(p for p in signed if p.signer != h)[: t - 1]
            request = UnmaskRequest(
                round_id=rid, recipient=h, survivors=self._view, signatures=chosen
            )
            requests[h] = codec.encode(request)
        return dict(sorted(requests.items()))

    def _unmask(self, responders: frozenset[int]) -> Vector:
        needed = self._check_needed(responders)
        t = self.config.threshold
        owners = sorted(needed)
        holders = np.array([sorted(needed[o])[:t] for o in owners], dtype=np.int64)
        data = b"".join(
            self._revealed[h][o]
            for o, row in zip(owners, holders.tolist(), strict=True)
            for h in row
        )
        shares = shamir.shares_from_bytes(data, holders.size).reshape(*holders.shape, -1)
        secrets = shamir.secrets_or_none(shamir.reconstruct(holders + 1, shares))
        assert self._sum is not None
        total = MaskAccumulator(self._sum)
        rid = self.config.round_id
        for owner, candidate in zip(owners, secrets, strict=True):
            secret = self._checked(owner, candidate)
            if secret is None:  # a wrong share among the first t: decode around it
                secret = self._recover(owner, sorted(needed[owner]))
            if owner in self._masked:
                total.add(self_mask_key(secret, rid), sign=-1)
            else:
                self._unmask_dropped(total, owner, secret)
        values = total.values
        if self.config.bits < values.dtype.itemsize * 8:
            np.bitwise_and(values, values.dtype.type((1 << self.config.bits) - 1), out=values)
        return values

    def _checked(self, owner: int, secret: bytes | None) -> bytes | None:
        """``secret`` when it matches ``owner``'s commitment, else None (also for None).

        A seed must hash to the digest its owner signed in ShareKeys, a masking seed must
        give the public key its owner advertised.
        """
        if secret is None:  # out of range: no secret at all
            return None
        rid = self.config.round_id
        if owner in self._masked:
            good = seed_digest(secret, rid) == self._shares[owner].seed_digest
        else:
            public = x25519_public(masking_private_key(secret, rid))
            good = public == self._keys[owner].masking_key
        return secret if good else None

    def _recover(self, owner: int, holders: list[int]) -> bytes:
        """``owner``'s secret from the right shares when some revealed ones are wrong.

        Berlekamp-Welch on every digit finds up to (m - t) / 2 wrong shares among the m
        revealed; the secret rebuilt from t of the others must match the commitment. The
        holders whose shares were wrong are remembered in ``bad_holders``.
        """
        t = self.config.threshold
        xs = [h + 1 for h in holders]
        data = b"".join(self._revealed[h][owner] for h in holders)
        ys = shamir.shares_from_bytes(data, len(holders))
        suspects: set[int] = set()
        for chunk in range(shamir.CHUNKS):
            found = shamir.locate_errors(xs, ys[:, chunk].tolist(), t)
            if found is None:
                self._abort(f"too many wrong shares of device {owner}'s secrets")
            suspects |= found
        good = [i for i in range(len(holders)) if i not in suspects][:t]
        if len(good) < t:
            self._abort(f"fewer than t right shares of device {owner}'s secrets")
        base = [xs[i] for i in good]
        (rebuilt,) = shamir.secrets_or_none(shamir.reconstruct(np.array([base]), ys[good][None]))
        secret = self._checked(owner, rebuilt)
        if secret is None:
            self._abort(f"shares of device {owner}'s secrets are inconsistent")
        others = sorted(suspects)
        if others:
            expected = shamir.evaluate(base, ys[good], [xs[i] for i in others])
            for i, row in zip(others, expected, strict=True):
                if not np.array_equal(row, ys[i]):
                    self._bad.add(holders[i])
        return secret

    def _unmask_dropped(self, total: MaskAccumulator, dropped: int, secret: bytes) -> None:
        masking = masking_private_key(secret, self.config.round_id)
        if x25519_public(masking) != self._keys[dropped].masking_key:
            self._check(False, f"shares of device {dropped}'s key are inconsistent")
        rid = self.config.round_id
        for u in sorted(self._graph[dropped] & self._masked):
            shared = agree(masking, self._keys[u].masking_key)
            # u added sign(u, dropped) * mask; remove exactly that.
            total.add(mask_key(shared, rid, u, dropped), sign=-mask_sign(u, dropped))
