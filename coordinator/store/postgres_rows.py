"""The PostgreSQL schema of the coordinator store, as numbered migrations.

Columns mirror the SQLite schema (``sqlite_rows``) one for one, JSON kept as text, so both
stores map rows to records with the same functions.
"""

from __future__ import annotations

# Migration N brings a database at version N - 1 up to N; each runs in the opening
# transaction with the others, so a failed one leaves the previous version intact.
MIGRATIONS: dict[int, str] = {
    # 1: the schema SQLite has at its version 3 (the state of the store when PostgreSQL came).
    1: """
CREATE TABLE models (
    sha256 TEXT PRIMARY KEY, task_id TEXT, parent_sha256 TEXT REFERENCES models(sha256),
    round_no BIGINT, status TEXT NOT NULL, size BIGINT NOT NULL, manifest TEXT NOT NULL,
    signature BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL, metrics TEXT NOT NULL,
    optimizer_state_sha256 TEXT);
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL,
    model_sha256 TEXT NOT NULL REFERENCES models(sha256),
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE rounds (
    task_id TEXT NOT NULL REFERENCES tasks(task_id), round_no BIGINT NOT NULL,
    stage TEXT NOT NULL, status TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION, deadline DOUBLE PRECISION,
    checked_in BIGINT NOT NULL, selected BIGINT NOT NULL, reporting BIGINT NOT NULL,
    dropped BIGINT NOT NULL, bytes_in BIGINT NOT NULL, result_sha256 TEXT,
    detail TEXT NOT NULL, epsilon DOUBLE PRECISION, noise_stddev DOUBLE PRECISION,
    PRIMARY KEY (task_id, round_no));
CREATE TABLE stages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, task_id TEXT NOT NULL,
    round_no BIGINT NOT NULL, stage TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL,
    FOREIGN KEY (task_id, round_no) REFERENCES rounds(task_id, round_no));
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY, credential_hash TEXT NOT NULL, public_key BYTEA NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION,
    last_seen DOUBLE PRECISION, labels TEXT NOT NULL);
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, note TEXT NOT NULL, used_by TEXT,
    used_at DOUBLE PRECISION);
CREATE TABLE metrics (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id), round_no BIGINT NOT NULL,
    name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE TABLE task_state (
    task_id TEXT NOT NULL REFERENCES tasks(task_id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (task_id, key));
CREATE TABLE audit (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE INDEX metrics_by_task ON metrics(task_id, name);
CREATE INDEX stages_by_round ON stages(task_id, round_no);
""",
    # 2: leases through which coordinator instances share work (``store.leases``), and the
    # model artifacts every instance reads (``store.artifacts``).
    2: """
CREATE TABLE leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL);
CREATE TABLE artifacts (
    sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, data BYTEA NOT NULL);
""",
}

SCHEMA_VERSION = max(MIGRATIONS)

# Applied before any migration: the table recording which ones have run.
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

# Two instances opening one database at once take turns migrating (a transaction-level
# lock: it is released at commit, so it also works behind a transaction-mode pooler).
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7346021917)"

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "SCHEMA_VERSION", "VERSION_TABLE"]
