"""The broker and process fixtures themselves: real round-trips, TLS, ACL denials, readiness."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from fedrt.coordinator.broker.mosquitto import BrokerConfig, BrokerError, MosquittoBroker
from fedrt.coordinator.security.credentials import hash_password, verify_password
from tests.conftest import SpawnFn
from tests.support.brokers import SecureBroker
from tests.support.mqtt import TestClient
from tests.support.process import NotReady, free_port, http_ok

NOT_AUTHORIZED = 0x87


def _client(secure: SecureBroker, user: str, *, tls: bool = False) -> TestClient:
    return TestClient(
        secure.host,
        secure.tls_port if tls else secure.port,
        username=user,
        password=secure.passwords[user],
        ca_cert=secure.tls.ca_cert if tls else None,
    )


def test_anonymous_broker_round_trip(mosquitto: MosquittoBroker) -> None:
    sub, pub = (
        TestClient(mosquitto.host, mosquitto.port),
        TestClient(mosquitto.host, mosquitto.port),
    )
    try:
        assert not sub.connect().is_failure
        assert not pub.connect().is_failure
        assert [rc.value for rc in sub.subscribe("t/#")] == [1]
        pub.publish("t/x", b"hello")
        got = sub.expect()
        assert (got.topic, got.payload) == ("t/x", b"hello")
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_secure_broker_round_trip(mosquitto_secure: SecureBroker, tls: bool) -> None:
    alice, admin = _client(mosquitto_secure, "alice", tls=tls), _client(mosquitto_secure, "admin")
    try:
        assert not alice.connect().is_failure
        assert not admin.connect().is_failure
        assert [rc.value for rc in admin.subscribe("devices/alice/#")] == [1]
        assert not alice.publish("devices/alice/up", b"\x00\x01").is_failure
        got = admin.expect()
        assert (got.topic, got.payload) == ("devices/alice/up", b"\x00\x01")
    finally:
        alice.close()
        admin.close()


# paho leaves the socket of a failed TLS handshake for the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_listener_rejects_untrusted_ca(mosquitto_secure: SecureBroker, tmp_path: Path) -> None:
    from fedrt.coordinator.security.tls import write_tls_files

    other = write_tls_files(tmp_path / "other-ca")
    client = TestClient(
        mosquitto_secure.host,
        mosquitto_secure.tls_port,
        username="alice",
        password=mosquitto_secure.passwords["alice"],
        ca_cert=other.ca_cert,
    )
    with pytest.raises(OSError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        client.connect()


def test_wrong_password_is_refused(mosquitto_secure: SecureBroker) -> None:
    client = TestClient(
        mosquitto_secure.host, mosquitto_secure.port, username="alice", password="x"
    )
    try:
        rc = client.connect()
        assert rc.is_failure
        assert rc.value in (0x86, 0x87)  # bad user name or password / not authorized
    finally:
        client.close()


def test_anonymous_client_is_refused_by_secure_broker(mosquitto_secure: SecureBroker) -> None:
    client = TestClient(mosquitto_secure.host, mosquitto_secure.port)
    try:
        assert client.connect().is_failure
    finally:
        client.close()


def test_acl_denies_publishing_as_another_device(mosquitto_secure: SecureBroker) -> None:
    alice, admin = _client(mosquitto_secure, "alice"), _client(mosquitto_secure, "admin")
    try:
        alice.connect()
        admin.connect()
        admin.subscribe("devices/#")
        denied: ReasonCode = alice.publish("devices/bob/up", b"forged")
        assert denied.value == NOT_AUTHORIZED
        # Alice's own topic still goes through, and it is the only message the admin sees.
        alice.publish("devices/alice/up", b"mine")
        assert admin.expect().payload == b"mine"
        assert admin.messages.empty()
    finally:
        alice.close()
        admin.close()


def test_acl_denies_reading_another_inbox(mosquitto_secure: SecureBroker) -> None:
    alice, admin = _client(mosquitto_secure, "alice"), _client(mosquitto_secure, "admin")
    try:
        alice.connect()
        admin.connect()
        # Mosquitto 2.0 may grant the SUBSCRIBE itself; the ACL is enforced on delivery.
        alice.subscribe("devices/bob/#")
        alice.subscribe("public/#")
        admin.publish("devices/bob/inbox", b"for bob only")
        admin.publish("public/announce", b"for everyone")
        # Delivery is ordered per publisher, so bob's message would have arrived first.
        got = alice.expect()
        assert (got.topic, got.payload) == ("public/announce", b"for everyone")
        assert alice.messages.empty()
    finally:
        alice.close()
        admin.close()


def test_password_hash_round_trip() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$7$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)
    assert not verify_password("s3cret", "garbage")


def test_broker_without_any_auth_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError):
        BrokerConfig(directory=tmp_path, allow_anonymous=False)


def test_broker_start_failure_reports_log(tmp_path: Path) -> None:
    broker = MosquittoBroker(BrokerConfig(directory=tmp_path, extra=("no_such_option 1",)))
    with pytest.raises(BrokerError, match="did not start"):
        broker.start(timeout=2)
    assert not broker.running


def test_spawned_process_becomes_ready_and_stops(spawn: SpawnFn, tmp_path: Path) -> None:
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        name="http",
        cwd=tmp_path,
    )
    proc.wait_ready(http_ok(f"http://127.0.0.1:{port}/"), timeout=20)
    assert proc.running
    assert proc.stop() is not None
    assert not proc.running


def test_spawned_process_that_dies_reports_its_log(spawn: SpawnFn) -> None:
    proc = spawn([sys.executable, "-c", "import sys; print('boom here'); sys.exit(3)"], name="dies")
    with pytest.raises(NotReady, match="boom here"):
        proc.wait_ready(lambda: False, timeout=20)
