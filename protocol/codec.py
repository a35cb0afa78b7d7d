"""Versioned binary encoding of the SecAgg+ messages, strict and canonical.

Every message starts with ``version:u8 type:u8 round_id:16B``; integers are little-endian,
counts are u32 and must match the remaining length exactly, so each message has one encoding
and ``encode(decode(data)) == data``. Signed (client) messages end with a 64-byte Ed25519
signature over ``signing_digest``: SHA-256 of the encoding without the signature.

    type  message        body after the header
    1     AdvertiseKeys  sender:u32 encryption_key:32B masking_key:32B signature:64B
    2     ShareKeys      sender:u32 seed_digest:16B n:u32 n*ciphertext:44B signature
    3     MaskedInput    sender:u32 bits:u8 length:u32 payload:ceil(length*bits/8)B signature
    4     UnmaskShares   sender:u32 owners:set kinds:bits(n) n*share:16B signature
    5     ConsistencyCheck   sender:u32 survivors:set signature
    17    KeysBroadcast  recipient:u32 n:u32 n*(sender:u32 keys:64B signature:64B)
    18    SharesRelay    recipient:u32 n:u32 n*(peer:u32 sealed:u8 [ciphertext:44B if sealed])
    19    UnmaskRequest  recipient:u32 survivors:set n:u32 n*(signer:u32 signature:64B)
    20    ConsistencyRequest recipient:u32 survivors:set

A ``set`` of device indices is a bitmap: ``size:u16`` bytes, bit i (little-endian bit order)
set when index i is in the set, no trailing zero byte (so it is canonical); ``bits(n)`` is
ceil(n/8) bytes of flags with zero padding (an UnmaskShares kind bit is 1 for KEY), n the
number of owners. Version 2 added the consistency-check stage (types 5 and 20, signatures in
type 19); version 3 made shares 16 bytes, dropped recipient ids from ShareKeys (the server
knows the order) and sends nothing to the holders that derive their shares.

Decoding anything else raises ``DecodeError`` (or its ``LengthError``) and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from fedrt.protocol.bitpack import packed_size
from fedrt.protocol.crypto import KEY_BYTES, SHARE_TAG_BYTES, SIGNATURE_BYTES
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
    ServerMessage,
    ShareKeys,
    ShareKind,
    SharesRelay,
    UnmaskRequest,
    UnmaskShares,
)
from fedrt.protocol.secagg_config import ROUND_ID_BYTES
from fedrt.protocol.shamir import SHARE_BYTES

__all__ = [
    "CIPHERTEXT_BYTES",
    "DIGEST_BYTES",
    "MAX_SET_INDEX",
    "ROUND_ID_BYTES",
    "VERSION",
    "decode",
    "encode",
    "encode_entries",
    "encode_for",
    "keys_entry",
    "relay_entry",
    "signing_digest",
    "wire_digest",
]

VERSION = 3
CIPHERTEXT_BYTES = 2 * SHARE_BYTES + SHARE_TAG_BYTES
DIGEST_BYTES = 16
"""Seed commitments are SHA-256 truncated to 128 bits (they catch bad reconstructions)."""
MAX_SET_INDEX = 8 * 0xFFFF - 1
"""The largest device index a set on the wire can hold (a bitmap of at most 65535 bytes)."""
_HEADER = struct.Struct(f"<BB{ROUND_ID_BYTES}s")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_TYPES: dict[type[Message], int] = {
    AdvertiseKeys: 1,
    ShareKeys: 2,
    MaskedInput: 3,
    UnmaskShares: 4,
    ConsistencyCheck: 5,
    KeysBroadcast: 17,
    SharesRelay: 18,
    UnmaskRequest: 19,
    ConsistencyRequest: 20,
}


def _u32(value: int) -> bytes:
    return _U32.pack(value)


@functools.lru_cache(maxsize=16)  # one survivor set is encoded for every signature check
def _set(indices: tuple[int, ...]) -> bytes:
    """A sorted, duplicate-free tuple of device indices as a length-prefixed bitmap."""
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise ParameterError("a device set must be sorted and free of duplicates")
    if indices and not 0 <= indices[0] <= indices[-1] <= MAX_SET_INDEX:
        raise ParameterError(f"device indices in a set must be in 0..{MAX_SET_INDEX}")
    bits = np.zeros(indices[-1] + 1 if indices else 0, dtype=np.uint8)
    bits[list(indices)] = 1
    return _U16.pack((bits.size + 7) // 8) + np.packbits(bits, bitorder="little").tobytes()


def _parts(message: Message) -> Iterator[bytes]:
    """The encoding of ``message`` without its signature, in pieces (payloads not copied)."""
    yield _HEADER.pack(VERSION, _TYPES[type(message)], message.round_id)
    match message:
        case AdvertiseKeys():
            yield _u32(message.sender) + message.encryption_key + message.masking_key
        case ShareKeys():
            yield _u32(message.sender) + message.seed_digest + _u32(len(message.ciphertexts))
            yield b"".join(message.ciphertexts)
        case MaskedInput():
            yield _u32(message.sender) + bytes([message.bits]) + _u32(message.length)
            yield message.payload
        case UnmaskShares():
            yield _u32(message.sender) + _set(tuple(s.owner for s in message.shares))
            yield _flags([s.kind is ShareKind.KEY for s in message.shares])
            yield b"".join(s.share for s in message.shares)
        case ConsistencyCheck():
            yield _u32(message.sender) + _set(message.survivors)
        case KeysBroadcast():
            yield _u32(message.recipient) + _u32(len(message.keys))
            yield b"".join(keys_entry(k) for k in message.keys)
        case SharesRelay():
            yield _u32(message.recipient) + _u32(len(message.shares))
            yield b"".join(relay_entry(s.peer, s.ciphertext) for s in message.shares)
        case UnmaskRequest():
            yield _u32(message.recipient) + _set(message.survivors)
            yield _u32(len(message.signatures))
            yield b"".join(_u32(s.signer) + s.signature for s in message.signatures)
        case ConsistencyRequest():
            yield _u32(message.recipient) + _set(message.survivors)


def keys_entry(keys: AdvertiseKeys) -> bytes:
    """One device's entry in a KeysBroadcast: sender, both keys and its signature."""
    return _u32(keys.sender) + keys.encryption_key + keys.masking_key + keys.signature


