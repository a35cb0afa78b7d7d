"""Coordinator configuration: pydantic models, loaded by pydantic-settings (TOML < env < flags).

``CoordinatorConfig`` and its sections validate on construction (``ConfigError`` naming the
setting). ``load_config`` layers the sources with pydantic-settings: the TOML file, then
``FEDRT_*`` variables (``FEDRT_HTTP_PORT`` is ``http.port``), then the flags; unknown keys
and unknown ``FEDRT_<SECTION>_*`` variables are errors. ``Secret`` values never show in
``repr``, ``describe`` or an error message.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fedrt.coordinator.api.settings import TLS_SELF_SIGNED, WILDCARD_HOSTS, HttpConfig
from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.security.credentials import Secret
from fedrt.coordinator.selection.pace import PaceConfig
from fedrt.coordinator.validation import (
    SettingBool,
    SettingFloat,
    SettingInt,
    SettingPath,
    SettingsModel,
    SettingStr,
)

ENV_PREFIX = "FEDRT_"
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"


class LimitsConfig(SettingsModel):
    """Per-device allowances (token buckets) on HTTP routes and MQTT topics."""

    where = "limits"

    # A device does a handful of requests per round (plan, model, report): 5/s sustained with
    # a burst of 20 never throttles an honest device and caps a flooding one.
    device_rate_per_s: SettingFloat = Field(5.0, gt=0)
    device_burst: SettingInt = Field(20, ge=1)
    # Largest accepted MQTT payload from a device; a 1M-param update at 32 bits is ~4 MiB.
    max_message_bytes: SettingInt = Field(16 * 1024 * 1024, ge=1024)
    # Enrollments per client address: a fleet behind one NAT enrolls over minutes, while a
    # token-guessing client is slowed to a crawl. Raise it for provisioning runs.
    enroll_rate_per_s: SettingFloat = Field(1.0, gt=0)
    enroll_burst: SettingInt = Field(10, ge=1)


def _long_enough(name: str, token: Secret | None) -> Secret | None:
    # Too long to guess over HTTP.
    if token is not None and len(token.reveal()) < 16:
        raise ConfigError(f"{name} must be at least 16 characters")
    return token


class MetricsConfig(SettingsModel):
    """Who may read ``/metrics``: anyone (no token), or scrapers holding ``token``."""

    where = "metrics"

    # None: open, as a Prometheus endpoint on a private network usually is. Set it when the
    # HTTP port is reachable by others (round and device counts say a lot about a fleet).
    token: Secret | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, token: Secret | None) -> Secret | None:
        return _long_enough("metrics.token", token)


# The store URL schemes PostgreSQL's own tools accept.
POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreConfig(SettingsModel):
    """Where the coordinator's state lives: SQLite (``url`` unset) or a ``postgresql://`` URL."""

    where = "store"

    # None: the SQLite file ``CoordinatorConfig.db_path``, the one-machine default. A URL
    # may hold a password, so it is a Secret (``***`` in describe, logs and errors).
    url: Secret | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: Secret | None) -> Secret | None:
        if url is not None and urlsplit(url.reveal()).scheme not in POSTGRES_SCHEMES:
            raise ConfigError("store.url must be a postgresql:// URL (unset: SQLite)")
        return url


class ClusterConfig(SettingsModel):
    """Several ``serve`` processes on one PostgreSQL store share the fleet (``tasks.ownership``)."""

    where = "cluster"

    # None: the host's name and a digest of data_dir, stable across restarts (a restarted
    # instance takes its tasks back at once). Set it where hostnames change (containers).
    instance_id: SettingStr | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # How long a task stays with an instance that stopped renewing (renewed every third):
    # the failover time is about this plus one renewal period.
    lease_s: SettingFloat = Field(15.0, ge=3, le=600)
    # Off: the round's owner runs every SecAgg+ cohort of its round (one instance's
    # behaviour, unchanged). On: with other live instances, it hands cohorts to them
    # (``rounds.remote_cohorts``) and adds their sums from the store.
    spread_cohorts: SettingBool = False


class EvaluationConfig(SettingsModel):
    """The operator's held-out set that gates rollout (``rounds.rollout``)."""

    where = "evaluation"

    # None: no held-out set; candidates of tasks with rollout_gate auto are promoted ungated.
    # An .npz with x (one example per row) and y; read once at start, which needs LiteRT.
    data: SettingPath | None = None


