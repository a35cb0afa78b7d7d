"""``[broker]``: how the coordinator reaches MQTT (a section of the coordinator's config)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.security.credentials import Secret
from fedrt.coordinator.validation import (
    Port,
    SettingBool,
    SettingInt,
    SettingPath,
    SettingsModel,
    SettingStr,
)

# Standard MQTT ports (IANA): 1883 plain, 8883 TLS.
MQTT_PORT = 1883
MQTTS_PORT = 8883
# ``publish_connections``: the default on NATS, and the most accepted.
NATS_PUBLISH_CONNECTIONS = 8
MAX_PUBLISH_CONNECTIONS = 64


# A list: TOML gives one, an environment variable holds it as JSON ('["a", "b"]').
SettingList = tuple[SettingStr, ...]


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
    # Several coordinator instances on a managed Mosquitto: Mosquitto ties a client id to its
    # username, so each instance logs in as a user of its own (``username``); every instance
    # lists all of them here (same ``password``) so that each keeps the others' accounts when
    # it rewrites the files.
    coordinator_accounts: SettingList = ()
    # More MQTT listeners of the same cluster ("host:port" each, after ``url``): the
    # coordinator and the devices move to the next one when theirs is lost.
    nodes: SettingList = ()
    # A NATS cluster the coordinator manages (broker/nats_auth.py): the auth.conf every node
    # includes, rewritten at each enrollment, and the nodes' pid files to SIGHUP after it.
    # Setting it selects NATS: MQTT 3.1.1 (NATS 2.9 refuses 5), QoS 0 and 1 only.
    nats_auth_file: SettingPath | None = None
    nats_pid_files: SettingList = ()
    # The nodes' core-NATS listeners ("nats://host:port" each): with several coordinator
    # instances on one store, each reads the device topics in a queue group there
    # (broker/reading.py) so that every check-in reaches one instance. Empty: every
    # instance reads every device message (and drops what another instance owns).
    nats_urls: SettingList = ()
    # MQTT connections the coordinator publishes through (broker/link_pool.py). None: 8 on a
    # NATS cluster, which stores each QoS 1 publish one at a time per connection (measured:
    # ~300 a second per connection on a quiet 3-node cluster, 4 connections ~1,200), and 1
    # elsewhere (Mosquitto answers from memory, and may tie one client id to the username).
    publish_connections: SettingInt | None = None
    # The QoS devices read their inbox at, handed to them at enrollment (``mqtt.inbox_qos``).
    # 1: the broker keeps what arrives while a device is away (on NATS each device's QoS 1
    # subscription is a replicated JetStream consumer: one per device). 0: no consumer; what
    # arrives while a device is away is lost, and the device's check-in retries and SecAgg+'s
    # dropout tolerance cover it (docs/coordinator.md, "NATS cluster").
    device_inbox_qos: SettingInt = 1

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

    @field_validator("nats_urls")
    @classmethod
    def _nats_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                port = None
            if parts.scheme not in ("nats", "tls") or not parts.hostname or port is None:
                raise ConfigError(f"broker.nats_urls entries are nats://HOST:PORT, got {url!r}")
        return urls

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, nodes: tuple[str, ...]) -> tuple[str, ...]:
        for node in nodes:
            _host_port(node)
        return nodes

    @model_validator(mode="after")
    def _client_certificate(self) -> BrokerConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("broker.cert_file and broker.key_file go together")
        if self.nats:
            if self.embedded:
                raise ConfigError("broker.nats_auth_file needs broker.url of a NATS node")
            if self.password_file is not None or self.acl_file is not None:
                raise ConfigError(
                    "broker.nats_auth_file replaces password_file and acl_file (Mosquitto's)"
                )
            if self.password is None:
                raise ConfigError("broker.nats_auth_file needs broker.password")
        else:
            for name in ("nats_pid_files", "nats_urls"):
                if getattr(self, name):
                    raise ConfigError(f"broker.{name} needs broker.nats_auth_file")
            if self.publish_connections not in (None, 1):
                raise ConfigError(
                    "broker.publish_connections above 1 needs a NATS cluster (nats_auth_file)"
                )
        if self.device_inbox_qos not in (0, 1):
            raise ConfigError(
                f"broker.device_inbox_qos must be 0 or 1, not {self.device_inbox_qos}"
            )
        if self.publish_connections is not None and not (
            1 <= self.publish_connections <= MAX_PUBLISH_CONNECTIONS
        ):
            raise ConfigError(
                f"broker.publish_connections must be 1..{MAX_PUBLISH_CONNECTIONS},"
                f" not {self.publish_connections}"
            )
        return self

    @property
    def connections(self) -> int:
        """How many MQTT connections the coordinator publishes through."""
        if self.publish_connections is not None:
            return self.publish_connections
        return NATS_PUBLISH_CONNECTIONS if self.nats else 1

    @property
    def nats(self) -> bool:
        return self.nats_auth_file is not None

    @property
    def max_qos(self) -> int:
        """NATS's MQTT listener closes the connection on a QoS 2 publish."""
        return 1 if self.nats else 2

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every MQTT listener to try, ``url`` first."""
        return [(self.host, self.port), *(_host_port(node) for node in self.nodes)]

    @property
    def pid_paths(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.nats_pid_files]

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


def _host_port(node: str) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"broker.nodes entries are HOST:PORT, got {node!r}")
    return host.strip("[]"), int(port)


__all__ = [
    "MAX_PUBLISH_CONNECTIONS",
    "MQTTS_PORT",
    "MQTT_PORT",
    "NATS_PUBLISH_CONNECTIONS",
    "BrokerConfig",
]
