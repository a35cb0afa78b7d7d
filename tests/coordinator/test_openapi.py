"""The OpenAPI document is valid 3.1, documents every route, and documents nothing else;
its generated request schemas bound exactly what the models accept."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from fedrt.coordinator.api.app import build_app
from fedrt.coordinator.api.dashboard import _FILES
from fedrt.coordinator.api.openapi import openapi_document
from fedrt.coordinator.config import CoordinatorConfig, Secret
from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.service import CoordinatorService
from fedrt.coordinator.tasks import STRATEGIES, TaskSpec
from fedrt.protocol.topics import _ID


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    service = CoordinatorService(CoordinatorConfig(data_dir=tmp_path, admin_token=Secret("t" * 20)))
    try:
        app = build_app(service.api_context())
        out = set()
        for route in app.router.routes():
            if route.method == "HEAD":
                continue  # aiohttp adds HEAD beside every GET
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter") or ""
            out.add((route.method, path))
        return out
    finally:
        service.store.close()


def test_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    served = _routes(tmp_path)
    documented = {
        (method.upper(), path)
        for path, ops in openapi_document()["paths"].items()
        for method in ops
    }
    assert served == documented


def test_task_spec_schema_follows_the_model() -> None:
    props = openapi_document()["components"]["schemas"]["TaskSpec"]["properties"]
    assert props["goal_count"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100_000,
        "default": TaskSpec().goal_count,
    }
    assert props["server_lr"]["exclusiveMinimum"] == 0
    assert props["strategy"]["enum"] == list(STRATEGIES)
    assert set(props) == set(TaskSpec().to_json())
    assert props["dp"]["default"] == TaskSpec().to_json()["dp"]


def test_request_schemas_are_generated_and_allow_no_null() -> None:
    doc = openapi_document()
    for name in ("TaskSpec", "DpConfig", "TaskCreate", "EnrollRequest", "TokenRequest",
                 "RollbackRequest", "PromoteRequest"):  # fmt: skip
        schema = doc["components"]["schemas"][name]
        assert schema["additionalProperties"] is False, name
        assert "null" not in str(schema), name  # an unset field is a key left out


def _numeric_spec_fields() -> list[str]:
    props = openapi_document()["components"]["schemas"]["TaskSpec"]["properties"]
    return sorted(n for n, s in props.items() if s.get("type") in ("integer", "number"))


def _edges(schema: dict[str, float], integer: bool) -> tuple[list[float], list[float]]:
    """Values just inside and just outside the bounds the schema states."""
    step = 1 if integer else 1e-9
    inside, outside = [], []
    for key, inward in (("minimum", 0), ("exclusiveMinimum", step)):
        if key in schema:
            inside.append(schema[key] + inward)
            outside.append(schema[key] + inward - step)
    for key, inward in (("maximum", 0), ("exclusiveMaximum", step)):
        if key in schema:
            inside.append(schema[key] - inward)
            outside.append(schema[key] - inward + step)
    return inside, outside


def test_every_numeric_spec_field_is_bounded() -> None:
    props = openapi_document()["components"]["schemas"]["TaskSpec"]["properties"]
    for name in _numeric_spec_fields():
        assert {"minimum", "exclusiveMinimum"} & set(props[name]), name
    assert len(_numeric_spec_fields()) == 34


@pytest.mark.parametrize("name", _numeric_spec_fields())
def test_documented_bounds_are_the_validated_ones(name: str) -> None:
    schema = openapi_document()["components"]["schemas"]["TaskSpec"]["properties"][name]
    integer = schema["type"] == "integer"
    inside, outside = _edges(schema, integer)
    # min_reports <= goal_count: each edge of one is tested with room left by the other.
    base = {"min_reports": {"goal_count": 100_000}, "goal_count": {"min_reports": 1}}.get(name, {})
    validator = Draft202012Validator(schema)
    for value in inside:
        assert validator.is_valid(value)
        TaskSpec.from_json({**base, name: value})
    for value in outside:
        assert not validator.is_valid(value)
        with pytest.raises(BadRequestError, match=name):
            TaskSpec.from_json({**base, name: value})


def test_id_and_asset_patterns_are_the_served_ones() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["TaskCreate"]["properties"]["task_id"]["pattern"] == f"^{_ID.pattern}$"
    static = openapi_document()["paths"]["/static/{name}"]["get"]["parameters"][0]
    assert set(static["schema"]["enum"]) == set(_FILES)


def test_every_error_response_says_its_content_type() -> None:
    for path, ops in openapi_document()["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert "application/json" in response["content"], (method, path, status)
