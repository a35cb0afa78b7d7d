"""The wire codec: canonical round trips, and garbage raises only DecodeError."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrt.protocol import codec
from fedrt.protocol.bitpack import packed_size
from fedrt.protocol.errors import DecodeError, LengthError, ParameterError
from fedrt.protocol.messages import (
    AdvertiseKeys,
    ClientMessage,
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

u32 = st.integers(0, 2**32 - 1)
rid = st.binary(min_size=16, max_size=16)
key = st.binary(min_size=32, max_size=32)
sig = st.binary(min_size=64, max_size=64)
sealed = st.binary(min_size=codec.CIPHERTEXT_BYTES, max_size=codec.CIPHERTEXT_BYTES)
cipher = st.builds(EncryptedShare, peer=u32, ciphertext=st.one_of(st.just(b""), sealed))
device_set = st.sets(st.integers(0, 3000), max_size=8).map(lambda s: tuple(sorted(s)))
peer_sig = st.builds(PeerSignature, signer=u32, signature=sig)
advert = st.builds(
    AdvertiseKeys, round_id=rid, sender=u32, encryption_key=key, masking_key=key, signature=sig
)


@st.composite
def masked(draw: st.DrawFn) -> MaskedInput:
    bits, length = draw(st.integers(1, 64)), draw(st.integers(0, 40))
    payload = draw(
        st.binary(min_size=packed_size(length, bits), max_size=packed_size(length, bits))
    )
    return MaskedInput(
        round_id=draw(rid),
        sender=draw(u32),
        bits=bits,
        length=length,
        payload=payload,
        signature=draw(sig),
    )


@st.composite
def broadcast(draw: st.DrawFn) -> KeysBroadcast:
    r = draw(rid)
    keys = draw(st.lists(advert, max_size=4))
    return KeysBroadcast(
        round_id=r,
        recipient=draw(u32),
        keys=tuple(AdvertiseKeys(**{**_fields(k), "round_id": r}) for k in keys),
    )


def _fields(message: object) -> dict[str, object]:
    return {name: getattr(message, name) for name in message.__slots__}  # type: ignore[attr-defined]


messages = st.one_of(
    advert,
    st.builds(
        ShareKeys,
        round_id=rid,
        sender=u32,
        seed_digest=st.binary(min_size=codec.DIGEST_BYTES, max_size=codec.DIGEST_BYTES),
        ciphertexts=st.lists(sealed, max_size=4).map(tuple),
        signature=sig,
    ),
    masked(),
    st.builds(
        UnmaskShares,
        round_id=rid,
        sender=u32,
        signature=sig,
        shares=device_set.flatmap(
            lambda owners: st.tuples(
                *(
                    st.builds(
                        RevealedShare,
                        owner=st.just(o),
                        kind=st.sampled_from(ShareKind),
                        share=st.binary(min_size=16, max_size=16),
                    )
                    for o in owners
                )
            )
        ),
    ),
    broadcast(),
    st.builds(
        SharesRelay, round_id=rid, recipient=u32, shares=st.lists(cipher, max_size=4).map(tuple)
    ),
    st.builds(
        UnmaskRequest,
        round_id=rid,
        recipient=u32,
        survivors=device_set,
        signatures=st.lists(peer_sig, max_size=4).map(tuple),
    ),
    st.builds(ConsistencyRequest, round_id=rid, recipient=u32, survivors=device_set),
    st.builds(ConsistencyCheck, round_id=rid, sender=u32, survivors=device_set, signature=sig),
)


@settings(deadline=None, max_examples=200)
@given(messages)
def test_every_message_round_trips_canonically(message: Message) -> None:
    data = codec.encode(message)
    assert data[0] == codec.VERSION
    assert codec.decode(data) == message
    assert codec.encode(codec.decode(bytearray(data))) == data
    if isinstance(message, ClientMessage):  # what the server hashes instead of re-encoding
        assert codec.wire_digest(data) == codec.signing_digest(message)
        assert codec.wire_digest(bytearray(data)) == codec.signing_digest(message)


@settings(deadline=None, max_examples=100)
@given(broadcast(), st.lists(cipher, max_size=4).map(tuple))
def test_a_server_encoding_from_entries_gets_the_same_bytes(
    keys: KeysBroadcast, shares: tuple[EncryptedShare, ...]
) -> None:
    entries = [codec.keys_entry(k) for k in keys.keys]
    assert codec.encode_entries(KeysBroadcast, keys.round_id, keys.recipient, entries) == (
        codec.encode(keys)
    )
    relay = SharesRelay(round_id=keys.round_id, recipient=keys.recipient, shares=shares)
    sealed = [codec.relay_entry(s.peer, s.ciphertext) for s in shares]
    assert codec.encode_entries(SharesRelay, relay.round_id, relay.recipient, sealed) == (
        codec.encode(relay)
    )


@settings(deadline=None, max_examples=200)
@given(messages, st.lists(u32, max_size=4))
def test_one_server_message_encoded_for_many_recipients(
    message: Message, recipients: list[int]
) -> None:
    if isinstance(message, ClientMessage):
        return
    copies = codec.encode_for(message, recipients)
    assert list(copies) == list(dict.fromkeys(recipients))
    for recipient, data in copies.items():
        assert data == codec.encode(dataclasses.replace(message, recipient=recipient))


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=400))
def test_garbage_raises_only_decode_errors(data: bytes) -> None:
    try:
        message = codec.decode(data)
    except DecodeError:
        return
    assert codec.encode(message) == data


@settings(deadline=None, max_examples=100)
@given(messages, st.data())
def test_mutated_and_truncated_messages_raise_only_decode_errors(
    message: Message, data: st.DataObject
) -> None:
    wire = bytearray(codec.encode(message))
    position = data.draw(st.integers(0, len(wire) - 1))
    wire[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    for candidate in (bytes(wire), bytes(wire[:cut]), bytes(wire) + b"\x00"):
        try:
            decoded = codec.decode(candidate)
        except DecodeError:
            continue
        assert codec.encode(decoded) == candidate
        if isinstance(decoded, ClientMessage):
            assert codec.wire_digest(candidate) == codec.signing_digest(decoded)


def test_specific_malformations_name_the_problem() -> None:
    good = codec.encode(UnmaskRequest(round_id=b"r" * 16, recipient=1, survivors=(1, 2)))
    with pytest.raises(DecodeError, match="version"):
        codec.decode(b"\x01" + good[1:])  # version 1 had no consistency check
    with pytest.raises(DecodeError, match="type"):
        codec.decode(good[:1] + b"\x63" + good[2:])
    with pytest.raises(LengthError):
        codec.decode(good + b"\x00\x00\x00\x00")
    with pytest.raises(LengthError):
        codec.decode(good[:5])
    share = UnmaskShares(
        round_id=b"r" * 16,
        sender=0,
        signature=b"s" * 64,
        shares=(RevealedShare(owner=1, kind=ShareKind.KEY, share=b"x" * 16),),
    )
    wire = bytearray(codec.encode(share))
    assert wire[18 + 4 :][:4] == b"\x01\x00\x02\x01"  # owners {1}, then the kind bits
    wire[18 + 4 + 3] = 3  # a padding bit of the kind field
    with pytest.raises(DecodeError, match="padding"):
        codec.decode(bytes(wire))
    with pytest.raises(ParameterError):  # owners must be sorted
        codec.encode(dataclasses.replace(share, shares=share.shares * 2))
    relay = SharesRelay(
        round_id=b"r" * 16, recipient=0, shares=(EncryptedShare(peer=1, ciphertext=b""),)
    )
    wire = bytearray(codec.encode(relay))
    wire[-1] = 2  # neither sealed nor derived
    with pytest.raises(DecodeError, match="sealed"):
        codec.decode(bytes(wire))
    masked_input = MaskedInput(
        round_id=b"r" * 16, sender=0, bits=3, length=3, payload=b"\x00\x00", signature=b"s" * 64
    )
    wire = bytearray(codec.encode(masked_input))
    wire[22] = 0  # ring bits
    with pytest.raises(DecodeError, match="bits"):
        codec.decode(bytes(wire))


def test_device_sets_are_sorted_bitmaps_with_one_encoding() -> None:
    request = ConsistencyRequest(round_id=b"r" * 16, recipient=1, survivors=(0, 3, 9))
    wire = codec.encode(request)
    assert wire[22:] == b"\x02\x00\x09\x02"  # 2 bytes: bits 0, 3 and 9
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(wire[:22] + b"\x03\x00\x09\x02\x00")
    for bad in ((3, 0), (1, 1), (codec.MAX_SET_INDEX + 1,)):
        with pytest.raises(ParameterError):
            codec.encode(ConsistencyRequest(round_id=b"r" * 16, recipient=1, survivors=bad))


def test_signing_digest_covers_everything_but_the_signature() -> None:
    a = AdvertiseKeys(round_id=b"r" * 16, sender=1, encryption_key=b"e" * 32, masking_key=b"m" * 32)
    signed = AdvertiseKeys(**{**_fields(a), "signature": b"s" * 64})
    assert codec.signing_digest(a) == codec.signing_digest(signed)
    assert codec.signing_digest(a) != codec.signing_digest(
        AdvertiseKeys(**{**_fields(a), "sender": 2})
    )