def relay_entry(peer: int, ciphertext: bytes) -> bytes:
    """One dealer's entry in a SharesRelay: its sealed share, or none (derive it)."""
    return _u32(peer) + (b"\x01" + ciphertext if ciphertext else b"\x00")


def encode_entries(
    kind: type[KeysBroadcast | SharesRelay], round_id: bytes, recipient: int, entries: list[bytes]
) -> bytes:
    """``encode`` of a KeysBroadcast or SharesRelay from its entries (``keys_entry``,
    ``relay_entry``), for a server that encodes each entry once and sends it to many."""
    head = _HEADER.pack(VERSION, _TYPES[kind], round_id)
    return b"".join([head, _u32(recipient), _u32(len(entries)), *entries])


def encode_for(message: ServerMessage, recipients: Iterable[int]) -> dict[int, bytes]:
    """``encode`` of ``message`` addressed to each of ``recipients`` in turn, encoded once.

    Every server message has its recipient right after the header, so the copies differ in
    those four bytes only (the property tests hold this to ``encode`` of each copy).
    """
    data = encode(message)
    head, tail = data[: _HEADER.size], data[_HEADER.size + _U32.size :]
    return {r: b"".join([head, _u32(r), tail]) for r in recipients}


def _flags(flags: list[bool]) -> bytes:
    return np.packbits(np.array(flags, dtype=np.uint8), bitorder="little").tobytes()


def signing_digest(message: ClientMessage) -> bytes:
    """SHA-256 of the message's encoding without its signature: what the device signs."""
    digest = hashlib.sha256()
    for part in _parts(message):
        digest.update(part)
    return digest.digest()


