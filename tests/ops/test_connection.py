"""Loading the coordinator's address and the admin token: flags over environment, each gap named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fedrt.errors import UsageError
from fedrt.ops.connection import Connection, is_loopback, load_connection
from fedrt.ops.errors import OpsConfigError

TOKEN = "t" * 24


def _load(env: dict[str, str], **flags: Any) -> Connection:
    args: dict[str, Any] = {"url": None, "token_file": None, "ca_file": None,
                            "insecure_http": False, "timeout_s": 5.0}  # fmt: skip
    return load_connection(**(args | flags), env=env)


def test_flags_beat_the_environment(tmp_path: Path) -> None:
    env = {"FEDRT_URL": "http://127.0.0.1:1", "FEDRT_ADMIN_TOKEN": TOKEN,
           "FEDRT_CA_FILE": "/env/ca.pem"}  # fmt: skip
    from_env = _load(env)
    assert (from_env.url, from_env.token, from_env.token_source) == (
        "http://127.0.0.1:1", TOKEN, "FEDRT_ADMIN_TOKEN")  # fmt: skip
    assert from_env.ca_file == Path("/env/ca.pem")
    token_file = tmp_path / "admin-token"
    token_file.write_text("from-file-0123456789\n")
    flagged = _load(env, url="https://c.example:8443/", token_file=token_file,
                    ca_file=tmp_path / "ca.pem")  # fmt: skip
    assert flagged.base_url == "https://c.example:8443"
    assert flagged.token == "from-file-0123456789"
    assert flagged.token_source == f"--token-file {token_file}"
    assert flagged.ca_file == tmp_path / "ca.pem"
    assert TOKEN not in repr(from_env)


@pytest.mark.parametrize(
    ("env", "flags", "match"),
    [
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {}, "set FEDRT_URL or pass --url"),
        ({"FEDRT_URL": "http://127.0.0.1:1"}, {}, "set FEDRT_ADMIN_TOKEN or pass --token-file"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "ftp://h"}, "must look like https://"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "https://u:p@h"}, "credentials"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "https://h/?a=1"}, "no \\?query"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "https://h:99999"}, "bad port"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "http://10.0.0.5:8080"}, "--insecure-http"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "http://coordinator"}, "in clear"),
        ({"FEDRT_ADMIN_TOKEN": "a b"}, {"url": "http://[::1]:1"}, "spaces or control"),
        ({"FEDRT_ADMIN_TOKEN": TOKEN}, {"url": "http://localhost", "timeout_s": 0}, "--timeout"),
        (
            {"FEDRT_ADMIN_TOKEN": TOKEN},
            {"url": "https://h", "token_file": Path("/nonexistent")},
            "cannot read token file",
        ),
    ],
)
def test_unusable_settings_are_usage_errors_that_name_the_fix(
    env: dict[str, str], flags: dict[str, Any], match: str
) -> None:
    with pytest.raises(OpsConfigError, match=match) as caught:
        _load(env, **flags)
    assert isinstance(caught.value, UsageError)


def test_plain_http_leaves_the_machine_only_when_asked() -> None:
    env = {"FEDRT_ADMIN_TOKEN": TOKEN}
    assert _load(env, url="http://10.0.0.5:8080", insecure_http=True).is_local is False
    for url in ("http://localhost:8080", "http://127.0.0.2:1", "http://[::1]:1"):
        assert _load(env, url=url).is_local
    assert not is_loopback("localhost.example.com")
    assert not is_loopback("0.0.0.0")


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(OpsConfigError, match="is empty"):
        _load({}, url="http://127.0.0.1:1", token_file=empty)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(OpsConfigError, match="larger than"):
        _load({}, url="http://127.0.0.1:1", token_file=big)
    assert os.path.exists(big)
