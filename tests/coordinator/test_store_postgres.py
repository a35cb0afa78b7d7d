"""PostgresStore beyond the conformance suite: migrations, bad URLs, dead and lost servers."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from fedrt.coordinator.errors import ConflictError, StoreError
from fedrt.coordinator.records import AuditEntry, EnrollmentTokenRecord
from fedrt.coordinator.store.postgres import SCHEMA_VERSION, PostgresStore
from tests.coordinator.store_conformance import device, model, sha, task
from tests.support.process import free_port


def test_schema_is_migrated_once_and_data_survives_a_reopen(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    store.add_model(model("m0"))
    store.create_task(task("t1", sha("m0")))
    store.close()
    again = PostgresStore(postgres_url)
    try:
        assert [t.task_id for t in again.list_tasks()] == ["t1"]
    finally:
        again.close()
    with psycopg.connect(postgres_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this fedrt"):
        PostgresStore(postgres_url)


def test_the_audit_log_refuses_changes_in_the_database_too(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        store.append_audit(AuditEntry(at=1, actor="a", action="x", subject="s"))
    finally:
        store.close()
    with psycopg.connect(postgres_url) as conn, pytest.raises(psycopg.Error, match="append-only"):
        conn.execute("DELETE FROM audit")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:hunter2@h/db", "must start with postgresql://"),
        ("postgresql://u:hunter2@[::1/db", "does not parse"),
        ("postgresql://u:hunter2@127.0.0.1:{port}/db", "cannot open the store at postgresql://"),
    ],
)
def test_bad_or_dead_urls_are_store_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        PostgresStore(url.format(port=free_port()))
    assert "hunter2" not in str(info.value)


def test_a_lost_connection_is_a_store_error_and_the_next_call_reconnects(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    try:
        store.add_device(device("d1"))

        def write_while_the_server_drops_us() -> None:
            with store.transaction():
                store.add_device(device("d2"))
                with psycopg.connect(postgres_url, autocommit=True) as admin:
                    # Every backend of this database but the admin's own: the store's pool.
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                store.add_device(device("d3"))

        with pytest.raises(StoreError, match=r"postgresql://127\.0\.0\.1"):
            write_while_the_server_drops_us()
        # The half-done transaction is gone; the pool replaced the dead connection.
        assert [d.device_id for d in store.list_devices()] == ["d1"]
    finally:
        store.close()


def test_the_coordinator_imports_without_psycopg_and_says_what_is_missing() -> None:
    # A fresh interpreter where importing psycopg fails, as on a SQLite-only install.
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import fedrt.coordinator, fedrt.coordinator.service, fedrt.coordinator.store\n"
        "from fedrt.coordinator.store import PostgresStore\n"
        "from fedrt.coordinator.errors import StoreError\n"
        "try:\n"
        "    PostgresStore('postgresql://127.0.0.1/db')\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "fedrt[postgres]" in out.stdout


def test_two_stores_racing_for_one_enrollment_token_use_it_once(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    token = EnrollmentTokenRecord(token_hash="h1", created_at=0, expires_at=10)
    first.add_enrollment_token(token)
    outcome: list[BaseException | EnrollmentTokenRecord] = []

    def second_consumes() -> None:
        try:
            outcome.append(second.consume_enrollment_token("h1", device_id="d2", at=2.0))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    try:
        with first.transaction():
            first.consume_enrollment_token("h1", device_id="d1", at=1.0)
            racer = threading.Thread(target=second_consumes)
            racer.start()
            # Commit only once the second store read the token as unused and waits on our lock.
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                for _ in range(600):
                    waiting = admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    racer.join(0.05)
                else:
                    raise AssertionError("the second store never waited for the first")
        racer.join(60)
        assert not racer.is_alive()
        (result,) = outcome
        assert isinstance(result, ConflictError)
        assert "nothing was written" in str(result)
        assert first.list_enrollment_tokens()[0].used_by == "d1"
    finally:
        first.close()
        second.close()
