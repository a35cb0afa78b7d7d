"""A task spec from a JSON or TOML file with ``--set key=value`` overrides on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.ops.errors import OpsConfigError
from fedrt.ops.task_spec import apply_overrides, build_spec


def test_toml_and_json_files_give_the_same_spec(tmp_path: Path) -> None:
    toml = tmp_path / "spec.toml"
    toml.write_text('goal_count = 20\nstrategy = "fedavg"\n[dp]\nmode = "central"\n')
    js = tmp_path / "spec.json"
    js.write_text('{"goal_count": 20, "strategy": "fedavg", "dp": {"mode": "central"}}')
    assert build_spec(toml, []) == build_spec(js, []) == {
        "goal_count": 20, "strategy": "fedavg", "dp": {"mode": "central"},
    }  # fmt: skip
    assert build_spec(None, []) == {}


def test_overrides_parse_json_values_and_dotted_keys() -> None:
    base = {"goal_count": 20, "dp": {"mode": "central"}}
    out = apply_overrides(
        base,
        ["goal_count=5", "secagg=false", "strategy=median", "learning_rate=0.05",
         "dp.noise_multiplier=1.1", 'dp.clip={"fixed": 2.0}', "name=a=b"],
    )  # fmt: skip
    assert out == {
        "goal_count": 5, "secagg": False, "strategy": "median", "learning_rate": 0.05,
        "dp": {"mode": "central", "noise_multiplier": 1.1, "clip": {"fixed": 2.0}},
        "name": "a=b",
    }  # fmt: skip
    assert base == {"goal_count": 20, "dp": {"mode": "central"}}  # the input is not changed


@pytest.mark.parametrize(
    ("overrides", "match"),
    [(["goal_count"], "KEY=VALUE"), (["=1"], "KEY=VALUE"), (["a..b=1"], "KEY=VALUE"),
     (["goal_count=1", "goal_count.x=2"], "not a table")],
)  # fmt: skip
def test_malformed_overrides_are_usage_errors(overrides: list[str], match: str) -> None:
    with pytest.raises(OpsConfigError, match=match):
        apply_overrides({}, overrides)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [("s.yaml", "a: 1", ".json or .toml"), ("s.json", "{", "does not parse"),
     ("s.toml", "a = ", "does not parse"), ("s.json", "[1]", "object of spec fields")],
)  # fmt: skip
def test_unusable_spec_files_are_usage_errors(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(OpsConfigError, match=match):
        build_spec(path, [])
    with pytest.raises(OpsConfigError, match="cannot read"):
        build_spec(tmp_path / "missing.json", [])
