"""The HTTP access log: one line per request on fedrt.coordinator.access, never a credential."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config


def test_each_request_is_logged_once_without_its_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedrt.coordinator.access")
    with ServiceThread(make_config(tmp_path / "data")) as svc:
        assert svc.request("GET", "/v1/tasks").status == 200
        basic = {"Authorization": "Basic ZGV2LTE6c2VjcmV0LXBhc3N3b3Jk"}
        assert svc.request("GET", "/v1/tasks", token=None, headers=basic).status == 401
        assert svc.request("GET", "/healthz", token=None).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "fedrt.coordinator.access"]
    assert len([line for line in lines if '"GET /v1/tasks HTTP/1.1" 200' in line]) == 1
    assert len([line for line in lines if '"GET /v1/tasks HTTP/1.1" 401' in line]) == 1
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in lines)
    for line in lines:
        assert ADMIN_TOKEN not in line
        assert "ZGV2LTE6c2VjcmV0LXBhc3N3b3Jk" not in line
        assert "Bearer" not in line
