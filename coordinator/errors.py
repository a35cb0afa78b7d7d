"""Exceptions raised by the coordinator service, rooted at ``CoordinatorError``.

    FedrtError
     └── CoordinatorError             anything the coordinator raises on purpose
          ├── ConfigError             a config value (TOML, env, flag) cannot be used (+UsageError)
          │    └── BackupError        a backup directory that is not one, or a restore refused
          ├── AuthError               missing or wrong admin token / enrollment token
          ├── NotFoundError           a task, round, device or model that does not exist
          ├── ConflictError           a request that contradicts current state
          │    ├── IllegalTransition  a task/stage/model status move that is not allowed
          │    ├── LeaseLost          another instance took over this one's work
          │    └── RaceLost           a transaction lost a serialization race (retry)
          ├── BadRequestError         malformed input on an endpoint or topic
          │    └── BadArtifactError   a model upload that is not a valid exported model
          ├── RateLimitedError        one device sent more than its allowance
          ├── StoreError              the store could not be read or written
          │    └── CorruptArtifactError  a stored file no longer hashes to its name
          ├── SigningKeyError         the coordinator's Ed25519 key is missing or unusable
          ├── EvaluationError         a model the held-out set (--eval-data) cannot evaluate
          └── BrokerError             the MQTT broker could not be started or reached
               └── BrokerRefused      a broker (node) refused our client: credentials, permissions

The HTTP layer maps each class to one status code (``HTTP_STATUS``), so handlers never
choose codes themselves and a new subclass inherits its parent's mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fedrt.errors import FedrtError, UsageError

T = TypeVar("T")


class CoordinatorError(FedrtError):
    """Base class of everything the coordinator raises on purpose."""


class ConfigError(CoordinatorError, UsageError):
    """A configuration value (file, environment or flag) that cannot be used."""


class BackupError(ConfigError):
    """A backup or restore refused: not a backup, altered files, a data dir in the way."""


class AuthError(CoordinatorError):
    """A request without valid credentials (admin token or enrollment token)."""


class NotFoundError(CoordinatorError):
    """The named task, round, device or model does not exist."""


class ConflictError(CoordinatorError):
    """The request contradicts the current state (e.g. a duplicate id)."""


class IllegalTransition(ConflictError):
    """A status change that the lifecycle does not allow (e.g. resume a cancelled task)."""


class LeaseLost(ConflictError):
    """This instance no longer owns the work it was doing (its lease expired and another
    instance took it over); whatever it was about to write was not written."""


class RaceLost(ConflictError):
    """A transaction lost a serialization race with another one (another instance, another
    request): nothing was written, and running it again may succeed (``retry_races``)."""


class BadRequestError(CoordinatorError):
    """Input that does not decode or validate."""


class BadArtifactError(BadRequestError):
    """An uploaded model that is not a valid ``fedrt export`` directory."""


class RateLimitedError(CoordinatorError):
    """A device exceeded its request allowance; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(CoordinatorError):
    """The persistent store failed (I/O, corruption, schema mismatch)."""


class CorruptArtifactError(StoreError):
    """A content-addressed file on the coordinator's disk whose bytes no longer match its
    sha256: it is never served nor trained from (HTTP 500, like any store failure)."""


class SigningKeyError(CoordinatorError):
    """The coordinator's signing key cannot be created, read or used."""


class EvaluationError(CoordinatorError):
    """A model version the coordinator's held-out set (``--eval-data``) cannot evaluate: its
    shapes do not fit the set, or LiteRT cannot run it. The version is held back."""


class BrokerError(CoordinatorError):
    """The MQTT broker could not be started, reached or reconfigured."""


class BrokerRefused(BrokerError):
    """A broker or cluster node answered and refused this client (bad credentials, a client
    without permission, a protocol version it does not speak): retrying will not help."""


# Most specific class first: ``status_for`` walks the MRO, so subclasses need no entry.
HTTP_STATUS: dict[type[CoordinatorError], int] = {
    ConfigError: 500,
    AuthError: 401,
    NotFoundError: 404,
    ConflictError: 409,
    BadRequestError: 400,
    RateLimitedError: 429,
    StoreError: 500,
    SigningKeyError: 500,
    BrokerError: 503,
    CoordinatorError: 500,
}


RACE_ATTEMPTS = 5


def retry_races(fn: Callable[[], T], attempts: int = RACE_ATTEMPTS) -> T:
    """``fn()``, run again while its transaction loses a serialization race (``RaceLost``:
    nothing of it was written), at most ``attempts`` times in all."""
    for _ in range(attempts - 1):
        try:
            return fn()
        except RaceLost:
            continue
    return fn()


def status_for(exc: CoordinatorError) -> int:
    """The HTTP status code that reports ``exc``."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


__all__ = [
    "HTTP_STATUS",
    "AuthError",
    "BackupError",
    "BadArtifactError",
    "BadRequestError",
    "BrokerError",
    "BrokerRefused",
    "ConfigError",
    "ConflictError",
    "CoordinatorError",
    "CorruptArtifactError",
    "EvaluationError",
    "IllegalTransition",
    "LeaseLost",
    "NotFoundError",
    "RaceLost",
    "RateLimitedError",
    "SigningKeyError",
    "StoreError",
    "retry_races",
    "status_for",
]
