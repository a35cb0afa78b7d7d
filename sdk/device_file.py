"""device.toml, the file ``fedrt device run`` reads: every key's definition, and the loader on them.

``keys()`` is the one list of what the file may hold: the loader accepts exactly these keys and
reads each with its reader, and ``fedrt.sdk.config_reference`` renders the same list as the
table in docs/guide-raspberry-pi.md (a test keeps the two equal). ``[device]`` defaults are
``DeviceConfig``'s field defaults, ``[data]``'s come from ``ExampleSchema`` and ``Retention``,
and ``[policy]`` is ``EligibilityPolicy``'s fields, so none of them is written down twice.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrt.sdk.device_config import DeviceConfig
from fedrt.sdk.device_state import DeviceState, ThermalStatus
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.errors import SchemaMismatch, SdkConfigError
from fedrt.sdk.example_schema import STORABLE_DTYPES, ExampleSchema
from fedrt.sdk.example_store import ExampleStore, Retention

__all__ = ["NOT_IN_FILE", "REQUIRED", "SECTIONS", "STATES", "DeviceFile", "Key", "keys"]

SECTIONS = ("device", "data", "policy")
STATES = ("linux", "always")
EXAMPLES_FILE = "examples.sqlite3"
# DeviceConfig fields a device.toml does not set, and why (a test holds every field to account).
NOT_IN_FILE = {
    "policy": "the [policy] table",
    "scheduler": "SchedulerConfig: an app's choice, defaults suit a device process",
    "participant": "protocol timings: the simulator's, a device keeps the defaults",
}

Reader = Callable[[Any, str], Any]


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    """One key of one table: its type as the reference names it, default, meaning, reader."""

    section: str
    name: str
    kind: str
    default: Any  # REQUIRED, None (not set), or the value an absent key has
    doc: str
    read: Reader


# ---------------------------------------------------------------- readers (TOML value -> ours)
def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SdkConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _path(value: Any, where: str) -> Path:
    return Path(_text(value, where))


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SdkConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SdkConfigError(f"{where} must be an integer, got {value!r}")
    return value


def _count(value: Any, where: str) -> int:
    if _int(value, where) < 1:
        raise SdkConfigError(f"{where} must be >= 1, got {value!r}")
    return int(value)


def _port(value: Any, where: str) -> int:
    if not 1 <= _int(value, where) <= 65535:
        raise SdkConfigError(f"{where} must be a port (1-65535), got {value!r}")
    return int(value)


def _number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SdkConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise SdkConfigError(f"{where} must be a list of integers, got {value!r}")
    return tuple(value)


def _one_of(*options: Any) -> Reader:
    def read(value: Any, where: str) -> Any:
        if value not in options or isinstance(value, bool):
            raise SdkConfigError(f"{where} must be one of {', '.join(map(str, options))}")
        return value

    return read


def _labels(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SdkConfigError(f'{where} must be a table of strings, e.g. {{ site = "barn" }}')
    return {str(k): v for k, v in value.items()}


def _thermal(value: Any, where: str) -> ThermalStatus:
    names = [t.name.lower() for t in ThermalStatus if t is not ThermalStatus.UNKNOWN]
    if value not in names:
        raise SdkConfigError(f"{where} must be one of {', '.join(names)}, got {value!r}")
    return ThermalStatus[str(value).upper()]


def _hours(value: Any, where: str) -> tuple[int, int]:
    hours = _ints(value, where)
    if len(hours) != 2:
        raise SdkConfigError(f"{where} must be [start_hour, end_hour], got {value!r}")
    return hours[0], hours[1]


# ---------------------------------------------------------------- the keys
def _defaults(cls: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = REQUIRED
    return out


def _device_keys() -> list[Key]:
    dc = _defaults(DeviceConfig)
    rows: list[tuple[str, str, Any, str, Reader]] = [
        ("data_dir", "path", dc["data_dir"], "Where the device keeps its identity key, "
         "credentials, outbox, model cache and example store (docs/guide-app.md, Storage).",
         _path),
        ("coordinator_url", "string", dc["coordinator_url"], "The coordinator's URL: https, or "
         "plain http to a loopback address only.", _text),
        ("task_id", "string", dc["task_id"], "The task to follow; unset: the first task the "
         "coordinator announces.", _text),
        ("enrollment_token", "string", None, "One-time token for the first start (or "
         "FEDRT_ENROLLMENT_TOKEN); not needed once credentials.json exists.", _text),
        ("ca_file", "path", dc["ca_file"], "PEM CA that signs the coordinator's HTTPS (and the "
         "broker's mqtts) certificate; unset: the system trust store.", _path),
        ("mqtt_host", "string", dc["mqtt_host"], "Broker host instead of the one enrollment "
         "returned (NAT, a TLS proxy).", _text),
        ("mqtt_port", "integer", dc["mqtt_port"], "Broker port instead of the enrolled one.",
         _port),
        ("mqtt_tls", "bool", dc["mqtt_tls"], "Force mqtts on or off; unset: as enrollment "
         "reported.", _flag),
        ("mqtt_protocol", "4 or 5", dc["mqtt_protocol"], "MQTT 5, or 4 (3.1.1) for a broker "
         "that speaks only that (the embedded amqtt broker).", _one_of(4, 5)),
        ("state", "linux or always", "linux", "Where eligibility comes from: this machine's "
         "power, network, load and temperature, or a scripted always-eligible state (bench rigs, "
         "tests; a server wants [policy] always = true and its real state in the status).",
         _one_of(*STATES)),
        ("poll_s", "number", dc["poll_s"], "Seconds between eligibility looks while idle.",
         _number),
        ("num_threads", "integer", dc["num_threads"], "LiteRT threads for training.", _count),
        ("labels", "table of strings", dc["labels"], "Labels sent at enrollment, for the "
         "operator's cohorts, e.g. { site = \"greenhouse\" }.", _labels),
    ]  # fmt: skip
    return [Key(section="device", name=n, kind=k, default=d, doc=doc, read=r)
            for n, k, d, doc, r in rows]  # fmt: skip


def _data_keys() -> list[Key]:
    sc, rt = _defaults(ExampleSchema), _defaults(Retention)
    dtypes = "dtype name"
    rows: list[tuple[str, str, Any, str, Reader]] = [
        ("manifest", "path", None, "The model's manifest.json (or its `fedrt export` folder): x "
         "and y dtypes and shapes come from its train signature. Give it, or x_shape.", _path),
        ("x_shape", "list of integers", None, "One example's x shape, without the batch axis "
         "(e.g. [20] for 20 tokens), when there is no manifest.", _ints),
        ("x_dtype", dtypes, sc["x_dtype"], "x's dtype (int32 for token ids), with x_shape.",
         _one_of(*STORABLE_DTYPES)),
        ("y_shape", "list of integers", list(sc["y_shape"]), "One example's y shape: [] for "
         "one class label, the output's shape for mse or binary_ce.", _ints),
        ("y_dtype", dtypes, sc["y_dtype"], "y's dtype: int32 labels (sparse_ce), float32 "
         "targets (mse, binary_ce).", _one_of(*STORABLE_DTYPES)),
        ("import_npz", "path", None, "An .npz with arrays x and y, appended when the device "
         "starts, once per content (fedrt device add-examples: any time).", _path),
        ("max_examples", "integer", rt["max_examples"], "Keep at most this many examples "
         "(the oldest go first).", _count),
        ("max_age_s", "number", rt["max_age_s"], "Drop examples older than this many "
         "seconds; unset: kept until max_examples pushes them out.", _number),
    ]  # fmt: skip
    return [Key(section="data", name=n, kind=k, default=d, doc=doc, read=r)
            for n, k, d, doc, r in rows]  # fmt: skip


# What each EligibilityPolicy field means in a device.toml; its type picks the reader.
_POLICY_DOCS = {
    "always": "Servers (cross-silo): eligible whatever power, network, load and temperature "
    "say; only allowed_hours still applies. The other keys are then ignored.",
    "min_battery": "Battery percent needed to start and to go on (no battery: ignored).",
    "require_charging": "Train only on external power.",
    "require_unmetered": "Train only on an unmetered network (unknown counts as metered).",
    "require_idle": "Train only while idle: load, input idleness, screen.",
    "max_thermal": "Hottest thermal level allowed (none, light, moderate, severe, ...).",
    "max_load_per_cpu": "Highest 1-minute load average per CPU that counts as idle.",
    "min_input_idle_s": "Seconds since the last user input, where the state provider knows.",
    "training_threads": "Threads of the device's own training, left out of the load.",
    "allowed_hours": "Local hours [start, end) training may run, e.g. [22, 6] for nights; "
    "unset: any hour.",
    "utc_offset_s": "Seconds east of UTC for allowed_hours (3600 for CET).",
    "max_snapshot_age_s": "A device-state reading older than this says nothing about now.",
}
_POLICY_TYPES: dict[str, tuple[str, Reader]] = {
    "float": ("number", _number),
    "bool": ("bool", _flag),
    "int": ("integer", _int),
    "ThermalStatus": ("thermal level", _thermal),
    "tuple[int, int] | None": ("[start, end] hours", _hours),
}


def _policy_keys() -> list[Key]:
    out = []
    for f in dataclasses.fields(EligibilityPolicy):
        kind = _POLICY_TYPES.get(str(f.type))
        if kind is None or f.name not in _POLICY_DOCS:
            raise SdkConfigError(f"EligibilityPolicy.{f.name} ({f.type}) has no device.toml "
                                 "reader or description in fedrt.sdk.device_file")  # fmt: skip
        out.append(Key(section="policy", name=f.name, kind=kind[0], default=f.default,
                       doc=_POLICY_DOCS[f.name], read=kind[1]))  # fmt: skip
    return out


@functools.cache
def keys() -> tuple[Key, ...]:
    """Every key a device.toml may hold, table by table."""
    return (*_device_keys(), *_data_keys(), *_policy_keys())


def show_default(value: Any) -> str:
    """A default as the reference prints it (TOML spelling)."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{}"
    return str(list(value) if isinstance(value, tuple) else value)