class CoordinatorConfig(SettingsModel):
    """Everything ``fedrt coordinator serve`` needs; validated on construction."""

    data_dir: SettingPath = Path("fedrt-data")
    # None: ``<data_dir>/coordinator.sqlite3`` (see ``db_path``).
    db: SettingPath | None = None
    # None: a random token is generated on first start into ``<data_dir>/admin-token`` (0600).
    admin_token: Secret | None = None
    # After a rotation of the admin-token file the old token still works this long, so
    # scripts and operators can switch over (10 minutes; 0 ends it at once).
    admin_token_grace_s: SettingFloat = Field(600.0, ge=0, le=7 * 86400)
    # Half a second resolves per-stage deadlines (tens of seconds) finely at negligible cost.
    tick_interval_s: SettingFloat = Field(0.5, gt=0, le=60)
    http: HttpConfig = Field(default_factory=HttpConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Reconnect windows for devices the coordinator cannot use now (``selection.pace``).
    pace: PaceConfig = Field(default_factory=PaceConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, token: Secret | None) -> Secret | None:
        return _long_enough("admin_token", token)

    @model_validator(mode="after")
    def _one_store(self) -> CoordinatorConfig:
        if self.db is not None and self.store.url is not None:
            raise ConfigError("db (a SQLite file) and store.url (PostgreSQL) exclude each other")
        return self

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.data_dir / "coordinator.sqlite3"


# ---------------------------------------------------------------- loading


def _sections() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for name, info in CoordinatorConfig.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out[name] = kind
    return out


# Variables whose name follows the flag rather than the key (--tls-ca -> http.ca_file).
_ENV_ALIASES = {"FEDRT_HTTP_TLS_CA": "FEDRT_HTTP_CA_FILE"}


def _check_env_names(environ: Mapping[str, str]) -> None:
    """``FEDRT_HTTP_PORTT`` is a typo, never ignored; other ``FEDRT_`` names are not ours."""
    sections = _sections()
    top = set(CoordinatorConfig.model_fields) - set(sections)
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key == CONFIG_VARIABLE or key in _ENV_ALIASES:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        section, _, rest = name.partition("_")
        if name not in top and section in sections and rest not in sections[section].model_fields:
            raise ConfigError(f"unknown environment variable {key}")
        # Other FEDRT_ variables belong to other fedrt parts (sdk, bench, logs): not ours.


class _Environment(EnvSettingsSource):
    """The ``FEDRT_*`` layer, from the mapping ``load_config`` was given."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        out: dict[str, str | None] = {}
        for key, value in self._given.items():
            if key.startswith(ENV_PREFIX):
                out[_ENV_ALIASES.get(key, key).lower()] = value
        return out


# The layers of the load under way (settings_customise_sources takes no arguments).
_LAYERS: ContextVar[tuple[Mapping[str, str], Path | None]] = ContextVar("config_layers")


class _Loaded(BaseSettings, CoordinatorConfig):
    """``CoordinatorConfig`` from its three layers; ``load_config`` hands out the plain model."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX.lower(),
        # FEDRT_HTTP_PUBLIC_URL: section "http", key "public_url" (split once).
        env_nested_delimiter="_",
        env_nested_max_split=1,
        case_sensitive=False,
        validate_default=False,
    )
    unknown_key: ClassVar[str] = "unknown config key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ, path = _LAYERS.get()
        # First wins: flags (the init arguments) < environment < file.
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _Environment(settings_cls, environ),
        ]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


@contextmanager
def _layers(environ: Mapping[str, str], path: Path | None) -> Iterator[None]:
    token = _LAYERS.set((environ, path))
    try:
        yield
    finally:
        _LAYERS.reset(token)


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
    store: str | None = None,
    data_dir: str | None = None,
    instance_id: str | None = None,
    pace_min_delay: float | None = None,
    pace_spread: float | None = None,
    pace_rate: float | None = None,
    eval_data: str | None = None,
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
    if store is not None:
        out["store"] = {"url": store}
    if data_dir is not None:
        out["data_dir"] = data_dir
    if instance_id is not None:
        out["cluster"] = {"instance_id": instance_id}
    if eval_data is not None:
        out["evaluation"] = {"data": eval_data}
    return out


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
    if path is None and env.get(CONFIG_VARIABLE):
        path = Path(env[CONFIG_VARIABLE])
    if path is not None and not Path(path).is_file():
        # pydantic-settings skips a missing file; a named one must be there.
        if not Path(path).exists():
            raise ConfigError(f"config file not found: {path}")
        raise ConfigError(f"cannot read config file {path}: not a regular file")
    _check_env_names(env)
    try:
        with _layers(env, None if path is None else Path(path)):
            loaded = _Loaded(**(cli or {}))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values = {name: getattr(loaded, name) for name in CoordinatorConfig.model_fields}
    return CoordinatorConfig.model_construct(loaded.model_fields_set, **values)


def describe(config: CoordinatorConfig) -> dict[str, Any]:
    """A JSON-able view for logs and the API: secrets shown as ``***``."""
    return config.model_dump(mode="json")


__all__ = [
    "POSTGRES_SCHEMES",
    "TLS_SELF_SIGNED",
    "WILDCARD_HOSTS",
    "BrokerConfig",
    "CoordinatorConfig",
    "EvaluationConfig",
    "HttpConfig",
    "LimitsConfig",
    "MetricsConfig",
    "PaceConfig",
    "Secret",
    "StoreConfig",
    "cli_layer",
    "describe",
    "load_config",
    "parse_host_port",
]
