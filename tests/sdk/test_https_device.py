"""A device and an HTTPS coordinator (real TLS on loopback): enrollment verified with ca_file,
the CA it hands out trusted from then on, and credentials never sent in clear text off-host."""

from __future__ import annotations

import http.server
import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.driver import DriverContext, RoundDriver
from fedrt.coordinator.rounds.driver import FederatedDriver
from fedrt.coordinator.security.tls import write_tls_files
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.tasks import TaskSpec
from fedrt.sdk.cli import build_device, load_config
from fedrt.sdk.credentials import CREDENTIALS_FILE, Credentials, basic_auth, enroll
from fedrt.sdk.device import Device, DeviceConfig
from fedrt.sdk.download import download_model
from fedrt.sdk.errors import DownloadRefused, InsecureUrl, SdkConfigError, TlsError
from fedrt.sdk.example_store import ExampleStore
from fedrt.sdk.https_trust import is_loopback, trust_context
from fedrt.sdk.scheduler import SchedulerConfig
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.simulation.timings import PARTICIPANT_TIMINGS
from tests.coordinator.harness import ServiceThread
from tests.coordinator.https_harness import add_model, coordinator_ca, https_config, new_token
from tests.coordinator.live_round import wait_for
from tests.sdk.range_server import serve_handler

# TEST-NET-1 (RFC 5737): never routed. Nothing may even try to reach it.
REMOTE = "192.0.2.1"
MODEL = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"

