"""``[metrics] token``: /metrics open without it, bearer-only with it (admin token too)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedrt.coordinator.config import MetricsConfig, Secret, describe, load_config
from fedrt.coordinator.errors import ConfigError
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, make_config

TOKEN = "scraper-token-0123456789"


def test_token_from_toml_or_environment_never_shows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    toml = tmp_path / "coordinator.toml"
    toml.write_text(f'[metrics]\ntoken = "{TOKEN}"\n')
    from_file = load_config(toml, environ={})
    from_env = load_config(environ={"FEDRT_METRICS_TOKEN": TOKEN})
    for config in (from_file, from_env):
        assert config.metrics.token is not None
        assert config.metrics.token.reveal() == TOKEN
        assert describe(config)["metrics"] == {"token": "***"}
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("fedrt.test").info("config %r %s", config, describe(config))
    assert TOKEN not in repr(from_file) + caplog.text
    assert load_config(environ={}).metrics.token is None
    assert describe(load_config(environ={}))["metrics"] == {"token": None}


def test_short_or_unknown_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(environ={"FEDRT_METRICS_TOKEN": "short"})
    with pytest.raises(ConfigError, match="at least 16"):
        MetricsConfig(token=Secret("x" * 15))
    with pytest.raises(ConfigError, match="FEDRT_METRICS_TOKN"):
        load_config(environ={"FEDRT_METRICS_TOKN": TOKEN})
    toml = tmp_path / "coordinator.toml"
    toml.write_text('[metrics]\npath = "/m"\n')
    with pytest.raises(ConfigError, match=r"metrics\.path"):
        load_config(toml, environ={})


def test_metrics_need_the_token_once_one_is_set(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", metrics=MetricsConfig(token=Secret(TOKEN)))
    with ServiceThread(config) as svc:
        refused = svc.request("GET", "/metrics", token=None)
        assert refused.status == 401
        assert refused.json()["error"]["type"] == "AuthError"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert svc.request("GET", "/metrics", token="x" * len(TOKEN)).status == 401
        basic = {"Authorization": "Basic " + TOKEN}
        assert svc.request("GET", "/metrics", token=None, headers=basic).status == 401
        for token in (TOKEN, ADMIN_TOKEN):
            reply = svc.request("GET", "/metrics", token=token)
            assert reply.status == 200
            assert "# TYPE fedrt_http_requests_total counter" in reply.body.decode()
        # The other routes are untouched: the metrics token is not an admin token.
        assert svc.request("GET", "/v1/tasks", token=TOKEN).status == 401
        assert svc.request("GET", "/healthz", token=None).status == 200


def test_metrics_are_open_without_a_token(tmp_path: Path) -> None:
    with ServiceThread(make_config(tmp_path / "data")) as svc:
        assert svc.request("GET", "/metrics", token=None).status == 200
        assert svc.request("GET", "/metrics", token="anything-at-all-here").status == 200
