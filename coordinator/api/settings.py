"""The HTTP part of the coordinator's configuration: listen address, public URL and HTTPS."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.validation import Port, SettingInt, SettingPath, SettingsModel, SettingStr

# Bind addresses that mean "every interface": no device can reach a coordinator by them.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*", ""})  # noqa: S104 - recognised, not bound
TLS_SELF_SIGNED = "self-signed"


class HttpConfig(SettingsModel):
    """Where the REST API and dashboard listen, the address devices use, and HTTPS."""

    where = "http"

    # Loopback by default: exposing the admin API is an explicit operator decision.
    host: SettingStr = Field("127.0.0.1", min_length=1)
    port: Port = 8080
    # Exported models are a few MB; 256 MiB leaves room for large LSTMs, stops runaway uploads.
    max_upload_bytes: SettingInt = Field(256 * 1024 * 1024, ge=1024)
    # What devices put in front of /v1/...: required when ``host`` is a wildcard, since a
    # plan that said http://0.0.0.0:8080 reaches nothing. None: scheme://host:port of the bind.
    public_url: SettingStr | None = None
    # "self-signed": a server certificate issued at start by the coordinator's own CA
    # (DATA_DIR/tls/ca.crt), which enrollment hands to devices. Else tls_cert + tls_key.
    tls: SettingStr | None = None
    tls_cert: SettingPath | None = None
    tls_key: SettingPath | None = None
    # The CA (chain) that signs ``tls_cert``: devices receive it at enrollment. None: devices
    # trust their own ca_file or the system store (a certificate from a public CA).
    ca_file: SettingPath | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is not None:
            _check_public_url(url)
        return url

    @model_validator(mode="after")
    def _check(self) -> HttpConfig:
        if self.public_url is None and self.host in WILDCARD_HOSTS:
            raise ConfigError(
                f"http.host {self.host!r} listens on every interface, which devices cannot "
                "use as an address: set http.public_url (--public-url, FEDRT_HTTP_PUBLIC_URL) "
                "to the URL devices reach this coordinator at"
            )
        if self.tls not in (None, TLS_SELF_SIGNED):
            raise ConfigError(f"http.tls must be {TLS_SELF_SIGNED!r} when set, got {self.tls!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("http.tls_cert and http.tls_key go together")
        if self.tls is not None and self.tls_cert is not None:
            raise ConfigError("http.tls = 'self-signed' and http.tls_cert exclude each other")
        if self.ca_file is not None and self.tls_cert is None:
            raise ConfigError("http.ca_file is the CA of http.tls_cert: set both (or neither)")
        return self

    @property
    def https(self) -> bool:
        return self.tls is not None or self.tls_cert is not None

    def base_url(self, bound_port: int | None = None) -> str:
        """The URL devices use, without a trailing slash (the bound port when ``port`` is 0)."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = bound_port or self.port
        return f"{'https' if self.https else 'http'}://{host}:{port}"


def _check_public_url(url: str) -> None:
    """An absolute http(s) URL with a host, maybe a path prefix; nothing a device would drop."""
    what = f"http.public_url must be http(s)://HOST[:PORT][/PATH], got {url!r}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(what)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"http.public_url must have no query or fragment, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("http.public_url must not carry a user or password")
    if parts.hostname in WILDCARD_HOSTS:
        raise ConfigError(f"http.public_url names no reachable host: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"http.public_url has a bad port: {url!r}") from None
    if port == 0:
        raise ConfigError(f"http.public_url has a bad port: {url!r}")


__all__ = ["TLS_SELF_SIGNED", "WILDCARD_HOSTS", "HttpConfig"]
