"""Credentials: broker-compatible password hashes and ``Secret``, a string never shown.

Device MQTT passwords (also their HTTP Basic credentials) are stored only as hashes the
broker reads, so one hash serves the broker's password file, the embedded broker and the
HTTP API alike: Mosquitto 2's ``$7$`` PBKDF2-SHA512, or bcrypt for a NATS cluster (the
only hash nats-server reads).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

# mosquitto_passwd uses 101 iterations of PBKDF2-SHA512; a thousand costs a broker ~1 ms per
# connect and makes a leaked password file far more expensive to attack.
PBKDF2_ITERATIONS = 1000
_SALT_BYTES = 12  # what mosquitto itself uses for its $7$ hashes


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash ``password`` in Mosquitto 2's ``$7$`` (PBKDF2-SHA512) password-file format."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


# The passwords are 24 random URL-safe bytes (~190 bits): no cost factor makes guessing
# one feasible or infeasible, so bcrypt's cost only has to keep every node's check cheap
# (nats-server runs it at each connect): 2^6 rounds take ~5 ms here (2^10: ~75 ms).
BCRYPT_ROUNDS = 6


def bcrypt_hash(password: str, *, rounds: int = BCRYPT_ROUNDS) -> str:
    """Hash ``password`` with bcrypt (``$2b$``), as nats-server's config takes it."""
    import bcrypt  # only a coordinator with a NATS broker needs it

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def is_bcrypt(hashed: str) -> bool:
    return hashed.startswith(("$2a$", "$2b$", "$2y$"))


def verify_password(password: str, hashed: str) -> bool:
    """Check ``password`` against a ``$7$`` or bcrypt hash (constant-time comparison)."""
    if is_bcrypt(hashed):
        import bcrypt

        try:
            return bool(bcrypt.checkpw(password.encode(), hashed.encode()))
        except ValueError:
            return False
    try:
        _, kind, iterations, salt64, digest64 = hashed.split("$")
        if kind != "7":
            return False
        salt, expected = base64.b64decode(salt64), base64.b64decode(digest64)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    except ValueError:
        return False
    return secrets.compare_digest(digest, expected)


class CheckedPasswords:
    """Passwords already found to match their hash, so that a device's every HTTP request
    does not pay a PBKDF2 (~2 ms) or bcrypt (~5 ms) check on the coordinator's state thread:
    a thousand devices fetching a round's model made ~2,300 such checks a round.

    What is kept is, per device, a keyed digest of (hash, password) under a key that lives
    only in this process: nothing in memory verifies a password without it, and a new
    credential (another hash) or another password misses and is checked in full. Revocation
    is not cached (callers read the device first). At most ``max_devices`` devices are kept
    (least recently used first out).
    """

    def __init__(self, max_devices: int = 100_000) -> None:
        self._key = secrets.token_bytes(32)
        self._max = max_devices
        self._known: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, device_id: str, password: str, hashed: str) -> bool:
        """``verify_password(password, hashed)``, from memory when it matched before."""
        digest = hmac.digest(self._key, f"{hashed}\0{password}".encode(), "sha256")
        with self._lock:
            known = self._known.get(device_id)
            if known is not None and hmac.compare_digest(known, digest):
                self._known.move_to_end(device_id)
                return True
        if not verify_password(password, hashed):
            return False
        with self._lock:
            self._known[device_id] = digest
            self._known.move_to_end(device_id)
            while len(self._known) > self._max:
                self._known.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._known)


class Secret:
    """A string that never shows in ``repr``, logs or tracebacks; ``reveal()`` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def make(value: object) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, str):
                return cls(value)
            # Its own error type, so that the value is never echoed (validation.explain).
            raise PydanticCustomError("secret_type", "must be str")

        return core_schema.no_info_plain_validator_function(
            make, serialization=core_schema.plain_serializer_function_ser_schema(lambda _: "***")
        )


__all__ = [
    "BCRYPT_ROUNDS",
    "PBKDF2_ITERATIONS",
    "CheckedPasswords",
    "Secret",
    "bcrypt_hash",
    "hash_password",
    "is_bcrypt",
    "verify_password",
]
