"""Model artifacts in the store, content-addressed, so every coordinator instance can read
every version (each keeps a disk cache of them by hash: ``models.blobs``).

The bytes are checked against their name on the way in and on the way out: a row that no
longer hashes to its sha256 is a ``CorruptArtifactError``, never served.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fedrt.coordinator.errors import BadRequestError, CorruptArtifactError, NotFoundError

_PUT = "INSERT INTO artifacts (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING"
_GET = "SELECT data FROM artifacts WHERE sha256 = ?"
_HAS = "SELECT 1 FROM artifacts WHERE sha256 = ?"


def checked(sha256: str, data: bytes) -> bytes:
    """``data`` if it hashes to ``sha256``."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BadRequestError(f"artifact bytes do not hash to {sha256}")
    return data


def intact(sha256: str, data: bytes) -> bytes:
    """``data`` read back from the store, if it still hashes to its name."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptArtifactError(f"artifact {sha256} in the store does not hash to its name")
    return data


class SqlArtifacts:
    """The artifact methods of ``Store`` for the SQL stores (mixed into ``SqliteStore``)."""

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def put_artifact(self, sha256: str, data: bytes) -> None:
        self._q(_PUT, (sha256, len(data), checked(sha256, data)))

    def get_artifact(self, sha256: str) -> bytes:
        rows = self._q(_GET, (sha256,))
        if not rows:
            raise NotFoundError(f"no artifact {sha256} in the store")
        return intact(sha256, bytes(rows[0][0]))

    def has_artifact(self, sha256: str) -> bool:
        return bool(self._q(_HAS, (sha256,)))


__all__ = ["SqlArtifacts", "checked", "intact"]
