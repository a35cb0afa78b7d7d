"""Damage a stored artifact on disk as a failing disk or an operator would, and restore it."""

from __future__ import annotations

import os
from pathlib import Path


def damage(path: Path, *, keep_stat: bool = False) -> bytes:
    """Flip the first byte in place and return the good bytes. The mtime moves on by a
    second (a test is faster than the file system's clock tick); ``keep_stat``: it stays,
    as under bit rot."""
    good = path.read_bytes()
    path.chmod(0o644)
    _write(path, bytes([good[0] ^ 1]) + good[1:], bump=not keep_stat)
    return good


def restore(path: Path, good: bytes) -> None:
    _write(path, good, bump=True)


def _write(path: Path, data: bytes, *, bump: bool) -> None:
    st = path.stat()
    with path.open("r+b") as fh:  # in place: same inode, same size
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + (10**9 if bump else 0)))
