"""Check a real HTTP reply against the coordinator's OpenAPI document."""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator

from fedrt.coordinator.api.openapi import openapi_document


class NotDocumented(AssertionError):
    pass


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
    return re.compile(pattern + r"\Z")


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """(template, operation object) documenting ``method path`` (query string ignored)."""
    doc = openapi_document()
    path = path.split("?", 1)[0]
    matches = [t for t in doc["paths"] if _template_regex(t).match(path)]
    # A literal segment beats a parameter: prefer the template with the fewest parameters.
    matches.sort(key=lambda t: t.count("{"))
    for template in matches:
        op = doc["paths"][template].get(method.lower())
        if op is not None:
            return template, op
    raise NotDocumented(f"{method} {path} is not in the OpenAPI document")


def check_reply(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Assert the status is documented and a JSON body matches its schema."""
    template, op = find_operation(method, path)
    responses = op["responses"]
    if str(status) not in responses:
        raise NotDocumented(f"{method} {template} -> {status} is not documented")
    content = responses[str(status)].get("content")
    if not content:
        return
    media = content_type.split(";", 1)[0].strip()
    assert media in content, f"{method} {template} -> {status}: undocumented type {media}"
    if media != "application/json":
        return
    schema = {**content[media]["schema"], "components": openapi_document()["components"]}
    Draft202012Validator(schema).validate(json.loads(body))
