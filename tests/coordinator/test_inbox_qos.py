"""``[broker] device_inbox_qos`` reaches devices in their enrollment grant."""

from __future__ import annotations

from pathlib import Path

from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.sdk.credentials import Credentials
from tests.coordinator.harness import ServiceThread, enroll_device, make_config


def test_the_grant_tells_the_inbox_qos_and_the_sdk_reads_it(tmp_path: Path) -> None:
    broker = BrokerConfig(url="embedded", embedded_port=0, device_inbox_qos=0)
    with ServiceThread(make_config(tmp_path / "coord", broker=broker)) as svc:
        grant = enroll_device(svc)
        assert grant["mqtt"]["inbox_qos"] == 0
        assert Credentials.from_json(grant).mqtt_inbox_qos == 0
        # The API's own description of the grant names the field.
        spec = svc.request("GET", "/v1/openapi.json").json()
        assert "inbox_qos" in str(spec)
