"""A real coordinator service in a background event loop, and a small HTTP client for it."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrt.coordinator.config import BrokerConfig, CoordinatorConfig, HttpConfig, Secret
from fedrt.coordinator.devices.enrollment import enrollment_proof_payload
from fedrt.coordinator.driver import DriverFactory
from fedrt.coordinator.service import CoordinatorService
from tests.coordinator.exported import manifest_for, tflite_bytes
from tests.coordinator.openapi_check import check_reply

ADMIN_TOKEN = "test-admin-token-0123456789"
TIMEOUT = 15.0
T = TypeVar("T")


def make_config(
    data_dir: Path, broker_url: str = "embedded", **overrides: Any
) -> CoordinatorConfig:
    return CoordinatorConfig(
        data_dir=data_dir,
        admin_token=Secret(ADMIN_TOKEN),
        tick_interval_s=overrides.pop("tick_interval_s", 0.05),
        http=HttpConfig(port=0),
        broker=overrides.pop("broker", BrokerConfig(url=broker_url, embedded_port=0)),
        **overrides,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServiceThread:
    """Runs ``CoordinatorService`` in its own thread and loop, like ``fedrt coordinator serve``."""

    def __init__(
        self, config: CoordinatorConfig, driver_factory: DriverFactory | None = None
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.service = CoordinatorService(config, driver_factory=driver_factory)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        try:
            self.call(self.service.start())
        except BaseException:
            self._halt()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.service.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def run(self, fn: Any, *args: Any) -> Any:
        """Run a plain function inside the service's loop (as MQTT callbacks do)."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.call(wrapper())

    @property
    def port(self) -> int:
        assert self.service.http_port is not None
        return self.service.http_port

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = ADMIN_TOKEN,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        check: bool = True,
        context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> Reply:
        """One request on a fresh connection (HTTPS with ``context``); ``check`` validates it
        against the OpenAPI doc."""
        conn = (
            http.client.HTTPSConnection(host, self.port, timeout=TIMEOUT, context=context)
            if context is not None
            else http.client.HTTPConnection(host, self.port, timeout=TIMEOUT)
        )
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            conn.close()
        if check:
            ctype = reply.headers.get("Content-Type", "")
            check_reply(method, path, reply.status, ctype, reply.body)
        return reply


def enroll_device(
    svc: ServiceThread, *, labels: dict[str, str] | None = None, note: str = ""
) -> dict[str, Any]:
    """Enroll a new Ed25519 key with a fresh one-time token; the grant (201 checked)."""
    token = svc.request("POST", "/v1/enrollment-tokens", body={"note": note}).json()["token"]
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body: dict[str, Any] = {
        "token": token,
        "public_key": base64.b64encode(raw).decode(),
        "proof": base64.b64encode(key.sign(enrollment_proof_payload(token))).decode(),
    }
    if labels is not None:
        body["labels"] = labels
    reply = svc.request("POST", "/v1/enroll", token=None, body=body)
    assert reply.status == 201
    grant: dict[str, Any] = reply.json()
    return grant


def upload_model(svc: ServiceThread, seed: int = 0) -> str:
    """Upload a stand-in ``fedrt export`` (``tests.coordinator.exported``); its sha256."""
    data = tflite_bytes(seed)
    body, ctype = multipart(
        [
            ("manifest", manifest_for(data).to_json().encode(), "application/json"),
            ("model", data, "application/octet-stream"),
        ]
    )
    reply = svc.request("POST", "/v1/models", raw=body, headers={"Content-Type": ctype})
    assert reply.status == 201
    return str(reply.json()["sha256"])


def multipart(parts: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """Encode (name, data, content type) parts as multipart/form-data."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, data, ctype in parts:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n'.encode()
        out += f"Content-Type: {ctype}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def mqtt_connect_code(
    port: int,
    username: str | None,
    password: str | None,
    *,
    v5: bool = True,
    host: str = "127.0.0.1",
) -> int:
    """CONNACK reason code of one connection attempt (0 = accepted), then disconnect.

    Driven without paho's background thread, so a refused client never reconnects on its
    own and leaves no socket behind for a later test to trip over.
    """
    import time

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    codes: list[int] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: codes.append(int(rc.value))
    try:
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + TIMEOUT
        while not codes and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS and not codes:
                break  # the broker closed the connection without a CONNACK
        if codes and codes[0] == 0:
            client.disconnect()
    finally:
        # reinitialise() closes the socket and the wake-up socket pair loop() made; left to
        # the garbage collector, paho's sockets may be finalized unclosed in a later test.
        client.reinitialise()
    return codes[0] if codes else -1
