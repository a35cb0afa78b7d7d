"""Known-answer vectors from the data file reproduce, and a changed vector is caught."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fedrt.protocol.vectors import VectorMismatch, check_vectors, generate_vectors, main

DATA = Path(__file__).parent / "data" / "secagg_kat.json"


def _doc() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(DATA.read_text(encoding="utf-8"))
    return loaded


def test_the_data_file_reproduces_on_this_platform() -> None:
    assert check_vectors(_doc()) == [
        "aes256_ctr",
        "x25519",
        "hkdf_sha256",
        "ed25519",
        "prg",
        "pair_keys",
        "device_secrets",
        "shamir",
        "graph",
        "bitpack",
        "seeded_random",
    ]
    assert generate_vectors() == _doc()


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("prg", "uint32_sha256"),
        ("pair_keys", "mask_key"),
        ("shamir", "shares"),
        ("graph", "graph"),
        ("x25519", "shared"),
    ],
)
def test_a_changed_vector_is_reported(name: str, field: str) -> None:
    doc = copy.deepcopy(_doc())
    entry = doc[name][0]  # type: ignore[index]
    value = entry[field]
    entry[field] = value[::-1] if isinstance(value, str | list) else value
    with pytest.raises(VectorMismatch, match=name):
        check_vectors(doc)


def test_published_outputs_are_pinned_even_if_the_file_agrees_with_itself() -> None:
    doc = copy.deepcopy(_doc())
    del doc["aes256_ctr"]
    with pytest.raises(VectorMismatch):
        check_vectors(doc)
    with pytest.raises(VectorMismatch):
        check_vectors({"format": "other"})


def test_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(DATA)]) == 0
    assert capsys.readouterr().out.startswith("ok: aes256_ctr")
    assert main(["nonsense"]) == 2
    broken = tmp_path / "kat.json"
    broken.write_text(DATA.read_text(encoding="utf-8").replace('"count": 17', '"count": 18'))
    assert main(["check", str(broken)]) == 1
    assert "FAILED: prg[1]" in capsys.readouterr().err
