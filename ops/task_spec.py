"""A task spec for ``fedrt tasks create``: a JSON or TOML file, then ``--set key=value`` on top.

The coordinator validates the spec (``TaskSpec.from_json``); here it is only assembled, so
the client needs no coordinator code and every rule has one home.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedrt.ops.errors import OpsConfigError


def read_spec_file(path: Path) -> dict[str, Any]:
    """The spec object of a ``.json`` or ``.toml`` file (top-level keys; ``[dp]`` a table)."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise OpsConfigError(f"--spec {path}: give a .json or .toml file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OpsConfigError(f"cannot read --spec {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise OpsConfigError(f"--spec {path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise OpsConfigError(f"--spec {path} must hold an object of spec fields")
    return data


def _value(text: str) -> Any:
    # JSON where it parses (10, 0.5, false, {"fixed": 1.0}), else the text itself, so that
    # strategy=fedavg needs no quotes.
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(spec: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``spec`` with each ``key=value`` set; a dotted key (``dp.mode``) names a nested field."""
    out: dict[str, Any] = json.loads(json.dumps(spec))  # a deep copy: the caller's is kept
    for item in overrides:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise OpsConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. goal_count=20)")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise OpsConfigError(f"--set {item!r}: {part} is not a table")
        node[path[-1]] = _value(text.strip())
    return out


def build_spec(spec_file: Path | None, overrides: Iterable[str]) -> dict[str, Any]:
    """The file's spec (or an empty one: the coordinator's defaults) with the overrides."""
    base = read_spec_file(spec_file) if spec_file is not None else {}
    return apply_overrides(base, overrides)


__all__ = ["apply_overrides", "build_spec", "read_spec_file"]
