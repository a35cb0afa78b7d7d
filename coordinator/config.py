"""Coordinator configuration: frozen dataclasses and the one loader (TOML < env < flags)."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.http_config import TLS_SELF_SIGNED, WILDCARD_HOSTS, HttpConfig
from fedrt.coordinator.http_config import check_port as _check_port
from fedrt.coordinator.pace_steering import PaceConfig

ENV_PREFIX = "FEDRT_"
# Standard MQTT ports (IANA): 1883 plain, 8883 TLS.
MQTT_PORT = 1883
MQTTS_PORT = 8883


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows in ``repr``, logs or tracebacks; ``reveal()`` to use it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """How the coordinator reaches MQTT: ``embedded`` or an ``mqtt://``/``mqtts://`` URL."""

    # Embedded (amqtt in-process) so that one machine needs nothing else installed.
    url: str = "embedded"
    embedded_host: str = "127.0.0.1"
    embedded_port: int = MQTT_PORT
    # The embedded broker checks enrolled credentials and the device ACL; anonymous access
    # (any local process may publish as any device) is for demos and tests only.
    embedded_anonymous: bool = False
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Files of an external Mosquitto the coordinator manages (enrollment writes them).
    password_file: Path | None = None
    acl_file: Path | None = None
    # Mosquitto's pid file: SIGHUP to it makes the broker re-read passwords and ACLs.
    pid_file: Path | None = None

    def __post_init__(self) -> None:
        if self.url != "embedded":
            parts = urlsplit(self.url)
            if parts.scheme not in ("mqtt", "mqtts"):
                raise ConfigError(
                    f"broker.url must be 'embedded', mqtt://HOST[:PORT] or mqtts://HOST[:PORT],"
                    f" got {self.url!r}"
                )
            if not parts.hostname:
                raise ConfigError(f"broker.url has no host: {self.url!r}")
            try:
                _ = parts.port
            except ValueError as exc:
                raise ConfigError(f"broker.url has a bad port: {self.url!r}") from exc
        _check_port("broker.embedded_port", self.embedded_port, allow_zero=True)
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("broker.cert_file and broker.key_file go together")

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


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """Per-device allowances (token buckets) on HTTP routes and MQTT topics."""

    # A device does a handful of requests per round (plan, model, report): 5/s sustained with
    # a burst of 20 never throttles an honest device and caps a flooding one.
    device_rate_per_s: float = 5.0
    device_burst: int = 20
    # Largest accepted MQTT payload from a device; a 1M-param update at 32 bits is ~4 MiB.
    max_message_bytes: int = 16 * 1024 * 1024
    # Enrollments per client address: a fleet behind one NAT enrolls over minutes, while a
    # token-guessing client is slowed to a crawl. Raise it for provisioning runs.
    enroll_rate_per_s: float = 1.0
    enroll_burst: int = 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.device_rate_per_s) and self.device_rate_per_s > 0):
            raise ConfigError(f"limits.device_rate_per_s must be > 0, got {self.device_rate_per_s}")
        if not (math.isfinite(self.enroll_rate_per_s) and self.enroll_rate_per_s > 0):
            raise ConfigError(f"limits.enroll_rate_per_s must be > 0, got {self.enroll_rate_per_s}")
        if self.enroll_burst < 1:
            raise ConfigError(f"limits.enroll_burst must be >= 1, got {self.enroll_burst}")
        if self.device_burst < 1:
            raise ConfigError(f"limits.device_burst must be >= 1, got {self.device_burst}")
        if self.max_message_bytes < 1024:
            raise ConfigError(
                f"limits.max_message_bytes must be >= 1024, got {self.max_message_bytes}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Who may read ``/metrics``: anyone (no token), or scrapers holding ``token``."""

    # None: open, as a Prometheus endpoint on a private network usually is. Set it when the
    # HTTP port is reachable by others (round and device counts say a lot about a fleet).
    token: Secret | None = None

    def __post_init__(self) -> None:
        # As for admin_token: too long to guess over HTTP.
        if self.token is not None and len(self.token.reveal()) < 16:
            raise ConfigError("metrics.token must be at least 16 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorConfig:
    """Everything ``fedrt coordinator serve`` needs; validated on construction."""

    data_dir: Path = Path("fedrt-data")
    # None: ``<data_dir>/coordinator.sqlite3`` (see ``db_path``).
    db: Path | None = None
    # None: a random token is generated on first start into ``<data_dir>/admin-token`` (0600).
    admin_token: Secret | None = None
    # Half a second resolves per-stage deadlines (tens of seconds) finely at negligible cost.
    tick_interval_s: float = 0.5
    http: HttpConfig = field(default_factory=HttpConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # Reconnect windows for devices the coordinator cannot use now (``pace_steering``).
    pace: PaceConfig = field(default_factory=PaceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tick_interval_s) and 0 < self.tick_interval_s <= 60):
            raise ConfigError(f"tick_interval_s must be in (0, 60], got {self.tick_interval_s}")
        if self.admin_token is not None and len(self.admin_token.reveal()) < 16:
            raise ConfigError("admin_token must be at least 16 characters")

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.data_dir / "coordinator.sqlite3"


# ---------------------------------------------------------------- loading


_SECTIONS: dict[str, type[Any]] = {
    "http": HttpConfig,
    "broker": BrokerConfig,
    "limits": LimitsConfig,
    "pace": PaceConfig,
    "metrics": MetricsConfig,
}


# Variables whose name follows the flag rather than the key (--tls-ca -> http.ca_file).
_ENV_ALIASES = {"FEDRT_HTTP_TLS_CA": "http_ca_file"}


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """``FEDRT_HTTP_PORT=9000`` -> ``{"http": {"port": "9000"}}``; unknown names are errors."""
    out: dict[str, Any] = {}
    top = {f.name for f in fields(CoordinatorConfig)} - set(_SECTIONS)
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = _ENV_ALIASES.get(key) or key[len(ENV_PREFIX) :].lower()
        if name in top:
            out[name] = value
            continue
        section, _, rest = name.partition("_")
        if section in _SECTIONS and rest in {f.name for f in fields(_SECTIONS[section])}:
            out.setdefault(section, {})[rest] = value
        elif section in _SECTIONS:
            raise ConfigError(f"unknown environment variable {key}")
        # Other FEDRT_ variables belong to other fedrt parts (sdk, bench): not ours.
    return out


def parse_host_port(value: str, *, what: str = "--http") -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def cli_layer(
    *,
    http: str | None = None,
    public_url: str | None = None,
    tls: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    broker: str | None = None,
    db: str | None = None,
    data_dir: str | None = None,
    pace_min_delay: float | None = None,
    pace_spread: float | None = None,
    pace_rate: float | None = None,
) -> dict[str, Any]:
    """The layer the ``serve`` flags contribute (None = flag not given)."""
    out: dict[str, Any] = {}
    pace = {
        k: v
        for k, v in (
            ("min_delay", pace_min_delay),
            ("spread", pace_spread),
            ("target_rate", pace_rate),
        )
        if v is not None
    }
    if pace:
        out["pace"] = pace
    web: dict[str, Any] = {}
    if http is not None:
        host, port = parse_host_port(http)
        web |= {"host": host, "port": port}
    for key, value in (
        ("public_url", public_url),
        ("tls", tls),
        ("tls_cert", tls_cert),
        ("tls_key", tls_key),
        ("ca_file", tls_ca),
    ):
        if value is not None:
            web[key] = value
    if web:
        out["http"] = web
    if broker is not None:
        out["broker"] = {"url": broker}
    if db is not None:
        out["db"] = db
    if data_dir is not None:
        out["data_dir"] = data_dir
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _coerce(name: str, annotation: str, value: Any) -> Any:
    """Turn a TOML value or an env string into the field's type, or say why not."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix(" | None")
    if value is None or (optional and value == ""):
        if optional:
            return None
        raise ConfigError(f"{name} must be set")
    try:
        if base == "int":
            if isinstance(value, (bool, float)):
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _BOOLS:
                return _BOOLS[value.lower()]
            raise ValueError
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if base == "Path":
            if not isinstance(value, str):
                raise ValueError
            return Path(value).expanduser()
        if base == "Secret":
            if not isinstance(value, str):
                raise ValueError
            return Secret(value)
    except (TypeError, ValueError):
        shown = "***" if base == "Secret" else repr(value)
        raise ConfigError(f"{name} must be {base}, got {shown}") from None
    raise ConfigError(f"{name}: unsupported type {annotation}")  # pragma: no cover


def _build(cls: type[Any], raw: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        fld = known[key]
        if key in _SECTIONS and cls is CoordinatorConfig:
            kwargs[key] = _build(_SECTIONS[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(prefix + key, str(fld.type), value)
    return cls(**kwargs)


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> CoordinatorConfig:
    """Merge TOML file < ``FEDRT_*`` environment < CLI flags into a validated config.

    ``path`` may also come from ``FEDRT_CONFIG``. Unknown keys are errors, so a typo in a
    file is never silently ignored.
    """
    env = dict(os.environ if environ is None else environ)
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    file_layer: dict[str, Any] = {}
    if path is not None:
        try:
            with Path(path).open("rb") as fh:
                file_layer = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    merged = _merge(_merge(file_layer, _env_layer(env)), cli or {})
    config = _build(CoordinatorConfig, merged, "")
    assert isinstance(config, CoordinatorConfig)
    return config


def describe(config: CoordinatorConfig) -> dict[str, Any]:
    """A JSON-able view for logs and the API: secrets shown as ``***``."""

    def view(obj: Any) -> Any:
        if isinstance(obj, Secret):
            return "***"
        if isinstance(obj, Path):
            return str(obj)
        if is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: view(getattr(obj, f.name)) for f in fields(obj)}
        return obj

    out = view(config)
    assert isinstance(out, dict)
    return out


__all__ = [
    "TLS_SELF_SIGNED",
    "WILDCARD_HOSTS",
    "BrokerConfig",
    "CoordinatorConfig",
    "HttpConfig",
    "LimitsConfig",
    "MetricsConfig",
    "PaceConfig",
    "Secret",
    "cli_layer",
    "describe",
    "load_config",
    "parse_host_port",
]
