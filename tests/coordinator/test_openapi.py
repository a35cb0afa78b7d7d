"""The OpenAPI document is valid 3.1, documents every route, and documents nothing else."""

from __future__ import annotations

from pathlib import Path

from openapi_spec_validator import validate

from fedrt.coordinator.config import CoordinatorConfig, Secret
from fedrt.coordinator.http_api import build_app
from fedrt.coordinator.openapi import openapi_document
from fedrt.coordinator.service import CoordinatorService
from fedrt.coordinator.tasks import TaskSpec


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    service = CoordinatorService(CoordinatorConfig(data_dir=tmp_path, admin_token=Secret("t" * 20)))
    try:
        app = build_app(service)
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


def test_task_spec_schema_follows_the_dataclass() -> None:
    props = openapi_document()["components"]["schemas"]["TaskSpec"]["properties"]
    assert props["goal_count"] == {"type": "integer", "default": TaskSpec().goal_count}
    assert set(props) == set(TaskSpec().to_json())
