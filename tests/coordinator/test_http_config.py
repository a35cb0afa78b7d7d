"""The HTTP settings: public URL, HTTPS files, from TOML < environment < flags, and their errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedrt.coordinator.config import HttpConfig, cli_layer, describe, load_config
from fedrt.coordinator.errors import ConfigError
from fedrt.errors import UsageError


def test_default_url_is_the_bind_address() -> None:
    http = load_config(environ={}).http
    assert (http.public_url, http.tls, http.tls_cert, http.https) == (None, None, None, False)
    assert http.base_url() == "http://127.0.0.1:8080"
    # Port 0: the port the OS picked, once bound.
    assert HttpConfig(port=0).base_url(43210) == "http://127.0.0.1:43210"
    assert HttpConfig(host="::1", tls="self-signed").base_url() == "https://[::1]:8080"


def test_public_url_from_file_env_and_flag(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[http]\nhost = "0.0.0.0"\npublic_url = "https://file.example/"\n')
    assert load_config(toml, environ={}).http.base_url() == "https://file.example"
    env = {"FEDRT_HTTP_PUBLIC_URL": "https://env.example:8443/fedrt/"}
    from_env = load_config(toml, environ=env).http
    assert from_env.base_url(9999) == "https://env.example:8443/fedrt"
    flag = cli_layer(http="[::]:8443", public_url="http://10.0.0.5:8443")
    from_flag = load_config(toml, environ=env, cli=flag).http
    assert (from_flag.host, from_flag.port) == ("::", 8443)
    assert from_flag.public_url == "http://10.0.0.5:8443"
    assert (
        describe(load_config(toml, environ=env))["http"]["public_url"]
        == env["FEDRT_HTTP_PUBLIC_URL"]
    )


def test_tls_settings_from_file_env_and_flags(tmp_path: Path) -> None:
    env = {
        "FEDRT_HTTP_TLS_CERT": "/etc/fedrt/server.crt",
        "FEDRT_HTTP_TLS_KEY": "/etc/fedrt/server.key",
        "FEDRT_HTTP_TLS_CA": "/etc/fedrt/ca.crt",
    }
    http = load_config(environ=env).http
    assert (http.tls_cert, http.tls_key, http.ca_file) == (
        Path("/etc/fedrt/server.crt"), Path("/etc/fedrt/server.key"), Path("/etc/fedrt/ca.crt"),
    )  # fmt: skip
    assert http.https
    assert http.base_url() == "https://127.0.0.1:8080"
    # The TOML key of --tls-ca / FEDRT_HTTP_TLS_CA is ca_file (its env spelling works too).
    assert load_config(environ=env | {"FEDRT_HTTP_TLS_CA": "", "FEDRT_HTTP_CA_FILE": "/x"})
    toml = tmp_path / "c.toml"
    toml.write_text('[http]\ntls = "self-signed"\n')
    assert load_config(toml, environ={}).http.tls == "self-signed"
    assert load_config(environ={"FEDRT_HTTP_TLS": "self-signed"}).http.https
    flags = cli_layer(tls_cert="/c.pem", tls_key="/k.pem", tls_ca="/ca.pem")
    assert flags == {"http": {"tls_cert": "/c.pem", "tls_key": "/k.pem", "ca_file": "/ca.pem"}}
    assert cli_layer(tls="self-signed", http="127.0.0.1:1") == {
        "http": {"host": "127.0.0.1", "port": 1, "tls": "self-signed"}
    }


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "*"])
def test_a_wildcard_bind_needs_a_public_url(host: str) -> None:
    with pytest.raises(ConfigError, match=r"http\.public_url") as info:
        load_config(environ={"FEDRT_HTTP_HOST": host})
    assert isinstance(info.value, UsageError)
    assert "--public-url" in str(info.value)
    assert "FEDRT_HTTP_PUBLIC_URL" in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("fl.example:8443", "http(s)://HOST"),
        ("ftp://fl.example", "http(s)://HOST"),
        ("https://", "http(s)://HOST"),
        ("https://fl.example:99999", "bad port"),
        ("https://fl.example:https", "bad port"),
        ("https://fl.example:0", "bad port"),
        ("https://fl.example/?x=1", "no query or fragment"),
        ("https://fl.example/#top", "no query or fragment"),
        ("https://fl.example?", "no query or fragment"),
        ("https://user:pw@fl.example", "user or password"),
        ("http://0.0.0.0:8080", "no reachable host"),
        ("http://[::]:8080", "no reachable host"),
    ],
)
def test_a_bad_public_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(environ={"FEDRT_HTTP_PUBLIC_URL": url})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEDRT_HTTP_TLS": "yes"}, "http.tls must be 'self-signed'"),
        ({"FEDRT_HTTP_TLS_CERT": "/c.pem"}, "go together"),
        ({"FEDRT_HTTP_TLS_KEY": "/k.pem"}, "go together"),
        (
            {
                "FEDRT_HTTP_TLS": "self-signed",
                "FEDRT_HTTP_TLS_CERT": "/c",
                "FEDRT_HTTP_TLS_KEY": "/k",
            },
            "exclude each other",
        ),
        ({"FEDRT_HTTP_TLS_CA": "/ca.pem"}, "http.ca_file is the CA of http.tls_cert"),
        ({"FEDRT_HTTP_TLS": "self-signed", "FEDRT_HTTP_TLS_CA": "/ca.pem"}, "http.ca_file"),
        ({"FEDRT_HTTP_PUBLIC_URRL": "https://x"}, "unknown environment variable"),
    ],
)
def test_bad_tls_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(environ=env)
