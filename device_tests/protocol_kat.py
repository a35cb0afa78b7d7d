"""Protocol checks: known-answer vectors, rotation, bit-packing and the codec, bit-exact."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from device_tests.fixture_specs import FIXTURES, codec_messages
from device_tests.report import CheckFailed
from fedrt.protocol import bitpack, codec
from fedrt.protocol.rotation import rotate, unrotate
from fedrt.protocol.vectors import check_vectors

# rotate(arange(8), b"fedrt"), pinned on x86_64 (tests/protocol/test_rotation.py).
ROTATION_PINNED = (-0.707106781187, -4.949747468306, -4.949747468306, 4.949747468306,
                   4.949747468306, 3.535533905933, 2.12132034356, -4.949747468306)  # fmt: skip
# Every step is a sign flip, a sum or a difference of doubles, then one scaling: a
# correct platform agrees to the last few ulps; the pinned decimals carry 12 digits.
ROTATION_ATOL = 1e-11


def known_answer_vectors() -> dict[str, Any]:
    """PRG words, key derivation, Shamir, graph, bit-packing... from the committed KAT file."""
    doc = json.loads((FIXTURES / "secagg_kat.json").read_text())
    return {"vectors": check_vectors(doc)}


def rotation() -> dict[str, Any]:
    got = rotate(np.arange(8.0), b"fedrt")
    error = float(np.max(np.abs(got - np.asarray(ROTATION_PINNED))))
    if error > ROTATION_ATOL:
        raise CheckFailed("rotation differs from the pinned vector", max_error=error)
    x = np.random.default_rng(3).normal(size=1000)
    back = float(np.max(np.abs(unrotate(rotate(x, b"seed"), b"seed", x.size) - x)))
    if back > 1e-12:
        raise CheckFailed("unrotate(rotate(x)) is not x", max_error=back)
    return {"max_error": error, "roundtrip_error": back, "tolerance": ROTATION_ATOL}


def bit_packing() -> dict[str, Any]:
    """Round trips at every width the protocol uses, plus a pinned digest at 15 bits."""
    rng = np.random.default_rng(11)
    for bits in range(1, 65):
        values = rng.integers(0, 2**bits, size=1001, dtype=np.uint64, endpoint=False)
        packed = bitpack.pack(values, bits)
        if len(packed) != bitpack.packed_size(values.size, bits):
            raise CheckFailed(f"pack at {bits} bits gave {len(packed)} bytes")
        if not np.array_equal(bitpack.unpack(packed, bits, values.size), values):
            raise CheckFailed(f"unpack(pack(v)) != v at {bits} bits")
    values = (np.arange(4096, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**15)
    digest = hashlib.sha256(bitpack.pack(values, 15)).hexdigest()
    return {"widths": "1..64", "sha256_15bit": digest}


def codec_round_trip() -> dict[str, Any]:
    """Every message type encodes to the committed bytes and decodes back to itself."""
    expected = json.loads((FIXTURES / "codec_kat.json").read_text())["encodings"]
    for name, message in codec_messages().items():
        data = codec.encode(message)
        if data.hex() != expected[name]:
            raise CheckFailed(f"{name} encodes differently from the committed bytes")
        if codec.decode(data) != message or codec.encode(codec.decode(data)) != data:
            raise CheckFailed(f"{name} does not round-trip")
    return {"messages": sorted(expected)}
