"""SQLite-only guarantees: WAL, persistence, append-only audit, consistency after kill -9."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedrt.coordinator.errors import StoreError
from fedrt.coordinator.records import AuditEntry
from fedrt.coordinator.store import SqliteStore
from fedrt.coordinator.store.sqlite_rows import SCHEMA, SCHEMA_VERSION
from tests.coordinator.store_conformance import model, round_, sha, task

WRITER = textwrap.dedent(
    """
    import sys
    from fedrt.coordinator.records import AuditEntry, MetricRecord
    from fedrt.coordinator.store.sqlite import SqliteStore
    from tests.coordinator.store_conformance import device

    store = SqliteStore(sys.argv[1])
    i = len(store.list_devices())
    print("ready", flush=True)
    while True:
        i += 1
        with store.transaction():
            store.add_device(device(f"d{i:06d}", at=float(i)))
            store.append_audit(AuditEntry(at=i, actor="t", action="enroll", subject=f"d{i}"))
            store.add_metric(MetricRecord(task_id="t1", round_no=1, name="n", value=i, at=i))
            store.update_round("t1", 1, checked_in=i, detail={"last": i})
    """
)


def _seed(path: Path) -> None:
    store = SqliteStore(path)
    store.add_model(model("m0"))
    store.create_task(task("t1", sha("m0")))
    store.create_round(round_("t1", 1, sha("m0")))
    store.close()


def _check_consistent(path: Path) -> int:
    store = SqliteStore(path)
    try:
        devices = store.list_devices()
        enrolls = [e for e in store.list_audit(limit=10**6) if e.action == "enroll"]
        metrics = store.list_metrics("t1", "n")
        rnd = store.get_round("t1", 1)
        assert len(devices) == len(enrolls) == len(metrics) == rnd.checked_in
        assert rnd.detail == ({"last": rnd.checked_in} if rnd.checked_in else {})
        return rnd.checked_in
    finally:
        store.close()


def test_kill_9_at_any_point_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    _seed(path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    progress = []
    for delay in (0.05, 0.13, 0.29):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        progress.append(_check_consistent(path))
    # Each run must have committed something, and nothing committed may be lost.
    assert progress == sorted(progress)
    assert progress[-1] > progress[0] > 0


def test_wal_persistence_and_append_only_audit(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    entry = store.append_audit(AuditEntry(at=1, actor="admin", action="x", subject="y"))
    store.close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE audit SET actor = 'mallory'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM audit")
    finally:
        raw.close()
    reopened = SqliteStore(path)
    assert reopened.list_audit() == [entry]
    reopened.close()


def test_foreign_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


_V3_COLUMNS = (",\n    optimizer_state_sha256 TEXT);", ");")
_V2_COLUMNS = (" epsilon REAL, noise_stddev REAL,", "")
# Version 4 added the leases and artifacts tables, just before the audit triggers.
_V4 = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS leases") : SCHEMA.index("CREATE TRIGGER")]
_V4_LEASES = (_V4, "")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_older_stores_are_migrated_in_place(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.sqlite3"
    old = SCHEMA.replace(*_V4_LEASES)
    if version < 3:
        old = old.replace(*_V3_COLUMNS)
    if version == 1:
        old = old.replace(*_V2_COLUMNS)
    assert SCHEMA.count(_V3_COLUMNS[0]) == 1
    assert old.count(_V2_COLUMNS[0]) == (version >= 2)
    assert "leases" not in old
    assert "artifacts" not in old
    raw = sqlite3.connect(path)
    raw.executescript(f"{old} PRAGMA user_version = {version};")
    # A version stored before the migration (no optimizer state before version 3).
    row = (sha("m0"), None, None, None, "promoted", 1, "{}", b"s", 1.0, "{}")
    row += (None,) * (version >= 3)
    raw.execute(f"INSERT INTO models VALUES ({', '.join(['?'] * len(row))})", row)
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    try:
        assert store.get_model(sha("m0")).optimizer_state_sha256 is None
        store.create_task(task("t1", sha("m0")))
        store.create_round(round_("t1", 1, sha("m0")))
        assert store.update_round("t1", 1, epsilon=0.5).epsilon == 0.5
        child = dataclasses.replace(model("m1", parent=sha("m0")), optimizer_state_sha256=sha("s"))
        store.add_model(child)
        assert store.get_model(sha("m1")) == child
        assert store.claim_lease("task:t1", "a", now=1.0, ttl=1.0) is not None
        store.put_artifact(sha("blob"), b"blob")
    finally:
        store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    raw.close()


def test_garbage_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SqliteStore(path)
