"""device.toml's one definition: every key read into its typed value, every config field held
to account, every bad value a typed error naming the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrt.sdk.device_config import DeviceConfig
from fedrt.sdk.device_file import NOT_IN_FILE, REQUIRED, DeviceFile, keys
from fedrt.sdk.device_state import ThermalStatus
from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.errors import InsecureUrl, SchemaMismatch, SdkConfigError
from fedrt.sdk.example_store import Retention
from fedrt.sdk.linux_state import LinuxDeviceState
from fedrt.sdk.scripted_state import ScriptedDeviceState

MLP = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"


def _names(section: str) -> set[str]:
    return {k.name for k in keys() if k.section == section}


def _file(tmp_path: Path, **tables: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "device": {"data_dir": str(tmp_path / "d"), "coordinator_url": "http://127.0.0.1:8"},
        "data": {"x_shape": [3]},
    }
    for name, table in tables.items():
        base[name] = base.get(name, {}) | table
    return base


def test_every_config_field_is_a_key_or_says_why_not() -> None:
    fields = {f.name for f in dataclasses.fields(DeviceConfig)}
    assert fields - _names("device") == set(NOT_IN_FILE)
    assert _names("device") - fields == {"enrollment_token", "state"}
    assert _names("policy") == {f.name for f in dataclasses.fields(EligibilityPolicy)}
    assert {f.name for f in dataclasses.fields(Retention)} <= _names("data")
    required = {(k.section, k.name) for k in keys() if k.default is REQUIRED}
    assert required == {("device", "data_dir"), ("device", "coordinator_url")}


def test_every_key_reaches_its_typed_value(tmp_path: Path) -> None:
    data = _file(
        tmp_path,
        device={"task_id": "t-1", "enrollment_token": "tok", "ca_file": "/etc/ca.pem",
                "mqtt_host": "broker", "mqtt_port": 8883, "mqtt_tls": True, "mqtt_protocol": 4,
                "state": "always", "poll_s": 2, "num_threads": 2, "labels": {"site": "barn"}},
        data={"x_shape": [6], "x_dtype": "int32", "y_shape": [2], "y_dtype": "float32",
              "import_npz": "a.npz", "max_examples": 50, "max_age_s": 3600},
        policy={"always": True, "min_battery": 50, "require_charging": False,
                "require_unmetered": False,
                "require_idle": False, "max_thermal": "moderate", "max_load_per_cpu": 0.8,
                "min_input_idle_s": 60, "training_threads": 2, "allowed_hours": [22, 6],
                "utc_offset_s": 3600, "max_snapshot_age_s": 30},
    )  # fmt: skip
    # Every key of the definition is in this file: a new key must be added here too.
    for section in ("device", "data", "policy"):
        assert set(data[section]) == _names(section) - {"manifest"}, section
    file = DeviceFile.parse(data)
    c = file.config
    assert (c.task_id, c.ca_file, c.mqtt_host, c.mqtt_port) == (
        "t-1",
        Path("/etc/ca.pem"),
        "broker",
        8883,
    )
    assert (c.mqtt_tls, c.mqtt_protocol, c.poll_s, c.num_threads) == (True, 4, 2.0, 2)
    assert c.labels == {"site": "barn"}
    assert (file.state, file.enrollment_token, file.import_npz) == ("always", "tok", Path("a.npz"))
    assert isinstance(file.device_state(), ScriptedDeviceState)
    assert file.schema.describe() == "x int32[6], y float32[2]"
    assert file.retention == Retention(max_examples=50, max_age_s=3600.0)
    assert c.policy == EligibilityPolicy(
        always=True, min_battery=50.0, require_charging=False, require_unmetered=False,
        require_idle=False,
        max_thermal=ThermalStatus.MODERATE, max_load_per_cpu=0.8, min_input_idle_s=60.0,
        training_threads=2, allowed_hours=(22, 6), utc_offset_s=3600, max_snapshot_age_s=30.0,
    )  # fmt: skip


def test_defaults_are_the_dataclasses_defaults(tmp_path: Path) -> None:
    file = DeviceFile.parse(_file(tmp_path))
    assert file.config == DeviceConfig(
        data_dir=tmp_path / "d", coordinator_url="http://127.0.0.1:8"
    )
    assert file.retention == Retention()
    assert file.schema.describe() == "x float32[3], y int32[]"
    assert isinstance(file.device_state(), LinuxDeviceState)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("device", "poll_s", "fast", "poll_s must be a number"),
        ("device", "poll_s", 0, "poll_s must be > 0"),
        ("device", "mqtt_port", 0, "mqtt_port must be a port"),
        ("device", "mqtt_protocol", 3, "mqtt_protocol must be one of 4, 5"),
        ("device", "mqtt_tls", "yes", "mqtt_tls must be true or false"),
        ("device", "state", "android", "state must be one of linux, always"),
        ("device", "num_threads", True, "num_threads must be an integer"),
        ("device", "labels", {"n": 1}, "labels must be a table of strings"),
        ("device", "data_dir", "", "data_dir must be a non-empty string"),
        ("data", "x_shape", [0], "x_shape must be a list of positive integers"),
        ("data", "x_shape", "6", "x_shape must be a list of integers"),
        ("data", "y_dtype", "string", "y_dtype must be one of"),
        ("data", "max_examples", 0, "max_examples must be >= 1"),
        ("policy", "max_thermal", "hot", "max_thermal must be one of none, light"),
        ("policy", "allowed_hours", [1], r"allowed_hours must be \[start_hour, end_hour\]"),
        ("policy", "allowed_hours", [3, 3], "allowed_hours must be two distinct hours"),
        ("policy", "min_battery", 120, r"min_battery must be in \[0, 100\]"),
        ("policy", "require_idle", 1, "require_idle must be true or false"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_key(
    tmp_path: Path, section: str, key: str, value: Any, message: str
) -> None:
    with pytest.raises(SdkConfigError, match=message) as info:
        DeviceFile.parse(_file(tmp_path, **{section: {key: value}}), "pi.toml")
    assert str(info.value).startswith("pi.toml: ")


def test_tables_and_schema_sources(tmp_path: Path) -> None:
    with pytest.raises(SdkConfigError, match="unknown table"):
        DeviceFile.parse(_file(tmp_path) | {"sensor": {}})
    with pytest.raises(SdkConfigError, match=r"\[policy\] must be a table"):
        DeviceFile.parse(_file(tmp_path) | {"policy": 3})
    with pytest.raises(SdkConfigError, match="drop x_shape"):
        DeviceFile.parse(_file(tmp_path, data={"manifest": str(MLP)}))
    both = _file(tmp_path)
    both["data"] = {"manifest": str(MLP / "manifest.json")}
    assert DeviceFile.parse(both).schema.describe() == "x float32[12], y int32[]"
    with pytest.raises(InsecureUrl):  # the class survives the file name being added
        DeviceFile.parse(_file(tmp_path, device={"coordinator_url": "http://192.0.2.1"}))


def test_a_store_of_another_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with DeviceFile.parse(_file(tmp_path)).open_store() as store:
        store.append(np.zeros(3, np.float32), 1)
    tokens = DeviceFile.parse(_file(tmp_path, data={"x_dtype": "int32"}))
    with pytest.raises(SchemaMismatch, match="fix \\[data\\], or move the file away"):
        tokens.open_store()