# ---------------------------------------------------------------- the loader
def _tables(data: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Each table's given keys, read and checked; unknown tables and keys refused."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise SdkConfigError(f"{source}: unknown table(s) {', '.join(unknown)}; "
                             f"a device.toml has {', '.join(SECTIONS)}")  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise SdkConfigError(f"{source}: [{section}] must be a table")
        known = {k.name: k for k in keys() if k.section == section}
        extra = sorted(set(table) - set(known))
        if extra:
            raise SdkConfigError(f"{source}: unknown [{section}] key(s): {', '.join(extra)}")
        out[section] = {n: known[n].read(v, f"{source}: [{section}] {n}") for n, v in table.items()}
        for key in known.values():
            if key.default is REQUIRED and key.name not in table:
                raise SdkConfigError(f"{source}: [{section}] {key.name} is required")
    return out


def _schema(data: dict[str, Any], source: str) -> ExampleSchema:
    given = {k: data[k] for k in ("x_shape", "x_dtype", "y_shape", "y_dtype") if k in data}
    if "manifest" in data:
        if given:
            raise SdkConfigError(f"{source}: [data] manifest already says the dtypes and shapes; "
                                 f"drop {', '.join(sorted(given))}")  # fmt: skip
        return ExampleSchema.from_manifest_file(data["manifest"])
    if "x_shape" not in given:
        raise SdkConfigError(f"{source}: [data] needs manifest = PATH (the model's manifest.json) "
                             "or x_shape = [...] (and x_dtype, y_shape, y_dtype)")  # fmt: skip
    return ExampleSchema(**given)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFile:
    """A device.toml, read and validated: the ``DeviceConfig`` and what the CLI adds to it."""

    config: DeviceConfig
    state: str = "linux"
    enrollment_token: str | None = None
    schema: ExampleSchema
    retention: Retention = dataclasses.field(default_factory=Retention)
    import_npz: Path | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any], source: str = "device.toml") -> DeviceFile:
        tables = _tables(data, source)
        device, d = tables["device"], tables["data"]
        fields = {f.name for f in dataclasses.fields(DeviceConfig)}
        try:
            config = DeviceConfig(
                **{k: v for k, v in device.items() if k in fields},
                policy=EligibilityPolicy(**tables["policy"]),
            )
            retention = Retention(**{k: d[k] for k in ("max_examples", "max_age_s") if k in d})
            schema = _schema(d, source)
        except SdkConfigError as exc:  # the same class (InsecureUrl stays one), the file named
            text = str(exc)
            raise type(exc)(text if text.startswith(source) else f"{source}: {text}") from None
        return cls(config=config, state=device.get("state", "linux"),
                   enrollment_token=device.get("enrollment_token"), schema=schema,
                   retention=retention, import_npz=d.get("import_npz"))  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> DeviceFile:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SdkConfigError(f"cannot read {path}: {exc}") from None
        return cls.parse(data, str(path))

    @property
    def store_path(self) -> Path:
        return self.config.data_dir / EXAMPLES_FILE

    def open_store(self) -> ExampleStore:
        """The device's example store (created, with ``data_dir``, on first use)."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self.schema.open_store(self.store_path, retention=self.retention)
        except SchemaMismatch:
            raise SchemaMismatch(
                f"{self.store_path} holds examples of another dtype or shape than [data] says "
                f"({self.schema.describe()}): fix [data], or move the file away to start afresh"
            ) from None

    def device_state(self) -> DeviceState:
        from fedrt.sdk.linux_state import LinuxDeviceState
        from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in

        if self.state == "always":
            return ScriptedDeviceState([(0.0, idle_plugged_in())])
        return LinuxDeviceState()
