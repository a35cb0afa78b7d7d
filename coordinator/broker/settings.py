"""``[broker]``: how the coordinator reaches MQTT (a section of the coordinator's config)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.security.credentials import Secret
from fedrt.coordinator.validation import (
    Port,
    SettingBool,
    SettingPath,
    SettingsModel,
    SettingStr,
)

# Standard MQTT ports (IANA): 1883 plain, 8883 TLS.
MQTT_PORT = 1883
MQTTS_PORT = 8883


class BrokerConfig(SettingsModel):
    """How the coordinator reaches MQTT: ``embedded`` or an ``mqtt://``/``mqtts://`` URL."""

    where = "broker"

    # Embedded (amqtt in-process) so that one machine needs nothing else installed.
    url: SettingStr = "embedded"
    embedded_host: SettingStr = "127.0.0.1"
    embedded_port: Port = MQTT_PORT
    # The embedded broker checks enrolled credentials and the device ACL; anonymous access
    # (any local process may publish as any device) is for demos and tests only.
    embedded_anonymous: SettingBool = False
    username: SettingStr | None = None
    password: Secret | None = None
    ca_file: SettingPath | None = None
    cert_file: SettingPath | None = None
    key_file: SettingPath | None = None
    # Files of an external Mosquitto the coordinator manages (enrollment writes them).
    password_file: SettingPath | None = None
    acl_file: SettingPath | None = None
    # Mosquitto's pid file: SIGHUP to it makes the broker re-read passwords and ACLs.
    pid_file: SettingPath | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if url != "embedded":
            parts = urlsplit(url)
            if parts.scheme not in ("mqtt", "mqtts"):
                raise ConfigError(
                    f"broker.url must be 'embedded', mqtt://HOST[:PORT] or mqtts://HOST[:PORT],"
                    f" got {url!r}"
                )
            if not parts.hostname:
                raise ConfigError(f"broker.url has no host: {url!r}")
            try:
                _ = parts.port
            except ValueError as exc:
                raise ConfigError(f"broker.url has a bad port: {url!r}") from exc
        return url

    @model_validator(mode="after")
    def _client_certificate(self) -> BrokerConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("broker.cert_file and broker.key_file go together")
        return self

    @property
    def embedded(self) -> bool:
        return self.url == "embedded"

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        if self.embedded:
            return self.embedded_host
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        if self.embedded:
            return self.embedded_port
        parts = urlsplit(self.url)
        return parts.port or (MQTTS_PORT if parts.scheme == "mqtts" else MQTT_PORT)


__all__ = ["MQTTS_PORT", "MQTT_PORT", "BrokerConfig"]
