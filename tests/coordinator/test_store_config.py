"""Choosing the store: ``[store] url``, ``FEDRT_STORE_URL``, ``--store``; SQLite when unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.coordinator.config import cli_layer, describe, load_config
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.service import open_store
from fedrt.coordinator.store.sqlite import SqliteStore

URL = "postgresql://fedrt:hunter2@db.example:5432/fedrt"


def test_unset_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    config = load_config(environ={}, cli=cli_layer(data_dir=str(tmp_path)))
    assert config.store.url is None
    store = open_store(config)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "coordinator.sqlite3"
    finally:
        store.close()


def test_file_then_env_then_flag(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'[store]\nurl = "{URL}"\n')
    assert load_config(toml, environ={}).store.url is not None
    env = {"FEDRT_STORE_URL": URL.replace("db.example", "env.example")}
    config = load_config(toml, environ=env)
    assert config.store.url is not None
    assert "env.example" in config.store.url.reveal()
    flag = cli_layer(store=URL.replace("db.example", "flag.example"))
    config = load_config(toml, environ=env, cli=flag)
    assert config.store.url is not None
    assert "flag.example" in config.store.url.reveal()


def test_the_url_never_shows() -> None:
    config = load_config(environ={"FEDRT_STORE_URL": URL})
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(describe(config))
    assert describe(config)["store"]["url"] == "***"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEDRT_STORE_URL": "mysql://u:hunter2@h/db"}, "store.url must be a postgresql://"),
        ({"FEDRT_STORE_URL": "hunter2"}, "store.url must be a postgresql://"),
        ({"FEDRT_STORE_URL": URL, "FEDRT_DB": "x.sqlite3"}, "exclude each other"),
        ({"FEDRT_STORE_URLL": URL}, "unknown environment variable FEDRT_STORE_URLL"),
    ],
)
def test_bad_store_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(environ=env)
    assert "hunter2" not in str(info.value)
