"""Errors of the operator client, rooted at ``OpsError``; each tells the operator what to do.

    FedrtError
     └── OpsError                      anything the operator client raises on purpose
          ├── OpsConfigError (+UsageError)  no URL or token, an unusable URL, CA or spec file
          ├── UnreachableError          no HTTP answer from the coordinator (local side)
          │    ├── TlsError             the TLS handshake failed (certificate, protocol)
          │    └── NotCoordinatorError  an answer, but not the coordinator's JSON
          └── ApiError                  the coordinator answered with an error (remote side)
               ├── AuthRefusedError     401: the admin token was refused
               ├── NotFoundError        404: no such task, round, model or device
               ├── ConflictError        409: not allowed in the current state
               ├── RateLimitedError     429: ``retry_after`` seconds
               └── ServerError          5xx: the coordinator failed; its log says why

The command line maps each branch to one exit status (``fedrt.ops.cli.EXIT_CODES``).
"""

from __future__ import annotations

from fedrt.errors import FedrtError, UsageError


class OpsError(FedrtError):
    """Base class of everything the operator client raises on purpose."""


class OpsConfigError(OpsError, UsageError):
    """A URL, token, CA file, spec or flag that cannot be used as given."""


class UnreachableError(OpsError):
    """The coordinator could not be reached (refused, timed out, no such host)."""


class TlsError(UnreachableError):
    """The TLS handshake failed: an unverified certificate or a protocol mismatch."""


class NotCoordinatorError(UnreachableError):
    """Something answered at the URL, but not with the coordinator's JSON."""


class ApiError(OpsError):
    """The coordinator refused a request: ``status``, ``error_type`` and its message."""

    def __init__(self, message: str, *, status: int, error_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class AuthRefusedError(ApiError):
    """401: the admin token is missing or wrong."""


class NotFoundError(ApiError):
    """404: the named task, round, model or device does not exist."""


class ConflictError(ApiError):
    """409: the request contradicts the current state (e.g. pause a cancelled task)."""


class RateLimitedError(ApiError):
    """429: too many requests; ``retry_after`` seconds until the next may succeed."""

    def __init__(self, message: str, *, status: int, error_type: str = "", retry_after: float):
        super().__init__(message, status=status, error_type=error_type)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the coordinator failed to handle the request."""


__all__ = [
    "ApiError",
    "AuthRefusedError",
    "ConflictError",
    "NotCoordinatorError",
    "NotFoundError",
    "OpsConfigError",
    "OpsError",
    "RateLimitedError",
    "ServerError",
    "TlsError",
    "UnreachableError",
]
