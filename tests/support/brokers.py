"""Real brokers for tests: Mosquitto anonymous or secured (passwords, ACL, TLS), embedded amqtt."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedrt.coordinator.broker.embedded import EmbeddedAuth, EmbeddedBroker
from fedrt.coordinator.broker.mosquitto import (
    AclRule,
    BrokerConfig,
    MosquittoBroker,
    write_acl_file,
    write_password_file,
)
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.security.tls import TlsFiles, write_tls_files

# Device-like users can only publish under their own prefix; "admin" may do anything and
# "observer" read anything. Each client's id is its user name on a secured broker, so two
# connections as one user take each other over: a test watching beside an "admin" client
# (the coordinator, say) connects as "observer".
SECURE_USERS = ("admin", "alice", "bob", "observer")
SECURE_PATTERNS = (
    AclRule(access="readwrite", topic="devices/%u/#", pattern=True),
    AclRule(access="read", topic="public/#", pattern=True),
)


@dataclass(frozen=True, slots=True)
class SecureBroker:
    """A password + ACL + TLS broker and the plaintext credentials of its users."""

    broker: MosquittoBroker
    tls: TlsFiles
    passwords: dict[str, str]

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def tls_port(self) -> int:
        assert self.broker.tls_port is not None
        return self.broker.tls_port


def start_anonymous(directory: Path) -> MosquittoBroker:
    broker = MosquittoBroker(BrokerConfig(directory=directory))
    broker.start()
    return broker


def start_secure(directory: Path) -> SecureBroker:
    directory.mkdir(parents=True, exist_ok=True)
    passwords = {user: secrets.token_urlsafe(16) for user in SECURE_USERS}
    password_file = directory / "passwords"
    acl_file = directory / "acl"
    write_password_file(password_file, {u: hash_password(p) for u, p in passwords.items()})
    write_acl_file(
        acl_file,
        patterns=SECURE_PATTERNS,
        users={
            "admin": [AclRule(access="readwrite", topic="#")],
            "observer": [AclRule(access="read", topic="#")],
        },
    )
    tls = write_tls_files(directory / "tls")
    broker = MosquittoBroker(
        BrokerConfig(
            directory=directory,
            allow_anonymous=False,
            password_file=password_file,
            acl_file=acl_file,
            tls=tls,
        )
    )
    broker.start()
    return SecureBroker(broker=broker, tls=tls, passwords=passwords)


@contextmanager
def running_embedded(
    auth: EmbeddedAuth | None = None, timeout: float = 10.0
) -> Iterator[EmbeddedBroker]:
    """The coordinator's embedded amqtt broker (MQTT 3.1.1), on an event loop of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="embedded-broker", daemon=True)
    thread.start()
    broker = EmbeddedBroker(auth=auth)
    try:
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(timeout)
        yield broker
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