# ------------------------------------------------------------------ network watch
# Audit events (PEP 578) of every socket connect and name lookup while a test watches: the
# interpreter reports them itself, so "nothing was sent" is observed, not mocked.
_WATCHED = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname")
_watching: list[list[tuple[str, tuple[Any, ...]]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event in _WATCHED:
        _watching[-1].append((event, args))


sys.addaudithook(_audit)


@contextmanager
def network_events() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    events: list[tuple[str, tuple[Any, ...]]] = []
    _watching.append(events)
    try:
        yield events
    finally:
        _watching.remove(events)


def _credentials(**overrides: Any) -> Credentials:
    fields: dict[str, Any] = {
        "device_id": "dev-1",
        "mqtt_username": "dev-1",
        "mqtt_password": "secret-password",
        "coordinator_public_key": bytes(32),
        "mqtt_host": "127.0.0.1",
        "mqtt_port": 1883,
    }
    return Credentials(**(fields | overrides))


def _always() -> ScriptedDeviceState:
    return ScriptedDeviceState([(0.0, idle_plugged_in())])


@pytest.fixture
def https_service(tmp_path: Path) -> Iterator[ServiceThread]:
    with ServiceThread(https_config(tmp_path / "coordinator", tls="self-signed")) as svc:
        yield svc


# ------------------------------------------------------------------ clear text refused
def test_the_network_watch_sees_a_connect() -> None:
    with socket.socket() as server, network_events() as events:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert any(event == "socket.connect" for event, _ in events)


@pytest.mark.parametrize("host", [REMOTE, "coordinator.example", "[2001:db8::1]"])
def test_credentials_never_go_over_plain_http_off_this_host(tmp_path: Path, host: str) -> None:
    url = f"http://{host}:8080"
    with network_events() as events:
        with pytest.raises(InsecureUrl, match="plain http") as info:
            DeviceConfig(data_dir=tmp_path, coordinator_url=url)
        assert isinstance(info.value, SdkConfigError)
        with pytest.raises(InsecureUrl):
            enroll(url, "fet_token-0123456789", Ed25519PrivateKey.generate())
        with pytest.raises(InsecureUrl):
            download_model(
                f"{url}/v1/models/{'a' * 64}",
                tmp_path / "model.tflite",
                sha256="a" * 64,
                signature=b"",
                public_key=bytes(32),
                manifest={},
                headers=basic_auth(_credentials()),
            )
    assert events == []  # refused before a name lookup or a connect
    assert not (tmp_path / "model.tflite").exists()


def test_plain_http_is_fine_to_loopback(tmp_path: Path) -> None:
    for url in (
        "http://127.0.0.1:8080",
        "http://127.9.0.3",
        "http://localhost:1",
        "http://[::1]:8",
    ):
        assert DeviceConfig(data_dir=tmp_path, coordinator_url=url).coordinator_url == url
    assert not is_loopback("localhost.example")
    assert not is_loopback("10.0.0.1")
    with pytest.raises(SdkConfigError, match="http"):
        DeviceConfig(data_dir=tmp_path, coordinator_url="ftp://127.0.0.1")


def _redirecting(target: str, seen: list[str | None]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def test_a_redirect_is_not_followed_with_the_credentials(tmp_path: Path) -> None:
    first_seen: list[str | None] = []
    second_seen: list[str | None] = []
    auth = basic_auth(_credentials())
    with (
        serve_handler(_redirecting("/", second_seen)) as second,
        serve_handler(_redirecting(f"{second}/elsewhere", first_seen)) as first,
        pytest.raises(DownloadRefused) as info,
    ):
        download_model(
            f"{first}/v1/models/{'a' * 64}",
            tmp_path / "model.tflite",
            sha256="a" * 64,
            signature=_sign_nothing(),
            public_key=_PUBLIC,
            manifest={},
            headers=auth,
        )
    assert info.value.status == 302
    assert first_seen == [auth["Authorization"]]
    assert second_seen == []


_KEY = Ed25519PrivateKey.generate()
_PUBLIC = _KEY.public_key().public_bytes_raw()


def _sign_nothing() -> bytes:
    from fedrt.sdk.download import model_signing_payload

    return _KEY.sign(model_signing_payload("a" * 64, {}))


# ------------------------------------------------------------------ HTTPS with the right CA
def test_a_device_enrolls_with_ca_file_then_downloads_over_https(
    tmp_path: Path, https_service: ServiceThread
) -> None:
    svc = https_service
    ca = coordinator_ca(svc)
    model = add_model(svc, tmp_path / "export")
    base = f"https://localhost:{svc.port}"
    creds = enroll(base, new_token(svc), Ed25519PrivateKey.generate(), ca_file=ca)
    assert creds.ca_pem == ca.read_text()
    assert creds.coordinator_url == f"https://127.0.0.1:{svc.port}"
    creds.save(tmp_path)
    saved = json.loads((tmp_path / CREDENTIALS_FILE).read_text())
    assert (saved["ca_pem"], saved["coordinator_url"]) == (creds.ca_pem, creds.coordinator_url)
    assert Credentials.load(tmp_path) == creds
    # From now on the enrolled CA alone is enough: the device's ca_file is not consulted.
    url = svc.service.driver_context().model_url_prefix + model.sha256
    dest = tmp_path / "models" / "current.tflite"
    result = download_model(
        url,
        dest,
        sha256=model.sha256,
        signature=model.signature,
        public_key=creds.coordinator_public_key,
        manifest=model.manifest,
        headers=basic_auth(creds),
        ssl_context=trust_context(ca_pem=creds.ca_pem),
    )
    assert dest.read_bytes() == (tmp_path / "export" / "model.tflite").read_bytes()
    assert result.fetched_bytes == model.size


def test_a_device_that_trusts_another_ca_gets_a_tls_error(
    tmp_path: Path, https_service: ServiceThread
) -> None:
    svc = https_service
    other = write_tls_files(tmp_path / "other-pki").ca_cert
    base = f"https://127.0.0.1:{svc.port}"
    token = new_token(svc)
    for ca_file in (other, None):  # another private CA; the system store
        with pytest.raises(TlsError, match="did not verify"):
            enroll(base, token, Ed25519PrivateKey.generate(), ca_file=ca_file, timeout_s=10)
    config = DeviceConfig(data_dir=tmp_path / "device", coordinator_url=base, ca_file=other)
    store = ExampleStore(tmp_path / "examples.sqlite3", x_shape=(2,), x_dtype=np.float32)
    device = Device(
        config, store=store, device_state=ScriptedDeviceState([(0.0, idle_plugged_in())])
    )
    try:
        with pytest.raises(TlsError):
            device.enroll(token)
    finally:
        store.close()
    assert not (tmp_path / "device" / CREDENTIALS_FILE).exists()
    # The token was not spent by the failed attempts: the right CA enrolls with it.
    assert enroll(base, token, Ed25519PrivateKey.generate(), ca_file=coordinator_ca(svc))
    model = add_model(svc, tmp_path / "export")
    current = tmp_path / "current.tflite"
    current.write_bytes(b"previous model")
    with pytest.raises(TlsError):
        download_model(
            f"{base}/v1/models/{model.sha256}",
            current,
            sha256=model.sha256,
            signature=model.signature,
            public_key=svc.service.signer.public_key_bytes(),
            manifest=model.manifest,
            ssl_context=trust_context(other),
        )
    assert current.read_bytes() == b"previous model"


def test_credentials_with_a_bad_ca_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SdkConfigError, match="PEM"):
        _credentials(ca_pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    good = _credentials(coordinator_url="https://fl.example").to_json()
    for bad in ({"ca_pem": "not a certificate"}, {"coordinator_url": 7}):
        with pytest.raises(SdkConfigError, match="malformed credentials"):
            Credentials.from_json(good | bad)
    with pytest.raises(SdkConfigError, match="ca_file"):
        trust_context(tmp_path / "missing-ca.pem")


def test_mqtts_needs_the_ca_file_and_plain_mqtt_ignores_it(tmp_path: Path) -> None:
    data = tmp_path / "device"
    data.mkdir()
    _credentials(mqtt_tls=True).save(data)
    store = ExampleStore(tmp_path / "examples.sqlite3", x_shape=(2,), x_dtype=np.float32)
    try:
        config = DeviceConfig(data_dir=data, coordinator_url="http://127.0.0.1:1")
        device = Device(
            config, store=store, device_state=ScriptedDeviceState([(0.0, idle_plugged_in())])
        )
        with pytest.raises(SdkConfigError, match="mqtts: set ca_file"):
            device.start()
    finally:
        store.close()


def test_device_toml_keys(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text(
        f"[device]\ndata_dir = '{tmp_path / 'd'}'\ncoordinator_url = 'http://{REMOTE}'\n"
        "[data]\nx_shape = [2]\n"
    )
    with network_events() as events, pytest.raises(InsecureUrl):
        build_device(load_config(path))
    assert events == []
    path.write_text("[device]\ndata_dir = 'd'\ncoordinator_url = 'https://h'\nmqtt_tls = 'yes'\n")
    with pytest.raises(SdkConfigError, match="mqtt_tls"):
        load_config(path)


# ------------------------------------------------------------------ a whole round over HTTPS
def test_a_device_completes_a_round_with_an_https_coordinator(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    def driver(ctx: DriverContext) -> RoundDriver:
        return FederatedDriver(ctx, pace=PaceConfig(min_delay=0.5, spread=1.0))

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    store = ExampleStore(tmp_path / "examples.sqlite3", x_shape=(12,), x_dtype=np.float32)
    store.extend(list(x), [int(v) for v in np.argmax(x[:, :4], axis=1)])
    config = https_config(tmp_path / "coordinator", mosquitto.url, tls="self-signed")
    with ServiceThread(config, driver) as svc:
        catalog, tasks = svc.service.catalog, svc.service.tasks
        model = svc.run(lambda: catalog.add_export_dir(MODEL, actor="t", max_bytes=1 << 26))
        spec = TaskSpec(goal_count=1, min_reports=1, secagg=False, checkin_deadline_s=8.0,
                        training_deadline_s=20.0, max_rounds=3)  # fmt: skip
        task = svc.run(lambda: tasks.create(name="t", model_sha256=model.sha256, spec=spec,
                                            actor="t"))  # fmt: skip
        device = Device(
            DeviceConfig(
                data_dir=tmp_path / "device",
                coordinator_url=f"https://localhost:{svc.port}",
                ca_file=coordinator_ca(svc),  # MQTT stays plain: enrollment says so
                task_id=task.task_id,
                poll_s=0.5,
                scheduler=SchedulerConfig(wait_poll_s=0.5),
                participant=dict(PARTICIPANT_TIMINGS),
            ),
            store=store,
            device_state=_always(),
        )
        device.enroll(new_token(svc))
        device.start()
        svc.run(lambda: tasks.act(task.task_id, "start", actor="t"))
        try:
            wait_for(lambda: device.status().rounds_completed >= 1, "a completed round", 90)
            status = device.status()
        finally:
            device.stop()
            store.close()
        # The device's update is acknowledged before the commit is written (state thread).
        rounds = svc.service.store.list_rounds
        wait_for(lambda: any(r.status.value == "committed" for r in rounds(task.task_id)),
                 "a commit", 30)  # fmt: skip
    # The model came over HTTPS (the plan's URL), verified with the CA from enrollment.
    assert status.bytes_down > 0
    assert device.credentials is not None
    assert device.credentials.ca_pem == coordinator_ca(svc).read_text()
