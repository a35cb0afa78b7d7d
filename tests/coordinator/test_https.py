"""The coordinator over real TLS on loopback: its own CA or the operator's files, the public URL
in plans and enrollment replies, and every unusable HTTPS setting refused at start."""

from __future__ import annotations

import http.client
import os
import ssl
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.config import HttpConfig
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.security.tls import CA_KEY_FILE, TlsFiles, create_ca, issue, write_tls_files
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.service import CoordinatorService
from fedrt.protocol import round_messages as rm
from tests.conftest import SpawnFn
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config
from tests.coordinator.https_harness import (
    coordinator_ca,
    enroll_body,
    https_config,
    new_token,
)
from tests.coordinator.live_round import RawDevice, start_task
from tests.coordinator.test_cli import FEDRT
from tests.support.process import free_port


def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _enroll_over_https(svc: ServiceThread, context: ssl.SSLContext) -> dict[str, Any]:
    body = enroll_body(new_token(svc))
    reply = svc.request("POST", "/v1/enroll", context=context, token=None, body=body)
    assert reply.status == 201
    grant: dict[str, Any] = reply.json()
    return grant


def test_self_signed_https_is_served_with_a_ca_kept_in_the_data_dir(tmp_path: Path) -> None:
    config = https_config(tmp_path / "data", tls="self-signed")
    with ServiceThread(config) as svc:
        ca = coordinator_ca(svc)
        assert stat.S_IMODE((ca.parent / CA_KEY_FILE).stat().st_mode) == 0o600
        for host in ("127.0.0.1", "localhost"):
            reply = svc.request("GET", "/healthz", context=_trusting(ca), host=host)
            assert reply.status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            svc.request("GET", "/healthz", context=ssl.create_default_context())
        grant = _enroll_over_https(svc, _trusting(ca))
        assert grant["coordinator_url"] == f"https://127.0.0.1:{svc.port}"
        assert grant["ca_pem"] == ca.read_text()
        assert svc.service.driver_context().model_url_prefix == (
            f"https://127.0.0.1:{svc.port}/v1/models/"
        )
        first_ca = ca.read_bytes()
    # A restart keeps the CA devices already trust, and issues a server certificate from it.
    with ServiceThread(config) as again:
        assert coordinator_ca(again).read_bytes() == first_ca
        assert again.request("GET", "/healthz", context=_trusting(ca)).status == 200


def test_operator_certificate_and_the_ca_it_hands_to_devices(tmp_path: Path) -> None:
    pki = write_tls_files(tmp_path / "pki")
    files = {"tls_cert": pki.server_cert, "tls_key": pki.server_key}
    config = https_config(tmp_path / "data", **files, ca_file=pki.ca_cert)
    with ServiceThread(config) as svc:
        grant = _enroll_over_https(svc, _trusting(pki.ca_cert))
        sent = x509.load_pem_x509_certificates(grant["ca_pem"].encode())
        assert sent == [x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())]
        assert grant["coordinator_url"] == f"https://127.0.0.1:{svc.port}"
    # Without ca_file, devices verify with their own trust roots: no CA in the reply.
    with ServiceThread(https_config(tmp_path / "data2", **files)) as svc:
        grant = _enroll_over_https(svc, _trusting(pki.ca_cert))
        assert "ca_pem" not in grant


def test_plans_and_enrollment_carry_the_public_url(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # Plain HTTP on loopback behind a TLS-terminating proxy that devices know by its name.
    public = "https://fl.example:8443/fedrt/"
    config = make_config(tmp_path / "data", mosquitto.url).model_copy(
        update={"http": HttpConfig(port=0, public_url=public)}
    )

    def factory(ctx: Any) -> FederatedDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.3, spread=0.5))

    with ServiceThread(config, factory) as svc:
        body = enroll_body(new_token(svc))
        grant = svc.request("POST", "/v1/enroll", token=None, body=body).json()
        assert grant["coordinator_url"] == "https://fl.example:8443/fedrt"
        # The device enrolled above never checks in: the pool closes at the deadline.
        task_id = start_task(svc, ["dev-public-url"], goal_count=1, min_reports=1,
                             over_selection=1.0, checkin_deadline_s=2.0)  # fmt: skip
        device = RawDevice(mosquitto.host, mosquitto.port, "dev-public-url", task_id).connect()
        try:
            device.check_in()
            plan = device.expect(rm.Plan)
        finally:
            device.close()
    assert plan.model.url == f"https://fl.example:8443/fedrt/v1/models/{plan.model.sha256}"


