"""Real Mosquitto brokers for tests: anonymous, and secured with passwords, an ACL and TLS."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from fedrt.coordinator.mosquitto import (
    AclRule,
    BrokerConfig,
    MosquittoBroker,
    hash_password,
    write_acl_file,
    write_password_file,
)
from fedrt.coordinator.tls import TlsFiles, write_tls_files

# Device-like users can only publish under their own prefix; "admin" may do anything.
SECURE_USERS = ("admin", "alice", "bob")
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
        users={"admin": [AclRule(access="readwrite", topic="#")]},
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
