"""Content-addressed artifact files on disk: written atomically, named by their sha256."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from fedrt.coordinator.errors import BadArtifactError, BadRequestError, NotFoundError, StoreError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_sha256(value: str) -> str:
    """``value`` if it is 64 lowercase hex digits, else ``BadRequestError``."""
    if not isinstance(value, str) or not _SHA256.match(value):
        raise BadRequestError(f"not a sha256 (64 lowercase hex digits): {value!r}"[:120])
    return value


class BlobWriter:
    """Streams one artifact to a temporary file, hashing as it goes; ``commit`` names it.

    Nothing is visible under its final name until ``commit``: a crash or an ``abort``
    leaves at most a temporary file, which ``BlobStore`` removes on open.
    """

    def __init__(self, store: BlobStore, max_bytes: int) -> None:
        self._store = store
        self._max = max_bytes
        self._digest = hashlib.sha256()
        self.size = 0
        # The first bytes, so callers can check a file type before committing.
        self.head = b""
        self._tmp = store.root / "tmp" / f"{secrets.token_hex(8)}.part"
        self._fh = self._tmp.open("xb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max:
            self.abort()
            raise BadArtifactError(f"artifact larger than the limit of {self._max} bytes")
        if len(self.head) < 16:
            self.head = (self.head + chunk)[:16]
        self._digest.update(chunk)
        self._fh.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self, expected_sha256: str | None = None) -> str:
        """Finish; with ``expected_sha256`` a mismatch aborts with ``BadArtifactError``."""
        sha = self.sha256
        if expected_sha256 is not None and sha != expected_sha256:
            self.abort()
            raise BadArtifactError(f"content sha256 {sha} does not match {expected_sha256}")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        target = self._store.path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._tmp.unlink()  # same content already stored: content addressing dedups
        else:
            os.chmod(self._tmp, 0o444)
            os.replace(self._tmp, target)
            _fsync_dir(target.parent)
        return sha

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # no-op after commit (the temporary file is gone)


class BlobStore:
    """Immutable files under ``root/sha256/ab/abcdef…``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
            (self.root / "sha256").mkdir(parents=True, exist_ok=True)
            for stale in (self.root / "tmp").glob("*.part"):
                stale.unlink()
        except OSError as exc:
            raise StoreError(f"cannot use artifact directory {self.root}: {exc}") from None

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {sha256}") from None

    def writer(self, max_bytes: int) -> BlobWriter:
        return BlobWriter(self, max_bytes)

    def put_bytes(self, data: bytes, *, max_bytes: int | None = None) -> str:
        with self.writer(len(data) if max_bytes is None else max_bytes) as writer:
            writer.write(data)
            return writer.commit()

    def put_file(self, source: Path, *, max_bytes: int) -> str:
        try:
            with Path(source).open("rb") as fh, self.writer(max_bytes) as writer:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    writer.write(chunk)
                return writer.commit()
        except OSError as exc:
            raise BadArtifactError(f"cannot read {source}: {exc.strerror}") from None

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {sha256}") from None

    def verify(self, sha256: str) -> bool:
        """Re-hash the stored file (detects on-disk corruption)."""
        digest = hashlib.sha256()
        try:
            with self.path(sha256).open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        return digest.hexdigest() == sha256


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["BlobStore", "BlobWriter", "check_sha256"]
