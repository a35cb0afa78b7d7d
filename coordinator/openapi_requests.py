"""The OpenAPI document's request schemas: each states what its handler validates.

TaskSpec bounds come from ``tasks.SPEC_BOUNDS`` (the table ``TaskSpec`` checks); rules that
no schema keyword can state are in the TaskSpec description, each answered 400.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from fedrt.coordinator.dp_config import DpConfig, DpMode
from fedrt.coordinator.enrollment import DEFAULT_TOKEN_TTL_S, MAX_TOKEN_TTL_S
from fedrt.coordinator.http_tasks import ROUND_NO_MAX
from fedrt.coordinator.tasks import (
    PLAIN_ONLY_STRATEGIES,
    SECAGG_STRATEGIES,
    SPEC_BOUNDS,
    STRATEGIES,
    Bound,
    TaskSpec,
)

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
        "additionalProperties": False,
    }


def nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


STR, NUM, INT, BOOL = (
    {"type": "string"},
    {"type": "number"},
    {"type": "integer"},
    {"type": "boolean"},
)
SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
ROUND_NO = {"type": "integer", "minimum": 0, "maximum": ROUND_NO_MAX}
# What dashboard.py serves under /static/ (any other name: 404).
DASHBOARD_ASSETS = {
    "type": "string",
    "enum": ["api.js", "charts.js", "dashboard.css", "dashboard.js", "figures.js", "versions.js"],
}
B64 = {"type": "string", "contentEncoding": "base64"}
FREE = {"type": "object"}
# protocol.topics.check_id: an id is a topic level and an MQTT username.
TASK_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
# Raw Ed25519: 32-byte keys and 64-byte signatures, padded base64.
ED25519_KEY = {**B64, "pattern": "^[A-Za-z0-9+/]{43}=$"}
ED25519_SIG = {**B64, "pattern": "^[A-Za-z0-9+/]{86}==$"}
LABELS = {
    "type": "object",
    "maxProperties": 16,
    "propertyNames": {"minLength": 1, "maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 256},
}
_DP_ON = [m.value for m in DpMode if m is not DpMode.NONE]


def _bounded(kind: Schema, bound: Bound) -> Schema:
    out = {**kind, ("exclusiveMinimum" if bound.open_lo else "minimum"): bound.lo}
    if bound.hi is not None:
        out["exclusiveMaximum" if bound.open_hi else "maximum"] = bound.hi
    return out


def _when(condition: Schema, then: Schema) -> Schema:
    return {"if": condition, "then": then}


def _mode(modes: list[str]) -> Schema:
    return {"properties": {"mode": {"enum": modes}}}


def _task_spec_schema() -> Schema:
    props: dict[str, Schema] = {}
    for f in fields(TaskSpec):
        if f.name == "dp":
            props["dp"] = {**ref("DpConfig"), "default": DpConfig().to_mapping()}
            continue
        kind = {"str": STR, "int": INT, "float": NUM, "bool": BOOL}[str(f.type)]
        if f.name in SPEC_BOUNDS:
            kind = _bounded(kind, SPEC_BOUNDS[f.name])
        entry = {**kind, "default": f.default if f.default is not MISSING else None}
        if f.name == "strategy":
            entry["enum"] = list(STRATEGIES)
        props[f.name] = entry

    def dp(schema: Schema) -> Schema:
        return {"properties": {"dp": schema}}

    dp_on = {"required": ["dp"], **dp({"required": ["mode"], **_mode(_DP_ON)})}
    adaptive_clip = {"required": ["clip"], "properties": {"clip": {"required": ["adaptive"]}}}
    needs_secagg = {"anyOf": [dp(_mode([DpMode.DISTRIBUTED.value])), dp(adaptive_clip)]}
    return {
        "type": "object",
        "description": "Rules no schema keyword states, each answered 400: min_reports <= "
        "goal_count; with DP on, dp.delta < 1 / max(goal_count, ceil(goal_count * "
        "over_selection)); dp.target_epsilon <= dp.budget_epsilon.",
        "properties": props,
        "additionalProperties": False,
        "allOf": [
            # Robust aggregators need each update, which SecAgg+ hides (secagg defaults on).
            _when(
                {
                    "required": ["strategy"],
                    "properties": {"strategy": {"enum": list(PLAIN_ONLY_STRATEGIES)}},
                },
                {"required": ["secagg"], "properties": {"secagg": {"const": False}}},
            ),
            # DP is calibrated for a mean; distributed noise and the adaptive clip's count
            # travel inside SecAgg+.
            _when(dp_on, {"properties": {"strategy": {"enum": list(SECAGG_STRATEGIES)}}}),
            _when({"allOf": [dp_on, needs_secagg]}, {"properties": {"secagg": {"const": True}}}),
        ],
    }


def _dp_schema() -> Schema:
    adaptive = obj(
        {},
        {
            "quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "lr": POSITIVE,
            "initial": POSITIVE,
        },
    )
    noise = ("noise_multiplier", "target_epsilon")
    schema = obj(
        {},
        {
            "mode": {"type": "string", "enum": [m.value for m in DpMode], "default": "none"},
            "noise_multiplier": POSITIVE,
            "target_epsilon": POSITIVE,
            "delta": {**POSITIVE, "exclusiveMaximum": 1, "default": DpConfig().delta},
            "budget_epsilon": POSITIVE,
            "clip": {"oneOf": [obj({"fixed": POSITIVE}), obj({"adaptive": adaptive})]},
            "distributed_noise": {"type": "string", "enum": ["discrete_gaussian", "skellam"]},
        },
    )
    # No noise, nothing to calibrate; with noise, exactly one way to calibrate it.
    schema["if"] = _mode([DpMode.NONE.value])
    schema["then"] = {"not": {"anyOf": [{"required": [k]} for k in (*noise, "budget_epsilon")]}}
    schema["else"] = {"oneOf": [{"required": [k]} for k in noise]}
    return schema


def request_schemas() -> dict[str, Schema]:
    """The components that request bodies refer to."""
    return {
        "TaskSpec": _task_spec_schema(),
        "DpConfig": _dp_schema(),
        "TaskCreate": {
            **obj(
                {"name": {"type": "string", "minLength": 1, "maxLength": 200}},
                {
                    "task_id": TASK_ID,
                    "model_sha256": SHA,
                    # A `fedrt export` directory on the coordinator's host.
                    "model_dir": {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"},
                    "spec": ref("TaskSpec"),
                },
            ),
            "oneOf": [{"required": ["model_sha256"]}, {"required": ["model_dir"]}],
        },
        "ModelUpload": obj(
            {
                "manifest": {"type": "string", "contentMediaType": "application/json"},
                "model": {"type": "string", "contentMediaType": "application/octet-stream"},
            }
        ),
        "EnrollRequest": obj(
            {
                "token": {"type": "string", "minLength": 8, "maxLength": 256},
                "public_key": ED25519_KEY,
                "proof": ED25519_SIG,
            },
            {"labels": LABELS},
        ),
        "TokenRequest": obj(
            {},
            {
                "ttl_s": {**POSITIVE, "maximum": MAX_TOKEN_TTL_S, "default": DEFAULT_TOKEN_TTL_S},
                "note": {"type": "string", "maxLength": 200},
            },
        ),
        "RollbackRequest": obj({}, {"to": SHA}),
        "PromoteRequest": obj({"sha256": SHA}),
    }


__all__ = [
    "B64", "BOOL", "DASHBOARD_ASSETS", "FREE", "INT", "NUM", "ROUND_NO", "SHA", "STR",
    "Schema", "nullable", "obj", "ref", "request_schemas",
]  # fmt: skip
