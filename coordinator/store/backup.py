"""Backups of a coordinator's state (database, files) taken while it runs, and their restore.

A backup directory holds the database (SQLite's online backup API: a consistent snapshot
while the service writes), a copy of each named data-dir file with its mode, and
``fedrt-backup.json``, written last, listing each file's sha256, size and mode, the fedrt
version and the time: a directory without it is not a backup. The database is copied first,
so every content-addressed file a row of the snapshot names is already in the data dir when
the files are copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import fedrt
from fedrt.coordinator.errors import BackupError

MANIFEST = "fedrt-backup.json"
FORMAT = "fedrt-coordinator-backup/1"
DATABASE = "coordinator.sqlite3"
_CHUNK = 1 << 20


def create_backup(
    db_path: Path, data_dir: Path, entries: Iterable[str], dest: Path
) -> dict[str, Any]:
    """Copy the database and ``entries`` (files or folders under ``data_dir``) into ``dest``."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty directory: choose a new one")
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}: is the data dir right?")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = [_backup_database(db_path, dest / DATABASE)]
    for rel in _walk(data_dir, entries):
        src, out = data_dir / rel, dest / "files" / rel
        try:
            files.append(_copy(src, out, f"files/{rel}"))
        except FileNotFoundError:
            continue  # removed while we walked (a temporary file): not part of the state
    manifest = {
        "format": FORMAT,
        "fedrt_version": fedrt.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": DATABASE,
        "files": files,
    }
    _write_new(dest / MANIFEST, json.dumps(manifest, indent=1).encode() + b"\n", 0o600)
    return manifest


def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of backup ``src``, every file checked against it; else ``BackupError``."""
    try:
        manifest = json.loads((src / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{src} is not a fedrt coordinator backup (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src / MANIFEST} is not a {FORMAT} manifest")
    try:
        for entry in manifest["files"]:
            path, digest, size = _safe(entry["path"]), entry["sha256"], entry["size"]
            if not isinstance(entry["mode"], int):
                raise TypeError(entry["mode"])
            if _digest(src / path) != (digest, size):
                raise BackupError(
                    f"{src / path} does not match the manifest: the backup is damaged"
                )
    except (KeyError, TypeError):
        raise BackupError(f"{src / MANIFEST} is malformed") from None
    except FileNotFoundError as exc:
        raise BackupError(f"{exc.filename} is missing: the backup is incomplete") from None
    return manifest


def restore_backup(
    src: Path, db_path: Path, data_dir: Path, *, force: bool = False
) -> dict[str, Any]:
    """Verify backup ``src``, then write its database to ``db_path`` and files to ``data_dir``."""
    manifest = read_manifest(src)
    if not force:
        if data_dir.exists() and any(data_dir.iterdir()):
            raise BackupError(f"{data_dir} is not empty: restore into a new data dir, or --force")
        if db_path.exists():
            raise BackupError(f"{db_path} exists: restore into a new database, or --force")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A WAL left beside an overwritten database would be replayed onto the wrong file.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    for entry in manifest["files"]:
        rel = PurePosixPath(entry["path"])
        if rel == PurePosixPath(manifest["database"]):
            target = db_path
        elif rel.parts[0] == "files":
            target = data_dir.joinpath(*rel.parts[1:])
        else:
            raise BackupError(f"{src / MANIFEST} names {rel}, outside the backup's layout")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        copied = _copy(src / rel, target, str(rel), mode=entry["mode"] & 0o777)
        if copied["sha256"] != entry["sha256"]:
            raise BackupError(f"{target} differs from {src / rel} after copying: check the disk")
    return manifest


def _backup_database(db_path: Path, out: Path) -> dict[str, Any]:
    source = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    target = sqlite3.connect(out)
    try:
        source.backup(target)
        # The copy is a plain rollback-journal file: no WAL to carry beside it.
        target.execute("PRAGMA journal_mode=DELETE")
        # Who owned which task is about the processes running now, not about the data: a
        # coordinator started from this copy takes every task at once.
        if target.execute("SELECT 1 FROM sqlite_master WHERE name = 'leases'").fetchone():
            target.execute("DELETE FROM leases")
            target.commit()
        (ok,) = target.execute("PRAGMA quick_check").fetchone()
        if ok != "ok":
            raise BackupError(f"the database copy fails its integrity check: {ok}")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {db_path}: {exc}") from None
    finally:
        target.close()
        source.close()
    digest, size = _digest(out)
    return {"path": DATABASE, "sha256": digest, "size": size, "mode": 0o600}


def _walk(root: Path, entries: Iterable[str]) -> Iterator[str]:
    for name in entries:
        top = root / name
        if top.is_file():
            yield name
        elif top.is_dir():
            for path in sorted(top.rglob("*")):
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    yield path.relative_to(root).as_posix()


def _copy(src: Path, out: Path, name: str, *, mode: int | None = None) -> dict[str, Any]:
    """Copy ``src`` to ``out`` (its mode, or ``mode``); the copy's sha256 goes in the entry."""
    mode = stat.S_IMODE(src.stat().st_mode) if mode is None else mode
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.unlink(missing_ok=True)
    # Created with its final mode: a secret is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, out)
    digest, size = _digest(out)
    return {"path": name, "sha256": digest, "size": size, "mode": mode}


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _safe(name: object) -> str:
    """A manifest path: relative, inside the backup (a crafted ``..`` is refused)."""
    if not isinstance(name, str):
        raise TypeError(name)
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"the manifest names {name!r}, outside the backup")
    return name


__all__ = ["DATABASE", "FORMAT", "MANIFEST", "create_backup", "read_manifest", "restore_backup"]
