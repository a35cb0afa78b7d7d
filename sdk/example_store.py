"""The app's local training examples: bounded, persisted in SQLite, read back in static batches.

Data never leaves the device through this module: it has no method that sends anything.

Batching rule: batches always hold exactly ``batch_size`` examples (exported models have a
static batch). A cursor is the id of the last example consumed (0 before the first). A batch
takes the next examples after the cursor in insertion order; when the newest example is
reached it wraps to the oldest one still stored (an epoch boundary, ``Batch.wrapped``). A
store holding fewer examples than a batch repeats them cyclically (``Batch.unique`` says how
many distinct examples the batch holds). Ids only grow, so a cursor stays valid when the
retention policy drops old examples underneath it.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedrt.sdk.errors import ExampleStoreError, NotEnoughExamples, SchemaMismatch, SdkConfigError
from fedrt.sdk.holdout import SEED_BYTES, check_share, held_out

__all__ = ["Batch", "ExampleStore", "Retention"]

Array = npt.NDArray[Any]
_SCHEMA_VERSION = 1
# A phone keyboard's week of typing, or a sensor's day at one sample a second, fits easily.
DEFAULT_MAX_EXAMPLES = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Keep at most ``max_examples`` (dropping the oldest) and none older than ``max_age_s``."""

    max_examples: int = DEFAULT_MAX_EXAMPLES
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_examples < 1:
            raise SdkConfigError(f"max_examples must be >= 1, got {self.max_examples}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise SdkConfigError(f"max_age_s must be > 0, got {self.max_age_s}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    x: Array
    y: Array
    ids: tuple[int, ...]
    next_cursor: int
    wrapped: bool  # the batch crossed the end of the stored examples
    unique: int  # distinct examples in the batch


def _schema(shape: Sequence[int], dtype: Any, what: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    dims = tuple(int(d) for d in shape)
    if any(d < 1 for d in dims):
        raise SdkConfigError(f"{what} shape must be static and positive, got {dims}")
    return dims, np.dtype(dtype)


class ExampleStore:
    """Examples ``(x, y)`` of fixed per-example shapes and dtypes, in an SQLite file.

    ``path=":memory:"`` keeps them in memory (tests, ephemeral apps). Thread-safe: the app
    appends from its thread while the training worker reads batches. ``part`` gives a view
    of the training or the held-out examples (``sdk.holdout``) sharing this connection.
    """

    # (seed, share, held out?) of the view's examples (``part``); None: every example.
    _part: tuple[bytes, float, bool] | None = None

    def __init__(
        self,
        path: str | Path,
        *,
        x_shape: Sequence[int],
        x_dtype: Any,
        y_shape: Sequence[int] = (),
        y_dtype: Any = np.int32,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        holdout_seed: bytes | None = None,
    ) -> None:
        self.x_shape, self.x_dtype = _schema(x_shape, x_dtype, "x")
        self.y_shape, self.y_dtype = _schema(y_shape, y_dtype, "y")
        self.retention = retention if retention is not None else Retention()
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS examples (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " added_at REAL NOT NULL, x BLOB NOT NULL, y BLOB NOT NULL)"
            )
            self._check_meta()
            self._db.create_function("fedrt_held_out", 3, _held_out_sql, deterministic=True)
            self._holdout_seed = self._seed(holdout_seed)
        except sqlite3.Error as exc:
            raise ExampleStoreError(f"cannot open example store {path}: {exc}") from exc

    def _check_meta(self) -> None:
        want = json.dumps(
            {
                "version": _SCHEMA_VERSION,
                "x": [list(self.x_shape), self.x_dtype.str],
                "y": [list(self.y_shape), self.y_dtype.str],
            },
            sort_keys=True,
        )
        # OR IGNORE: another process (``fedrt device add-examples``) may create it first.
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (want,))
        (have,) = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if have != want:
            self._db.close()
            raise SchemaMismatch(
                f"the store holds examples of another schema ({have}); expected {want}"
            )

    def _seed(self, given: bytes | None) -> bytes:
        # Drawn once per store (per device) and kept, so the split never moves; a seed given
        # by the caller (simulations, tests) is kept the same way when the store has none.
        if given is not None and len(given) != SEED_BYTES:
            raise SdkConfigError(f"holdout_seed must be {SEED_BYTES} bytes")
        fresh = (given if given is not None else secrets.token_bytes(SEED_BYTES)).hex()
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('holdout_seed', ?)", (fresh,))
        (have,) = self._db.execute("SELECT value FROM meta WHERE key='holdout_seed'").fetchone()
        return bytes.fromhex(have)

    @property
    def holdout_seed(self) -> bytes:
        return self._holdout_seed

    def part(self, share: float, *, held_out: bool) -> ExampleStore:
        """A view of the examples held out at ``share`` (``held_out``) or of the others.

        The view reads (``len``, ``batch``) only its side; it shares the connection, so it is
        never closed on its own. At share 0 the training side is every example."""
        view = copy.copy(self)
        view._part = (self._holdout_seed, check_share(share), held_out)
        return view

    def _where(self) -> tuple[str, tuple[Any, ...]]:
        """The SQL condition (and its parameters) selecting this view's examples."""
        if self._part is None:
            return "1", ()
        seed, share, side = self._part
        return "fedrt_held_out(id, ?, ?) = ?", (seed, share, int(side))

    @classmethod
    def for_model(
        cls,
        path: str | Path,
        *,
        x_spec_shape: Sequence[int],
        x_dtype: Any,
        y_spec_shape: Sequence[int],
        y_dtype: Any,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        holdout_seed: bytes | None = None,
    ) -> ExampleStore:
        """A store for a model whose train inputs have these (batched) shapes."""
        return cls(
            path,
            x_shape=tuple(x_spec_shape)[1:],
            x_dtype=x_dtype,
            y_shape=tuple(y_spec_shape)[1:],
            y_dtype=y_dtype,
            retention=retention,
            clock=clock,
            holdout_seed=holdout_seed,
        )

    # -- writing ---------------------------------------------------------------------------

    def _coerce(self, value: Any, shape: tuple[int, ...], dtype: np.dtype[Any], what: str) -> bytes:
        arr = np.asarray(value)
        if arr.shape != shape:
            raise ExampleStoreError(f"{what} has shape {arr.shape}, the store holds {shape}")
        if arr.dtype != dtype:
            if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
                raise ExampleStoreError(f"{what} has dtype {arr.dtype}, the store holds {dtype}")
            cast = arr.astype(dtype)
            # Rounding floats is expected; wrapping an integer label to another class is not.
            if dtype.kind in "iub" and not np.array_equal(cast, arr):
                raise ExampleStoreError(f"{what} does not fit {dtype} without changing its values")
            arr = cast
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ExampleStoreError(f"{what} holds NaN or infinity")
        return np.ascontiguousarray(arr).tobytes()

    def append(self, x: Any, y: Any) -> None:
        """Store one example (validated first: a bad one changes nothing)."""
        self.extend([x], [y])

    def extend(self, xs: Sequence[Any], ys: Sequence[Any]) -> None:
        """Store several examples in one transaction (all or none)."""
        if len(xs) != len(ys):
            raise ExampleStoreError(f"{len(xs)} inputs but {len(ys)} labels")
        rows = [
            (
                self._coerce(x, self.x_shape, self.x_dtype, "x"),
                self._coerce(y, self.y_shape, self.y_dtype, "y"),
            )
            for x, y in zip(xs, ys, strict=True)
        ]
        now = self._clock()
        with self._lock, self._tx():
            self._db.executemany(
                "INSERT INTO examples (added_at, x, y) VALUES (?, ?, ?)",
                [(now, x, y) for x, y in rows],
            )
            self._prune(now)

    def _prune(self, now: float) -> None:
        keep = self.retention.max_examples
        self._db.execute(
            "DELETE FROM examples WHERE id <= (SELECT id FROM examples ORDER BY id DESC"
            " LIMIT 1 OFFSET ?)",
            (keep,),
        )
        if self.retention.max_age_s is not None:
            self._db.execute(
                "DELETE FROM examples WHERE added_at < ?", (now - self.retention.max_age_s,)
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def clear(self) -> None:
        """Delete every example (the app's "forget my data")."""
        with self._lock, self._tx():
            self._db.execute("DELETE FROM examples")

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            if self.retention.max_age_s is not None:
                with self._tx():
                    self._prune(self._clock())
            where, params = self._where()
            (count,) = self._db.execute(
                f"SELECT COUNT(*) FROM examples WHERE {where}",  # noqa: S608 (our own text)
                params,
            ).fetchone()
        return int(count)

    def batch(self, batch_size: int, cursor: int = 0) -> Batch:
        """The ``batch_size`` examples after ``cursor``, wrapping as the module docstring says."""
        if batch_size < 1:
            raise ExampleStoreError(f"batch_size must be >= 1, got {batch_size}")
        with self._lock:
            if self.retention.max_age_s is not None:
                with self._tx():
                    self._prune(self._clock())
            where, params = self._where()
            rows = self._db.execute(
                f"SELECT id, x, y FROM examples WHERE id > ? AND {where} ORDER BY id LIMIT ?",  # noqa: S608
                (cursor, *params, batch_size),
            ).fetchall()
            wrapped = False
            if len(rows) < batch_size:
                wrapped = True
                head = self._db.execute(
                    f"SELECT id, x, y FROM examples WHERE {where} ORDER BY id LIMIT ?",  # noqa: S608
                    (*params, batch_size),
                ).fetchall()
                if not head:
                    raise NotEnoughExamples("the example store is empty")
                need = batch_size - len(rows)
                rows = rows + [head[i % len(head)] for i in range(need)]
        ids = tuple(int(r[0]) for r in rows)
        x = np.stack([self._decode(r[1], self.x_shape, self.x_dtype) for r in rows])
        y = np.stack([self._decode(r[2], self.y_shape, self.y_dtype) for r in rows])
        return Batch(x=x, y=y, ids=ids, next_cursor=ids[-1], wrapped=wrapped, unique=len(set(ids)))

    @staticmethod
    def _decode(blob: bytes, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        arr = np.frombuffer(blob, dtype=dtype)
        if arr.size != math.prod(shape):
            raise ExampleStoreError("a stored example is corrupt (wrong size)")
        return arr.reshape(shape)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ExampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _held_out_sql(example_id: int, seed: bytes, share: float) -> int:
    return int(held_out(seed, example_id, share))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error; sqlite errors become ours."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise ExampleStoreError(f"example store unavailable: {exc}") from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._db.execute("ROLLBACK")
                raise ExampleStoreError(f"example store write failed: {err}") from err
        else:
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise ExampleStoreError(f"example store write failed: {exc}") from exc
