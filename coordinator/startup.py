"""What ``fedrt coordinator serve`` opens before the service runs: the store the
configuration names, the admin token and the held-out set; and which event loop the caller
runs on."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

from fedrt.coordinator.config import CoordinatorConfig, Secret
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.models.evaluator import HeldOutEvaluator, load_held_out, require_litert
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.store.sqlite import SqliteStore

log = logging.getLogger("fedrt.coordinator.service")

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def open_held_out(config: CoordinatorConfig) -> HeldOutEvaluator | None:
    """The held-out set (``evaluation.data``), read and checked before anything listens:
    a bad file stops the start with a ``ConfigError``."""
    path = config.evaluation.data
    if path is None:
        return None
    require_litert()
    data = load_held_out(path)
    log.info("held-out set %s: %d examples of shape %s", path, len(data), data.x.shape[1:])
    return HeldOutEvaluator(data)


def open_store(config: CoordinatorConfig) -> Store:
    """The configured store: PostgreSQL when ``store.url`` is set, else the SQLite file."""
    if config.store.url is None:
        return SqliteStore(config.db_path)
    # Imported here: psycopg is an optional extra that a SQLite coordinator never needs.
    from fedrt.coordinator.store.postgres import PostgresStore

    store = PostgresStore(config.store.url.reveal())
    log.info("store: %s", store.where)  # the URL without user or password
    return store


def load_admin_token(config: CoordinatorConfig) -> Secret:
    """The configured admin token, else the one in ``data_dir/admin-token`` (made once, 0600)."""
    if config.admin_token is not None:
        return config.admin_token
    path = Path(config.data_dir) / ADMIN_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if len(token) < 16:
            raise ConfigError(f"{path} holds no usable admin token") from None
        return Secret(token)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.info("generated an admin token in %s (readable by this user only)", path)
    return Secret(token)


__all__ = ["ADMIN_TOKEN_FILE", "load_admin_token", "open_held_out", "open_store", "running_loop"]
