"""CheckedPasswords: a device's password is hashed once, and nothing else gets through."""

from __future__ import annotations

import pytest

from fedrt.coordinator.security import credentials
from fedrt.coordinator.security.credentials import CheckedPasswords, bcrypt_hash, hash_password


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords that went through the full (PBKDF2 or bcrypt) check, in order."""
    seen: list[str] = []
    real = credentials.verify_password

    def counting(password: str, hashed: str) -> bool:
        seen.append(password)
        return real(password, hashed)

    monkeypatch.setattr(credentials, "verify_password", counting)
    return seen


@pytest.mark.parametrize("make_hash", [hash_password, bcrypt_hash])
def test_a_matching_password_is_hashed_once(full_checks: list[str], make_hash: object) -> None:
    hashed = make_hash("pw-1")  # type: ignore[operator]
    checked = CheckedPasswords()
    assert checked.verify("dev-a", "pw-1", hashed)
    assert checked.verify("dev-a", "pw-1", hashed)
    assert checked.verify("dev-a", "pw-1", hashed)
    assert full_checks == ["pw-1"]


def test_a_wrong_password_is_refused_every_time(full_checks: list[str]) -> None:
    hashed = hash_password("pw-1")
    checked = CheckedPasswords()
    assert checked.verify("dev-a", "pw-1", hashed)
    assert not checked.verify("dev-a", "pw-2", hashed)
    assert not checked.verify("dev-a", "pw-2", hashed)
    assert full_checks == ["pw-1", "pw-2", "pw-2"]
    # The right one still passes from memory after the wrong ones.
    assert checked.verify("dev-a", "pw-1", hashed)
    assert len(full_checks) == 3


def test_a_new_credential_is_checked_in_full(full_checks: list[str]) -> None:
    checked = CheckedPasswords()
    old, new = hash_password("pw-old"), hash_password("pw-new")
    assert checked.verify("dev-a", "pw-old", old)
    # Rotated: the old password against the new hash fails, though it matched before.
    assert not checked.verify("dev-a", "pw-old", new)
    assert checked.verify("dev-a", "pw-new", new)
    assert full_checks == ["pw-old", "pw-old", "pw-new"]


def test_one_devices_password_does_not_open_another(full_checks: list[str]) -> None:
    checked = CheckedPasswords()
    hashed_a, hashed_b = hash_password("pw-a"), hash_password("pw-b")
    assert checked.verify("dev-a", "pw-a", hashed_a)
    assert not checked.verify("dev-b", "pw-a", hashed_b)
    assert full_checks == ["pw-a", "pw-a"]


def test_the_least_recently_used_device_goes_first(full_checks: list[str]) -> None:
    checked = CheckedPasswords(max_devices=2)
    hashes = {d: hash_password("pw-" + d) for d in ("a", "b", "c")}
    assert checked.verify("a", "pw-a", hashes["a"])
    assert checked.verify("b", "pw-b", hashes["b"])
    assert checked.verify("a", "pw-a", hashes["a"])  # a is now the most recent
    assert checked.verify("c", "pw-c", hashes["c"])  # b goes
    assert len(checked) == 2
    assert full_checks == ["pw-a", "pw-b", "pw-c"]
    assert checked.verify("a", "pw-a", hashes["a"])
    assert checked.verify("b", "pw-b", hashes["b"])
    assert full_checks == ["pw-a", "pw-b", "pw-c", "pw-b"]


def test_nothing_in_memory_is_the_password(full_checks: list[str]) -> None:
    checked = CheckedPasswords()
    assert checked.verify("dev-a", "pw-secret", hash_password("pw-secret"))
    held = b"".join(checked._known.values())
    assert b"pw-secret" not in held
    assert len(held) == 32