def wire_digest(data: bytes | bytearray | memoryview) -> bytes:
    """``signing_digest`` of the client message ``data`` holds, hashed from ``data`` itself.

    Only for bytes that ``decode`` accepted as a client message: the encoding is canonical,
    so they are exactly the message's encoding followed by its 64-byte signature, and the
    receiver need not encode the message again to check it.
    """
    view = memoryview(data).cast("B")
    return hashlib.sha256(view[: len(view) - SIGNATURE_BYTES]).digest()


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``."""
    tail = message.signature if isinstance(message, _SIGNED) else b""
    return b"".join([*_parts(message), tail])


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise LengthError(f"message truncated at byte {self.pos} (wanted {size} more)")
        chunk = self.data[self.pos : self.pos + size].tobytes()
        self.pos += size
        return chunk

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def entries(self, layout: struct.Struct, reserve: int = 0) -> list[tuple[Any, ...]]:
        """A u32 count and that many fixed-size entries, filling the rest less ``reserve``."""
        n = self.u32()
        if n * layout.size != len(self.data) - self.pos - reserve:
            raise LengthError(f"count {n} does not match the remaining bytes")
        return list(layout.iter_unpack(self.take(n * layout.size)))

    def flags(self, count: int) -> list[bool]:
        """``count`` flags written by ``_flags``; set padding bits are not canonical."""
        value = int.from_bytes(self.take((count + 7) // 8), "little")
        if value >> count:
            raise DecodeError("padding bits of a flag field are set")
        return [bool(value >> i & 1) for i in range(count)]

    def device_set(self) -> tuple[int, ...]:
        """A bitmap written by ``_set``; a trailing zero byte is not canonical."""
        return _parse_set(self.take(_U16.unpack(self.take(2))[0]))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise LengthError(f"{len(self.data) - self.pos} trailing bytes")


@functools.lru_cache(maxsize=16)  # every device signs, and is sent, the same survivor set
def _parse_set(raw: bytes) -> tuple[int, ...]:
    if raw and raw[-1] == 0:
        raise DecodeError("a device set has a trailing zero byte")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    return tuple(np.flatnonzero(bits).tolist())


_KEYS = struct.Struct(f"<I{KEY_BYTES}s{KEY_BYTES}s{SIGNATURE_BYTES}s")
_CIPHERTEXT = struct.Struct(f"<{CIPHERTEXT_BYTES}s")
_SIGNATURE = struct.Struct(f"<I{SIGNATURE_BYTES}s")


def _advertise(r: _Reader, rid: bytes) -> AdvertiseKeys:
    return _advert(rid, *_KEYS.unpack(r.take(_KEYS.size)))


def _advert(
    rid: bytes, sender: int, encryption: bytes, masking: bytes, sig: bytes
) -> AdvertiseKeys:
    return AdvertiseKeys(
        round_id=rid, sender=sender, encryption_key=encryption, masking_key=masking, signature=sig
    )


def _decode_share_keys(r: _Reader, rid: bytes) -> ShareKeys:
    sender, digest = r.u32(), r.take(DIGEST_BYTES)
    ciphertexts = tuple(c for (c,) in r.entries(_CIPHERTEXT, SIGNATURE_BYTES))
    return ShareKeys(
        round_id=rid,
        sender=sender,
        seed_digest=digest,
        ciphertexts=ciphertexts,
        signature=r.take(SIGNATURE_BYTES),
    )


def _decode_masked(r: _Reader, rid: bytes) -> MaskedInput:
    sender, bits, length = r.u32(), r.take(1)[0], r.u32()
    if not 1 <= bits <= 64:
        raise DecodeError(f"ring bits {bits} outside 1..64")
    payload = r.take(packed_size(length, bits))
    return MaskedInput(
        round_id=rid, sender=sender, bits=bits, length=length, payload=payload, signature=r.take(64)
    )


_KINDS = (ShareKind.SEED, ShareKind.KEY)


def _decode_unmask(r: _Reader, rid: bytes) -> UnmaskShares:
    sender, owners = r.u32(), r.device_set()
    keys = r.flags(len(owners))
    data = r.take(len(owners) * SHARE_BYTES)
    shares = tuple(
        RevealedShare(owner=owner, kind=_KINDS[key], share=data[at : at + SHARE_BYTES])
        for owner, key, at in zip(owners, keys, range(0, len(data), SHARE_BYTES), strict=True)
    )
    return UnmaskShares(
        round_id=rid, sender=sender, shares=shares, signature=r.take(SIGNATURE_BYTES)
    )


def _decode_check(r: _Reader, rid: bytes) -> ConsistencyCheck:
    sender, survivors = r.u32(), r.device_set()
    return ConsistencyCheck(
        round_id=rid, sender=sender, survivors=survivors, signature=r.take(SIGNATURE_BYTES)
    )


def _decode_broadcast(r: _Reader, rid: bytes) -> KeysBroadcast:
    recipient = r.u32()
    keys = tuple(_advert(rid, *entry) for entry in r.entries(_KEYS))
    return KeysBroadcast(round_id=rid, recipient=recipient, keys=keys)


def _decode_relay(r: _Reader, rid: bytes) -> SharesRelay:
    recipient, count = r.u32(), r.u32()
    if count * 5 > len(r.data) - r.pos:
        raise LengthError(f"count {count} does not fit the remaining bytes")
    shares = []
    for _ in range(count):
        peer, sealed = r.u32(), r.take(1)[0]
        if sealed > 1:
            raise DecodeError("an entry is neither sealed nor derived")
        ciphertext = r.take(CIPHERTEXT_BYTES) if sealed else b""
        shares.append(EncryptedShare(peer=peer, ciphertext=ciphertext))
    return SharesRelay(round_id=rid, recipient=recipient, shares=tuple(shares))


def _decode_request(r: _Reader, rid: bytes) -> UnmaskRequest:
    recipient, survivors = r.u32(), r.device_set()
    signatures = tuple(PeerSignature(signer=i, signature=s) for i, s in r.entries(_SIGNATURE))
    return UnmaskRequest(
        round_id=rid, recipient=recipient, survivors=survivors, signatures=signatures
    )


def _decode_consistency(r: _Reader, rid: bytes) -> ConsistencyRequest:
    recipient, survivors = r.u32(), r.device_set()
    return ConsistencyRequest(round_id=rid, recipient=recipient, survivors=survivors)


_DECODERS: dict[int, Callable[[_Reader, bytes], Message]] = {
    1: _advertise,
    2: _decode_share_keys,
    3: _decode_masked,
    4: _decode_unmask,
    5: _decode_check,
    17: _decode_broadcast,
    18: _decode_relay,
    19: _decode_request,
    20: _decode_consistency,
}
_SIGNED = (AdvertiseKeys, ShareKeys, MaskedInput, ConsistencyCheck, UnmaskShares)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one message; anything malformed raises ``DecodeError``."""
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if len(view) < _HEADER.size:
        raise LengthError(f"{len(view)} bytes is shorter than the {_HEADER.size}-byte header")
    version, kind, round_id = _HEADER.unpack_from(view)
    if version != VERSION:
        raise DecodeError(f"unsupported protocol version {version}")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown message type {kind}")
    reader = _Reader(view)
    reader.pos = _HEADER.size
    message = decoder(reader, round_id)
    reader.end()
    return message
