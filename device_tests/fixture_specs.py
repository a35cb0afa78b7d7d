"""What the committed fixtures hold: model shapes, step counts, and the fixed codec messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedrt.protocol.messages import (
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencyRequest,
    EncryptedShare,
    KeysBroadcast,
    MaskedInput,
    Message,
    PeerSignature,
    RevealedShare,
    ShareKeys,
    ShareKind,
    SharesRelay,
    UnmaskRequest,
    UnmaskShares,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    input_shape: tuple[int, ...]
    classes: int
    batch: int
    hidden: int = 0
    steps: int = 0
    lr: float = 0.0


# Tiny on purpose: the model file stays a few KiB, and 10 steps run in milliseconds anywhere.
MLP = ModelSpec(input_shape=(12,), classes=4, batch=8, hidden=16, steps=10, lr=0.1)
# The digits CNN the simulation trains (zoo cnn at 8x8x1, 10 classes, batch 16).
CNN = ModelSpec(input_shape=(8, 8, 1), classes=10, batch=16)


def codec_messages() -> dict[str, Message]:
    """One of each SecAgg+ message, with fixed, recognisable field values."""
    rid = bytes(range(16))
    sig = bytes(range(64))
    ct = bytes((7 * i) % 256 for i in range(44))
    advert = AdvertiseKeys(
        round_id=rid, sender=3, encryption_key=b"\x11" * 32, masking_key=b"\x22" * 32, signature=sig
    )
    return {
        "advertise_keys": advert,
        "share_keys": ShareKeys(
            round_id=rid,
            sender=3,
            seed_digest=b"\x33" * 16,
            ciphertexts=(ct, ct),
            signature=sig,
        ),
        "masked_input": MaskedInput(
            round_id=rid, sender=3, bits=11, length=7, payload=bytes(range(10)), signature=sig
        ),
        "unmask_shares": UnmaskShares(
            round_id=rid,
            sender=3,
            shares=(
                RevealedShare(owner=5, kind=ShareKind.SEED, share=b"\x44" * 16),
                RevealedShare(owner=9, kind=ShareKind.KEY, share=b"\x55" * 16),
            ),
            signature=sig,
        ),
        "keys_broadcast": KeysBroadcast(round_id=rid, recipient=3, keys=(advert,)),
        "shares_relay": SharesRelay(
            round_id=rid,
            recipient=5,
            shares=(EncryptedShare(peer=3, ciphertext=ct), EncryptedShare(peer=4, ciphertext=b"")),
        ),
        "consistency_request": ConsistencyRequest(round_id=rid, recipient=3, survivors=(3, 5, 9)),
        "consistency_check": ConsistencyCheck(
            round_id=rid, sender=3, survivors=(3, 5, 9), signature=sig
        ),
        "unmask_request": UnmaskRequest(
            round_id=rid,
            recipient=3,
            survivors=(3, 5, 9),
            signatures=(PeerSignature(signer=5, signature=sig),),
        ),
    }
