"""Config loading: defaults, TOML < environment < flags, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.coordinator.config import (
    CoordinatorConfig,
    Secret,
    cli_layer,
    describe,
    load_config,
)
from fedrt.coordinator.errors import ConfigError
from fedrt.errors import UsageError


def test_defaults_are_single_machine_and_loopback() -> None:
    config = load_config(environ={})
    assert config.broker.embedded
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.db_path == Path("fedrt-data") / "coordinator.sqlite3"
    assert config.admin_token is None


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "coordinator.toml"
    toml.write_text(
        'data_dir = "/srv/fedrt"\nadmin_token = "file-token-0123456789"\n'
        '[http]\nhost = "0.0.0.0"\nport = 9000\npublic_url = "https://fl.example"\n'
        '[broker]\nurl = "mqtt://broker.example:1884"\n'
        "[limits]\ndevice_burst = 7\n"
    )
    env = {"FEDRT_HTTP_PORT": "9100", "FEDRT_LIMITS_DEVICE_RATE_PER_S": "2.5", "HOME": "/x"}
    config = load_config(toml, environ=env, cli=cli_layer(http="127.0.0.1:9200"))
    assert config.data_dir == Path("/srv/fedrt")
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9200)  # flag wins
    assert config.limits.device_rate_per_s == 2.5  # env over default
    assert config.limits.device_burst == 7  # file over default
    assert (config.broker.host, config.broker.port, config.broker.tls) == (
        "broker.example", 1884, False,
    )  # fmt: skip
    only_env = load_config(toml, environ=env)
    assert only_env.http.port == 9100  # env over file


def test_config_path_from_environment(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[broker]\nurl = "mqtts://b.example"\n')
    config = load_config(environ={"FEDRT_CONFIG": str(toml)})
    assert (config.broker.tls, config.broker.port) == (True, 8883)


def test_admin_token_never_shows() -> None:
    config = load_config(environ={"FEDRT_ADMIN_TOKEN": "super-secret-token-value"})
    assert config.admin_token is not None
    assert config.admin_token.reveal() == "super-secret-token-value"
    assert "super-secret" not in repr(config)
    assert "super-secret" not in str(describe(config))
    assert describe(config)["admin_token"] == "***"
    assert repr(Secret("abc")) == "Secret('***')"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[http]\nport = 70000\n", {}, "http.port"),
        ("[http]\nprot = 1\n", {}, "unknown config key"),
        ("colour = 1\n", {}, "unknown config key"),
        ('[broker]\nurl = "amqp://x"\n', {}, "broker.url"),
        ('[broker]\nurl = "mqtt://"\n', {}, "no host"),
        ('[broker]\nurl = "mqtt://h:99999"\n', {}, "bad port"),
        ('[broker]\ncert_file = "/c.pem"\n', {}, "go together"),
        ('[http]\nport = "eighty"\n', {}, "must be int"),
        ("http = 3\n", {}, "must be a table"),
        ("tick_interval_s = 0\n", {}, "tick_interval_s"),
        ('admin_token = "short"\n', {}, "at least 16"),
        ("[limits]\ndevice_rate_per_s = -1\n", {}, "device_rate_per_s"),
        ("", {"FEDRT_HTTP_PORTT": "1"}, "unknown environment variable"),
        ("", {"FEDRT_HTTP_PORT": "x"}, "must be int"),
        ("not toml [", {}, "not valid TOML"),
    ],
)
def test_bad_values_are_clear_errors(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, environ=env)
    assert isinstance(info.value, UsageError)  # the CLI prints these cleanly


def test_missing_file_and_bad_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})
    for bad in ["8080", "host:", ":80", "host:port"]:
        with pytest.raises(ConfigError, match="HOST:PORT"):
            cli_layer(http=bad)
    assert cli_layer(http="[::1]:8080") == {"http": {"host": "::1", "port": 8080}}


def test_secret_errors_do_not_echo_the_value(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("admin_token = 1234567890123456789\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "1234567890123456789" not in str(info.value)


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError):
        CoordinatorConfig(tick_interval_s=float("nan"))


def test_booleans_from_env_and_toml(tmp_path: Path) -> None:
    env = {"FEDRT_BROKER_EMBEDDED_ANONYMOUS": "true"}
    assert load_config(environ=env).broker.embedded_anonymous is True
    assert load_config(environ={}).broker.embedded_anonymous is False
    with pytest.raises(ConfigError, match="must be bool"):
        load_config(environ={"FEDRT_BROKER_EMBEDDED_ANONYMOUS": "maybe"})
    path = tmp_path / "c.toml"
    path.write_text("[broker]\nembedded_anonymous = 1\n")
    with pytest.raises(ConfigError, match="must be bool"):
        load_config(path, environ={})


def test_pace_steering_from_file_env_and_flags(tmp_path: Path) -> None:
    assert load_config(environ={}).pace.min_delay == 60.0  # the documented default
    toml = tmp_path / "coordinator.toml"
    toml.write_text("[pace]\nmin_delay = 20\nspread = 5.5\ntarget_rate = 4\n")
    env = {"FEDRT_PACE_SPREAD": "8"}
    config = load_config(toml, environ=env, cli=cli_layer(pace_min_delay=2.0))
    assert (config.pace.min_delay, config.pace.spread, config.pace.target_rate) == (2.0, 8.0, 4.0)
    assert describe(config)["pace"] == {"target_rate": 4.0, "min_delay": 2.0, "spread": 8.0}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEDRT_PACE_MIN_DELAY": "-1"}, "pace.min_delay"),
        ({"FEDRT_PACE_SPREAD": "0"}, "pace.spread"),
        ({"FEDRT_PACE_TARGET_RATE": "nan"}, "pace.target_rate"),
        ({"FEDRT_PACE_MIN_DELAY": "soon"}, "pace.min_delay must be float"),
        ({"FEDRT_PACE_WINDOW": "3"}, "FEDRT_PACE_WINDOW"),
    ],
)
def test_bad_pace_steering_is_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ=env)


def test_spread_cohorts_is_off_by_default_and_a_checked_boolean() -> None:
    assert load_config(environ={}).cluster.spread_cohorts is False
    on = load_config(environ={"FEDRT_CLUSTER_SPREAD_COHORTS": "true"})
    assert on.cluster.spread_cohorts is True
    with pytest.raises(ConfigError, match=r"cluster\.spread_cohorts"):
        load_config(environ={"FEDRT_CLUSTER_SPREAD_COHORTS": "maybe"})
