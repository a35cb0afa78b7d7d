"""The operator's client of the coordinator's REST API, and the ``fedrt`` commands over it.

Standard library only (urllib, ssl, json): an operator's laptop needs no aiohttp or numpy.
"""

from fedrt.ops.client import TASK_ACTIONS, OpsClient
from fedrt.ops.connection import Connection, load_connection
from fedrt.ops.errors import (
    ApiError,
    AuthRefusedError,
    ConflictError,
    NotCoordinatorError,
    NotFoundError,
    OpsConfigError,
    OpsError,
    RateLimitedError,
    ServerError,
    TlsError,
    UnreachableError,
)

__all__ = [
    "TASK_ACTIONS",
    "ApiError",
    "AuthRefusedError",
    "ConflictError",
    "Connection",
    "NotCoordinatorError",
    "NotFoundError",
    "OpsClient",
    "OpsConfigError",
    "OpsError",
    "RateLimitedError",
    "ServerError",
    "TlsError",
    "UnreachableError",
    "load_connection",
]
