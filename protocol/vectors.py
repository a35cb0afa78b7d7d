"""Known-answer vectors for the protocol's crypto and arithmetic: generate and check.

The vectors live in a JSON file (``tests/protocol/data/secagg_kat.json``); ``check_vectors``
recomputes every entry with this package and raises ``VectorMismatch`` naming the first
that differs, so a device can verify its crypto stack without pytest:

    python -m fedrt.protocol.vectors check tests/protocol/data/secagg_kat.json
    python -m fedrt.protocol.vectors generate > secagg_kat.json

Published vectors (NIST SP 800-38A F.5.5, RFC 7748 6.1, RFC 5869 A.1, RFC 8032 7.1 test 1)
anchor the primitives; the others pin this protocol's own conventions (mask expansion, pair
key derivation, derived shares, seed expansion, Shamir sharing, graph, bit-packing, seeded
randomness).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrt.protocol import bitpack, shamir
from fedrt.protocol.crypto import agree, derive, x25519_public
from fedrt.protocol.errors import ProtocolError
from fedrt.protocol.graph import neighbor_graph
from fedrt.protocol.prg import SeededRandom, expand, keystream
from fedrt.protocol.secagg_config import (
    derived_shares,
    mask_key,
    masking_private_key,
    seed_digest,
    self_mask_key,
    share_key,
)

__all__ = ["VectorMismatch", "check_vectors", "generate_vectors", "main"]

FORMAT = "fedrt-protocol-kat/1"
Doc = dict[str, Any]


class VectorMismatch(ProtocolError):
    """A known-answer vector does not reproduce on this platform."""


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _aes_ctr(v: Mapping[str, str]) -> Doc:
    key, iv, plain = (bytes.fromhex(v[k]) for k in ("key", "iv", "plaintext"))
    return {**v, "ciphertext": _xor(plain, keystream(key, len(plain), iv=iv)).hex()}


def _x25519(v: Mapping[str, str]) -> Doc:
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["alice_private"]))
    b = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["bob_private"]))
    return {
        **v,
        "alice_public": x25519_public(a).hex(),
        "bob_public": x25519_public(b).hex(),
        "shared": agree(a, x25519_public(b)).hex(),
    }


def _hkdf(v: Mapping[str, Any]) -> Doc:
    okm = derive(
        bytes.fromhex(v["ikm"]),
        salt=bytes.fromhex(v["salt"]),
        info=bytes.fromhex(v["info"]),
        length=v["length"],
    )
    return {**v, "okm": okm.hex()}


def _ed25519(v: Mapping[str, str]) -> Doc:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["secret"]))
    return {
        **v,
        "public": key.public_key().public_bytes_raw().hex(),
        "signature": key.sign(bytes.fromhex(v["message"])).hex(),
    }


def _prg(v: Mapping[str, Any]) -> Doc:
    key = bytes.fromhex(v["key"])
    words32 = expand(key, v["count"], np.uint32)
    words64 = expand(key, v["count"], np.uint64)
    return {
        **v,
        "uint32_head": [int(w) for w in words32[:8]],
        "uint64_head": [int(w) for w in words64[:4]],
        "uint32_sha256": hashlib.sha256(words32.astype("<u4").tobytes()).hexdigest(),
    }


def _pair_keys(v: Mapping[str, Any]) -> Doc:
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["private_a"]))
    b = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["private_b"]))
    rid, i, j = bytes.fromhex(v["round_id"]), v["index_a"], v["index_b"]
    shared = agree(a, x25519_public(b))
    if agree(b, x25519_public(a)) != shared:
        raise VectorMismatch("X25519 is not symmetric on this platform")
    return {
        **v,
        "mask_key": mask_key(shared, rid, i, j).hex(),
        "share_key_a_to_b": share_key(shared, rid, i, j).hex(),
        "share_key_b_to_a": share_key(shared, rid, j, i).hex(),
        "derived_shares_a_to_b": shamir.share_to_bytes(
            derived_shares([share_key(shared, rid, i, j)]).ravel()
        ).hex(),
    }


def _device_secrets(v: Mapping[str, Any]) -> Doc:
    seed, masking, rid = (bytes.fromhex(v[k]) for k in ("seed", "masking_seed", "round_id"))
    return {
        **v,
        "self_mask_key": self_mask_key(seed, rid).hex(),
        "seed_digest": seed_digest(seed, rid).hex(),
        "masking_public": x25519_public(masking_private_key(masking, rid)).hex(),
    }


def _shamir(v: Mapping[str, Any]) -> Doc:
    secrets = [bytes.fromhex(s) for s in v["secrets"]]
    xs, t = v["holders"], v["threshold"]
    shares = shamir.split(shamir.secrets_to_field(secrets), xs, t, SeededRandom(v["seed"]))
    pick = v["reconstruct_from"]
    ys = np.stack([shares[pick, s] for s in range(len(secrets))])
    back = shamir.secrets_from_field(
        shamir.reconstruct(np.tile(np.asarray(xs)[pick], (len(secrets), 1)), ys)
    )
    if back != secrets:
        raise VectorMismatch("shamir: reconstruction does not give the secrets back")
    # The same secrets through t - 1 fixed points (how derived shares are dealt).
    fixed = shamir.field_from_words(SeededRandom(v["seed"] + 1)(16 * (t - 1) * shares[0].size))
    through = shamir.split_through(
        shamir.secrets_to_field(secrets),
        xs[: t - 1],
        fixed.reshape(t - 1, *shares[0].shape),
        xs[t - 1 :],
    )
    return {
        **v,
        "shares": [
            [shamir.share_to_bytes(shares[h, s]).hex() for s in range(len(secrets))]
            for h in range(len(xs))
        ],
        "through_shares": [
            [shamir.share_to_bytes(through[h, s]).hex() for s in range(len(secrets))]
            for h in range(len(through))
        ],
    }


def _graph(v: Mapping[str, Any]) -> Doc:
    graph = neighbor_graph(v["clients"], v["neighbors"], bytes.fromhex(v["seed"]))
    return {**v, "graph": [list(row) for row in graph]}


def _bitpack(v: Mapping[str, Any]) -> Doc:
    values = np.array(v["values"], dtype=np.uint64)
    return {**v, "packed": bitpack.pack(values, v["bits"]).hex()}


def _seeded_random(v: Mapping[str, Any]) -> Doc:
    return {**v, "bytes": SeededRandom(bytes.fromhex(v["seed"]))(v["size"]).hex()}


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Doc]] = {
    "aes256_ctr": _aes_ctr,
    "x25519": _x25519,
    "hkdf_sha256": _hkdf,
    "ed25519": _ed25519,
    "prg": _prg,
    "pair_keys": _pair_keys,
    "device_secrets": _device_secrets,
    "shamir": _shamir,
    "graph": _graph,
    "bitpack": _bitpack,
    "seeded_random": _seeded_random,
}

# Inputs only; generate_vectors computes the outputs. The published vectors' expected
# outputs are pinned separately in _PUBLISHED so a generated file cannot drift from them.
_INPUTS: dict[str, list[dict[str, Any]]] = {
    "aes256_ctr": [
        {
            "source": "NIST SP 800-38A F.5.5 CTR-AES256.Encrypt",
            "key": "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            "iv": "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            "plaintext": "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
            "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
        }
    ],
    "x25519": [
        {
            "source": "RFC 7748 section 6.1",
            "alice_private": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "bob_private": "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        }
    ],
    "hkdf_sha256": [
        {
            "source": "RFC 5869 A.1",
            "ikm": "0b" * 22,
            "salt": "000102030405060708090a0b0c",
            "info": "f0f1f2f3f4f5f6f7f8f9",
            "length": 42,
        }
    ],
    "ed25519": [
        {
            "source": "RFC 8032 7.1 TEST 1",
            "secret": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "message": "",
        }
    ],
    "prg": [{"key": bytes(range(32)).hex(), "count": 1000}, {"key": "ff" * 32, "count": 17}],
    "pair_keys": [
        {
            "private_a": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "private_b": "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
            "round_id": bytes(range(16)).hex(),
            "index_a": 3,
            "index_b": 11,
        }
    ],
    "device_secrets": [
        {
            "seed": bytes(range(15)).hex() + "7f",
            "masking_seed": "5a" * 16,
            "round_id": bytes(range(16)).hex(),
        }
    ],
    "shamir": [
        {
            "secrets": [bytes(range(16)).hex(), "ff" * 15 + "7f"],
            "holders": [2, 5, 6, 9, 12],
            "threshold": 3,
            "seed": 7,
            "reconstruct_from": [4, 1, 2],
        }
    ],
    "graph": [
        {"clients": 10, "neighbors": 4, "seed": "00" * 16},
        {"clients": 8, "neighbors": 3, "seed": "01" * 16},
        {"clients": 6, "neighbors": 5, "seed": "02" * 16},
    ],
    "bitpack": [
        {"bits": 3, "values": [0, 1, 2, 3, 4, 5, 6, 7, 5]},
        {"bits": 15, "values": [(i * 2654435761) % 32768 for i in range(37)]},
        {"bits": 33, "values": [(i * 2654435761) % 2**33 for i in range(5)]},
    ],
    "seeded_random": [{"seed": "666564727421", "size": 48}],
}

_PUBLISHED: dict[str, dict[str, str]] = {
    "aes256_ctr": {
        "ciphertext": "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"
    },
    "x25519": {
        "alice_public": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "bob_public": "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "shared": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    },
    "hkdf_sha256": {
        "okm": "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865"
    },
    "ed25519": {
        "public": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "signature": "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    },
}


def generate_vectors() -> Doc:
    """Every vector with its expected outputs, computed by this package."""
    doc: Doc = {"format": FORMAT}
    for name, entries in _INPUTS.items():
        doc[name] = [_BUILDERS[name](entry) for entry in entries]
    _check_published(doc)
    return doc


def _check_published(doc: Mapping[str, Any]) -> None:
    for name, expected in _PUBLISHED.items():
        for field, value in expected.items():
            if doc[name][0][field] != value:
                raise VectorMismatch(f"{name}: {field} differs from the published vector")


def check_vectors(doc: Mapping[str, Any]) -> list[str]:
    """Recompute every vector in ``doc``; return the names checked or raise ``VectorMismatch``."""
    if doc.get("format") != FORMAT:
        raise VectorMismatch(f"not a {FORMAT} document")
    checked = []
    for name, builder in _BUILDERS.items():
        entries: Sequence[Mapping[str, Any]] = doc.get(name, [])
        if not entries:
            raise VectorMismatch(f"{name}: no vectors in the document")
        for n, entry in enumerate(entries):
            if builder(entry) != dict(entry):
                raise VectorMismatch(f"{name}[{n}] does not reproduce")
        checked.append(name)
    _check_published(doc)
    return checked


def main(argv: Sequence[str] | None = None) -> int:
    """``generate`` prints the vectors as JSON; ``check PATH`` verifies a file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["generate"]:
        print(json.dumps(generate_vectors(), indent=1))
        return 0
    if len(args) == 2 and args[0] == "check":
        try:
            with open(args[1], encoding="utf-8") as f:
                names = check_vectors(json.load(f))
        except (OSError, ValueError, KeyError, TypeError, ProtocolError) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        print(f"ok: {', '.join(names)}")
        return 0
    print("usage: python -m fedrt.protocol.vectors generate | check PATH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