def _pki(tmp_path: Path) -> TlsFiles:
    return write_tls_files(tmp_path / "pki")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _other_key(tmp_path: Path) -> dict[str, Any]:
    stranger = issue(create_ca(), "127.0.0.1", server_names=("127.0.0.1",))
    return {"tls_key": _write(tmp_path / "other.key", stranger.key_pem())}


def _encrypted_key(tmp_path: Path) -> dict[str, Any]:
    pki = _pki(tmp_path)
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    return {"tls_key": _write(tmp_path / "enc.key", pem)}


def _foreign_ca(tmp_path: Path) -> dict[str, Any]:
    other = write_tls_files(tmp_path / "other-pki")
    return {"ca_file": other.ca_cert}


BAD_FILES: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "missing cert": (lambda p: {"tls_cert": p / "nope.crt"}, "http.tls_cert .* cannot read"),
    "missing key": (lambda p: {"tls_key": p / "nope.key"}, "http.tls_key .* cannot read"),
    "junk cert": (lambda p: {"tls_cert": _write(p / "j.crt", b"junk")}, "no PEM certificate"),
    "junk key": (lambda p: {"tls_key": _write(p / "j.key", b"junk")}, "not a PEM private key"),
    "key of another cert": (_other_key, "does not match http.tls_cert"),
    "encrypted key": (_encrypted_key, "is encrypted"),
    "ca that did not sign it": (_foreign_ca, "does not sign http.tls_cert"),
    "junk ca": (lambda p: {"ca_file": _write(p / "j.ca", b"junk")}, "http.ca_file .* no PEM"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unusable_tls_files_are_config_errors_at_start(tmp_path: Path, case: str) -> None:
    build, message = BAD_FILES[case]
    pki = _pki(tmp_path)
    files: dict[str, Any] = {"tls_cert": pki.server_cert, "tls_key": pki.server_key}
    config = https_config(tmp_path / "data", **(files | build(tmp_path)))
    with pytest.raises(ConfigError, match=message):
        CoordinatorService(config)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda tls: (tls / "ca.crt").unlink(), "cannot read the CA"),
        (lambda tls: (tls / CA_KEY_FILE).chmod(0o644), "must be 0600"),
        (lambda tls: (tls / "ca.crt").write_bytes(create_ca().cert_pem()), "is not the key of"),
    ],
)
def test_a_damaged_coordinator_ca_is_refused_never_replaced(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    config = https_config(tmp_path / "data", tls="self-signed")
    CoordinatorService(config).store.close()
    tls = tmp_path / "data" / "tls"
    damage(tls)
    key_before = (tls / CA_KEY_FILE).read_bytes()
    with pytest.raises(ConfigError, match=message):
        CoordinatorService(config)
    assert (tls / CA_KEY_FILE).read_bytes() == key_before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--http", "0.0.0.0:0"], b"set http.public_url (--public-url"),
        (["--public-url", "ftp://fl.example"], b"http.public_url must be http(s)"),
        (["--tls", "self-signed", "--tls-cert", "c", "--tls-key", "k"], b"exclude each other"),
        (["--tls-cert", "/nonexistent.crt", "--tls-key", "/x.key"], b"http.tls_cert"),
    ],
)
def test_serve_refuses_bad_http_flags_with_exit_2(
    tmp_path: Path, flags: list[str], message: bytes
) -> None:
    result = subprocess.run(
        [FEDRT, "coordinator", "serve", "--data-dir", str(tmp_path), *flags],
        capture_output=True,
        timeout=60,
        check=False,
        env=os.environ | {"FEDRT_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_serve_with_self_signed_https_and_a_public_url(spawn: SpawnFn, tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    public = f"https://localhost:{port}"
    argv = [FEDRT, "coordinator", "serve", "--data-dir", str(data), "--tls", "self-signed",
            "--http", f"127.0.0.1:{port}", "--public-url", public]  # fmt: skip
    env = {"FEDRT_ADMIN_TOKEN": ADMIN_TOKEN, "FEDRT_BROKER_EMBEDDED_PORT": "0"}
    proc = spawn(argv, name="coordinator-https", env=env)
    ca = data / "tls" / "ca.crt"

    def healthy() -> bool:
        if not ca.exists():
            return False
        conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=_trusting(ca))
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    proc.wait_ready(healthy)
    assert proc.stop() == 0
    assert f"fedrt coordinator: {public}" in proc.log_tail()
