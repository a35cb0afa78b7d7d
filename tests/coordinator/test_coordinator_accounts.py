"""Several coordinator instances on one managed Mosquitto (``[broker] coordinator_accounts``):
Mosquitto ties client ids to usernames, so each instance logs in as a user of its own, and an
instance rewriting the auth files keeps the others' accounts."""

from __future__ import annotations

from pathlib import Path

from fedrt.coordinator.broker.mosquitto import BrokerConfig, MosquittoBroker
from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.security.credentials import hash_password
from tests.coordinator.harness import mqtt_connect_code

PASSWORD = "coordinator-password-123"
ACCOUNTS = ("fedrt-coordinator-a", "fedrt-coordinator-b")


def _auth(directory: Path, user: str) -> MosquittoFileAuth:
    return MosquittoFileAuth(
        password_file=directory / "passwords",
        acl_file=directory / "acl",
        coordinator_username=user,
        coordinator_password_hash=hash_password(PASSWORD),
        coordinator_accounts=ACCOUNTS,
    )


def test_each_instance_keeps_the_others_accounts(tmp_path: Path) -> None:
    directory = tmp_path / "mosq"
    directory.mkdir()
    a, b = _auth(directory, ACCOUNTS[0]), _auth(directory, ACCOUNTS[1])
    a.sync([])
    broker = MosquittoBroker(
        BrokerConfig(
            directory=directory,
            allow_anonymous=False,
            password_file=a.password_file,
            acl_file=a.acl_file,
        )
    )
    broker.start()
    try:
        b.sync([])  # the last writer: a's account must survive it
        broker.reload()
        for user in ACCOUNTS:
            assert mqtt_connect_code(broker.port, user, PASSWORD) == 0
            assert f"user {user}\n" in a.acl_file.read_text()
        assert mqtt_connect_code(broker.port, "fedrt-coordinator-c", PASSWORD) != 0
    finally:
        broker.stop()


def test_without_accounts_only_its_own_user_is_written(tmp_path: Path) -> None:
    auth = MosquittoFileAuth(
        password_file=tmp_path / "passwords",
        acl_file=tmp_path / "acl",
        coordinator_username="fedrt-coordinator",
        coordinator_password_hash=hash_password(PASSWORD),
    )
    auth.sync([])
    users = [line.split(":")[0] for line in auth.password_file.read_text().splitlines()]
    assert users == ["fedrt-coordinator"]
