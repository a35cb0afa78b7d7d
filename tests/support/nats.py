"""A 3-node NATS cluster for tests (routes, JetStream, MQTT on each node), users included.

Built on ``fedrt.coordinator.broker.nats`` (what ``fedrt simulate --broker nats-cluster``
runs) and ``broker.nats_auth`` (what the coordinator writes at each enrollment): the tests
exercise the production configuration, not a test double of it.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedrt.coordinator.broker.nats import NatsCluster
from fedrt.coordinator.broker.nats_auth import NatsAuth
from fedrt.coordinator.errors import BrokerError
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.security.credentials import bcrypt_hash

COORDINATOR = "fedrt-coordinator"


def nats_available() -> bool:
    try:
        from fedrt.coordinator.broker.nats import nats_server_binary

        nats_server_binary()
    except BrokerError:
        return False
    return True


needs_nats = pytest.mark.skipif(
    not nats_available(), reason="nats-server is not installed (apt-get install -y nats-server)"
)


@dataclass(slots=True)
class SecuredCluster:
    """A running cluster, its auth, and the plaintext passwords of its users."""

    cluster: NatsCluster
    auth: NatsAuth
    passwords: dict[str, str]

    def mqtt(self, node: int = 0) -> tuple[str, int]:
        return self.cluster.nodes[node].mqtt_address

    def enroll(self, *device_ids: str) -> None:
        """Add devices (bcrypt credentials) and reload every node, as an enrollment does."""
        for device_id in device_ids:
            self.passwords[device_id] = secrets.token_urlsafe(24)
        self.auth.sync(self.devices())

    def devices(self, *, revoked: Sequence[str] = ()) -> list[DeviceRecord]:
        return [
            DeviceRecord(
                device_id=user,
                credential_hash=bcrypt_hash(password),
                public_key=bytes(32),
                enrolled_at=0.0,
                revoked_at=1.0 if user in revoked else None,
            )
            for user, password in self.passwords.items()
            if user != COORDINATOR
        ]


@contextmanager
def running_cluster(
    directory: Path, *, devices: Sequence[str] = (), nodes: int = 3
) -> Iterator[SecuredCluster]:
    """Start ``nodes`` clustered nats-servers on free loopback ports; stop and remove them."""
    cluster = NatsCluster(directory / "nats", nodes=nodes)
    cluster.directory.mkdir(parents=True, exist_ok=True)
    passwords = {COORDINATOR: secrets.token_urlsafe(24)}
    auth = NatsAuth(
        auth_file=cluster.auth_path,
        coordinator_username=COORDINATOR,
        coordinator_password_hash=bcrypt_hash(passwords[COORDINATOR]),
        reload=cluster.reload,
    )
    secured = SecuredCluster(cluster=cluster, auth=auth, passwords=passwords)
    for device_id in devices:
        passwords[device_id] = secrets.token_urlsafe(24)
    auth.sync(secured.devices())
    try:
        cluster.start()
        yield secured
    finally:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)


def core_connect(host: str, port: int, user: str, password: str, timeout: float = 5.0) -> str:
    """Log in on a node's core NATS port; the server's first answer after PING (+OK/-ERR)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.recv(4096)  # INFO
        connect = json.dumps({"verbose": False, "pedantic": False, "user": user, "pass": password})
        sock.sendall(f"CONNECT {connect}\r\nPING\r\n".encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer.decode(errors="replace").strip()
