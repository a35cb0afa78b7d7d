"""What ``fedrt coordinator serve`` opens before the service runs: the store the
configuration names, the admin token, the held-out set, the broker's device credentials and
the TLS context of its link to the broker; and which event loop the caller runs on."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
from pathlib import Path

from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.broker.nats_auth import nats_broker_auth
from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.coordinator.config import CoordinatorConfig, Secret
from fedrt.coordinator.devices.enrollment import BrokerAuth, OpenBrokerAuth
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.models.evaluator import HeldOutEvaluator, load_held_out, require_litert
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.store.base import Store
from fedrt.coordinator.store.sqlite import SqliteStore

log = logging.getLogger("fedrt.coordinator.service")

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
COORDINATOR_USERNAME = "fedrt-coordinator"


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


def broker_auth(b: BrokerConfig) -> BrokerAuth:
    """Who keeps the broker's device credentials: a NATS auth file, Mosquitto's password and
    ACL files, or nobody (an open broker)."""
    if b.nats_auth_file is not None and b.password is not None:
        return nats_broker_auth(b, b.username or COORDINATOR_USERNAME)
    if b.password_file is None and b.acl_file is None:
        return OpenBrokerAuth()
    if b.password_file is None or b.acl_file is None or b.password is None:
        raise ConfigError("broker.password_file, acl_file and password go together")
    reload = MosquittoFileAuth.reload_from_pid_file(b.pid_file) if b.pid_file else None
    return MosquittoFileAuth(
        password_file=b.password_file,
        acl_file=b.acl_file,
        coordinator_username=b.username or COORDINATOR_USERNAME,
        coordinator_accounts=b.coordinator_accounts,
        coordinator_password_hash=hash_password(b.password.reveal()),
        reload=reload,
    )


def broker_tls_context(b: BrokerConfig) -> ssl.SSLContext:
    """The link's TLS: the broker checked against ``ca_file`` (else the system's CAs), and
    the coordinator's client certificate when one is configured."""
    ctx = ssl.create_default_context(cafile=str(b.ca_file) if b.ca_file else None)
    if b.cert_file is not None and b.key_file is not None:
        ctx.load_cert_chain(str(b.cert_file), str(b.key_file))
    return ctx


__all__ = [
    "ADMIN_TOKEN_FILE", "COORDINATOR_USERNAME", "broker_auth", "broker_tls_context",
    "load_admin_token", "open_held_out", "open_store", "running_loop",
]  # fmt: skip
