"""The PostgreSQL implementation of the coordinator store (psycopg 3, pooled connections).

Calls are synchronous and thread-safe: each borrows a pooled connection (one per outermost
transaction, per thread); the coordinator makes them from its state thread
(``coordinator.state_thread``), so a slow database never stalls its network loop. Model
artifacts are rows too (``store.artifacts``), and the leases through which several instances
share the work (``store.leases``).

The SQL statements are SqliteStore's (both stores share one portable subset of SQL and the
same column order); this class supplies the connections, the transactions, the schema
migrations and the mapping of psycopg's errors to the coordinator's: ``IntegrityError`` and
a lost serialization race -> ``ConflictError``, any other database or pool failure (a lost
connection included) -> ``StoreError``. psycopg is imported only when a store is opened, so
``fedrt.coordinator`` imports without it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from fedrt.coordinator.errors import ConflictError, RaceLost, StoreError
from fedrt.coordinator.records import AuditEntry
from fedrt.coordinator.store.postgres_rows import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
)
from fedrt.coordinator.store.sqlite import SqliteStore
from fedrt.coordinator.store.sqlite_rows import js

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

# Seconds to wait for a new connection (at open) or for a free pooled one (per call).
CONNECT_TIMEOUT_S = 10
POOL_TIMEOUT_S = 30.0
POOL_MAX_SIZE = 8
URL_SCHEMES = ("postgresql://", "postgres://")


# What a caller sees when another transaction changed the same rows first.
RACED = "another coordinator changed the same rows at the same time; nothing was written"


def _serializable(conn: psycopg.Connection[Any]) -> None:
    """SQLite runs one transaction at a time; SERIALIZABLE keeps that promise here (the
    store's read-check-write methods, such as using an enrollment token, stay atomic when
    several connections race): the later of two conflicting transactions fails."""
    from psycopg import IsolationLevel

    conn.isolation_level = IsolationLevel.SERIALIZABLE


class PostgresStore(SqliteStore):
    """A pool of connections to one database; each outermost transaction owns one of them."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError(
                "a postgresql:// store needs psycopg: pip install 'fedrt[postgres]'"
            ) from None
        if not url.startswith(URL_SCHEMES):
            raise StoreError("store URL must start with postgresql:// or postgres://")
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            # The message quotes the URL, password included: say only that it is malformed.
            raise StoreError("store URL does not parse as a PostgreSQL URL") from None
        self._secret = str(params.get("password") or "")
        host, port = params.get("host") or "localhost", params.get("port") or 5432
        self.where = f"postgresql://{host}:{port}/{params.get('dbname') or ''}"
        self._local = threading.local()
        try:
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                self._migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store at {self.where}: {self._clean(exc)}") from None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            timeout=POOL_TIMEOUT_S,
            # A connection the server dropped is noticed and replaced before it is lent.
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
            configure=_serializable,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except Exception as exc:  # psycopg_pool.PoolTimeout and psycopg.Error alike
            self._pool.close()
            raise StoreError(f"cannot open the store at {self.where}: {self._clean(exc)}") from None

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Bring the schema up to ``SCHEMA_VERSION`` in one transaction, or refuse."""
        with conn.transaction():
            conn.execute(MIGRATION_LOCK)
            conn.execute(VERSION_TABLE)
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where}: schema version {version} is newer than this fedrt "
                    f"understands ({SCHEMA_VERSION}); upgrade fedrt"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[step].encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (step,))

    def _clean(self, exc: BaseException) -> str:
        """The error's first line, never the password (libpq messages may echo options)."""
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return text.replace(self._secret, "***") if self._secret else text

    @contextmanager
    def transaction(self) -> Iterator[None]:
        import psycopg

        if getattr(self._local, "conn", None) is not None:
            yield  # nested: joins the outer transaction of this thread
            return
        try:
            conn = self._pool.getconn()
        except Exception as exc:  # PoolTimeout, PoolClosed
            raise StoreError(f"no connection to {self.where}: {self._clean(exc)}") from None
        self._local.conn = conn
        try:
            yield
        except BaseException:
            self._local.conn = None
            self._rollback(conn)
            raise
        else:
            self._local.conn = None
            try:
                conn.commit()
            except psycopg.errors.SerializationFailure:
                self._rollback(conn)
                raise RaceLost(RACED) from None
            except Exception as exc:
                self._rollback(conn)
                raise StoreError(f"commit failed at {self.where}: {self._clean(exc)}") from None
        finally:
            self._local.conn = None
            self._pool.putconn(conn)  # a broken connection is discarded by the pool

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> None:
        import psycopg

        # A failure here means the connection is gone, and the transaction died with it.
        with suppress(psycopg.Error):
            conn.rollback()

    def close(self) -> None:
        self._pool.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        import psycopg

        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None:
            with self.transaction():
                return self._q(sql, args)
        try:
            cur = conn.execute(sql.replace("?", "%s").encode(), args)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.errors.IntegrityError as exc:
            raise ConflictError(self._clean(exc)) from None
        except psycopg.errors.SerializationFailure:
            raise RaceLost(RACED) from None
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {self._clean(exc)}") from None

    def append_audit(self, entry: AuditEntry) -> AuditEntry:
        detail = js(entry.detail)
        rows = self._q(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)"
            " RETURNING seq, detail",
            (entry.at, entry.actor, entry.action, entry.subject, detail),
        )
        return AuditEntry(
            seq=rows[0][0], at=entry.at, actor=entry.actor, action=entry.action,
            subject=entry.subject, detail=json.loads(rows[0][1]),
        )  # fmt: skip


__all__ = ["CONNECT_TIMEOUT_S", "SCHEMA_VERSION", "PostgresStore"]
