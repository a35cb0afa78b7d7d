"""Content-addressed artifact files on disk: written atomically, named by their sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fedrt.coordinator.errors import (
    BadArtifactError,
    BadRequestError,
    CorruptArtifactError,
    NotFoundError,
    StoreError,
)

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What a blob holds, as the ``kind`` label of corruption reports.
MODEL = "model"
OPTIMIZER_STATE = "optimizer_state"
# A verdict holds while the file's (device, inode, size, mtime_ns) stay the same: any write
# or replacement changes one of them. Bit rot below the file system changes none, so a
# verdict also expires: each file is hashed again at most this often while it is in use.
DEFAULT_REVERIFY_S = 3600.0
StatKey = tuple[int, int, int, int]
# Called once per corrupt state of a file with (kind, sha256), e.g. to count it.
CorruptListener = Callable[[str, str], None]


class ArtifactMirror(Protocol):
    """Where artifacts are shared between coordinator instances (the store: ``Store``)."""

    def put_artifact(self, sha256: str, data: bytes) -> None: ...

    def get_artifact(self, sha256: str) -> bytes: ...


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
        if target.exists() and self._store.verify(sha):
            self._tmp.unlink()  # same content already stored: content addressing dedups
        else:  # new, or the stored copy is corrupt: the fresh bytes replace it
            os.chmod(self._tmp, 0o444)
            os.replace(self._tmp, target)
            _fsync_dir(target.parent)
        if self._store.mirror is not None:
            self._store.mirror.put_artifact(sha, target.read_bytes())
        return sha

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # no-op after commit (the temporary file is gone)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a stored file hashed to its name when it looked like ``key`` (None: unknown)."""

    sha256: str
    path: Path
    key: StatKey
    ok: bool | None

    @property
    def size(self) -> int:
        return self.key[2]

    def require(self) -> Path:
        """The file's path if it verified, else ``CorruptArtifactError``."""
        if not self.ok:
            raise CorruptArtifactError(f"artifact {self.sha256} on disk does not hash to its name")
        return self.path


class BlobStore:
    """Immutable files under ``root/sha256/ab/abcdef…``.

    Reads are verified: ``read`` hashes the bytes it returns, ``check`` hashes a file once
    per state of it (see ``DEFAULT_REVERIFY_S``). A corrupt file raises
    ``CorruptArtifactError``, and is logged and reported to ``on_corrupt`` once per state.
    """

    def __init__(
        self,
        root: Path,
        *,
        reverify_after_s: float = DEFAULT_REVERIFY_S,
        clock: Callable[[], float] = time.monotonic,
        mirror: ArtifactMirror | None = None,
    ) -> None:
        self.root = Path(root)
        # Several instances: every artifact written goes to the store too, and one missing
        # here is fetched from it (this directory is then a cache by hash).
        self.mirror = mirror
        self.on_corrupt: list[CorruptListener] = []
        self._reverify_after_s = reverify_after_s
        self._clock = clock
        # sha256 -> (the file's stat key when hashed, whether it matched, when)
        self._verdicts: dict[str, tuple[StatKey, bool, float]] = {}
        self._lock = threading.Lock()
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
        try:
            return self.verdict(sha256) is not None
        except NotFoundError:
            return False

    def size(self, sha256: str) -> int:
        return self.verdict(sha256).size

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

    def read(self, sha256: str, *, kind: str = MODEL) -> bytes:
        """The stored bytes, hashed on the way: never bytes that differ from their name."""
        verdict = self.verdict(sha256)
        try:
            data = verdict.path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {sha256}") from None
        self.settle(verdict, hashlib.sha256(data).hexdigest(), kind=kind).require()
        return data

    def check(self, sha256: str, *, kind: str = MODEL) -> Path:
        """The file's path once it verifies; hashes it only if it changed (or the verdict
        expired) since it was last hashed. ``NotFoundError`` if it is missing."""
        verdict = self.verdict(sha256)
        if verdict.ok is None:
            verdict = self.settle(verdict, file_sha256(verdict.path), kind=kind)
        return verdict.require()

    def verify(self, sha256: str, *, kind: str = MODEL) -> bool:
        """Re-hash the stored file now, whatever was found before (False if missing)."""
        try:
            verdict = self.verdict(sha256)
            return bool(self.settle(verdict, file_sha256(verdict.path), kind=kind).ok)
        except NotFoundError:
            return False

    def verdict(self, sha256: str) -> Verdict:
        """What is known about the file as it is now, without hashing it."""
        path = self.path(sha256)
        try:
            st = path.stat()
        except FileNotFoundError:
            if self.mirror is None:
                raise NotFoundError(f"no artifact {sha256}") from None
            st = self._fetch(sha256, path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            seen = self._verdicts.get(sha256)
        fresh = seen is not None and self._clock() - seen[2] < self._reverify_after_s
        return Verdict(sha256, path, key, seen[1] if fresh and seen and seen[0] == key else None)

    def _fetch(self, sha256: str, path: Path) -> os.stat_result:
        """Copy an artifact from the mirror into this cache (``NotFoundError`` if it has none)."""
        assert self.mirror is not None
        data = self.mirror.get_artifact(sha256)  # checked against its name there
        tmp = self.root / "tmp" / f"{secrets.token_hex(8)}.part"
        try:
            tmp.write_bytes(data)
            os.chmod(tmp, 0o444)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot cache artifact {sha256}: {exc.strerror}") from None
        log.info("artifact %s fetched from the store", sha256)
        return path.stat()

    def settle(self, verdict: Verdict, digest: str, *, kind: str) -> Verdict:
        """Record that the file, as ``verdict`` saw it, hashed to ``digest``.

        A file found corrupt is logged and reported once per state of it, not once per
        request; one that verifies again after being corrupt is logged too.
        """
        ok = digest == verdict.sha256
        with self._lock:
            before = self._verdicts.get(verdict.sha256)
            self._verdicts[verdict.sha256] = (verdict.key, ok, self._clock())
        was_bad = before is not None and not before[1]
        known = was_bad and before is not None and before[0] == verdict.key
        if not ok and not known:
            log.error("artifact %s (%s) is corrupt on disk: it hashes to %s; it is not used "
                      "until its bytes are restored", verdict.sha256, kind, digest)  # fmt: skip
            for listener in self.on_corrupt:
                listener(kind, verdict.sha256)
        elif ok and was_bad:
            log.warning("artifact %s (%s) verifies again", verdict.sha256, kind)
        return Verdict(verdict.sha256, verdict.path, verdict.key, ok)


def file_sha256(path: Path) -> str:
    """Hash a file in 1 MiB reads; ``NotFoundError`` if it is gone."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise NotFoundError(f"no artifact {path.name}") from None
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "DEFAULT_REVERIFY_S",
    "MODEL",
    "OPTIMIZER_STATE",
    "ArtifactMirror",
    "BlobStore",
    "BlobWriter",
    "CorruptListener",
    "Verdict",
    "check_sha256",
    "file_sha256",
]
