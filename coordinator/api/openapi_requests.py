"""The OpenAPI document's request schemas, generated from the pydantic models that validate them.

TaskSpec, DpConfig and every JSON request body (``bodies``) come from
``models_json_schema``: JSON Schema 2020-12, which OpenAPI 3.1 takes as is. Rules that no
schema keyword can state are in the TaskSpec description, each answered 400. Also the
small schemas the hand-written rest of the document (``openapi``) shares.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)
from pydantic_core import core_schema

from fedrt.coordinator.api.bodies import REQUEST_BODIES, SHA256_PATTERN
from fedrt.coordinator.api.routes_tasks import ROUND_NO_MAX
from fedrt.coordinator.tasks.spec import TaskSpec

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
SHA = {"type": "string", "pattern": SHA256_PATTERN}
ROUND_NO = {"type": "integer", "minimum": 0, "maximum": ROUND_NO_MAX}
# What dashboard serves under /static/ (any other name: 404).
DASHBOARD_ASSETS = {
    "type": "string",
    "enum": [
        "api.js",
        "charts.js",
        "dashboard.css",
        "dashboard.js",
        "evaluation.js",
        "fedbuff.js",
        "figures.js",
        "versions.js",
    ],
}
B64 = {"type": "string", "contentEncoding": "base64"}
FREE = {"type": "object"}


class _OpenApiSchema(GenerateJsonSchema):
    """pydantic's JSON Schema as the document states it."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # the property name says it

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        # None is Python's "unset": in a JSON body the key is left out (null is refused).
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if "default" in out and out["default"] is None:
            del out["default"]  # unset, not null
        return out


def _generated() -> dict[str, Schema]:
    documented: list[type[BaseModel]] = [TaskSpec, *REQUEST_BODIES]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in documented]
    _, top = models_json_schema(
        models,
        ref_template="#/components/schemas/{model}",
        schema_generator=_OpenApiSchema,
    )
    schemas: dict[str, Schema] = top["$defs"]
    return schemas


def request_schemas() -> dict[str, Schema]:
    """The components that request bodies refer to."""
    return {
        **_generated(),
        "ModelUpload": obj(
            {
                "manifest": {"type": "string", "contentMediaType": "application/json"},
                "model": {"type": "string", "contentMediaType": "application/octet-stream"},
            }
        ),
    }


__all__ = [
    "B64", "BOOL", "DASHBOARD_ASSETS", "FREE", "INT", "NUM", "ROUND_NO", "SHA", "STR",
    "Schema", "nullable", "obj", "ref", "request_schemas",
]  # fmt: skip
