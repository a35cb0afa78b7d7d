"""One request per place the API and its document disagreed (found by the schemathesis run),
each checked against the document by the harness and against what the schema promises."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from fedrt.coordinator.api.openapi import openapi_document
from tests.coordinator.exported import tflite_bytes
from tests.coordinator.harness import ServiceThread, make_config, upload_model


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    with ServiceThread(make_config(tmp_path_factory.mktemp("conformance"))) as running:
        yield running


@pytest.fixture(scope="module")
def sha(svc: ServiceThread) -> str:
    return upload_model(svc, seed=3)


def _valid(component: str, instance: Any) -> bool:
    doc = openapi_document()
    schema = {"$ref": f"#/components/schemas/{component}", "components": doc["components"]}
    return Draft202012Validator(schema).is_valid(instance)


def test_required_bodies_are_required(svc: ServiceThread) -> None:
    for path in ("/v1/enrollment-tokens", "/v1/tasks/nope/rollback"):
        no_body = svc.request("POST", path)
        assert no_body.status == 400
        assert "body is required" in no_body.json()["error"]["message"]
    assert svc.request("POST", "/v1/enrollment-tokens", body={}).status == 201


def test_unknown_and_null_fields_are_refused(svc: ServiceThread) -> None:
    assert not _valid("TokenRequest", {"ttl": 5})
    assert svc.request("POST", "/v1/enrollment-tokens", body={"ttl": 5}).status == 400
    assert not _valid("RollbackRequest", {"to": None})
    assert svc.request("POST", "/v1/tasks/nope/rollback", body={"to": None}).status == 400
    spec = {"dp": {"mode": "none", "noise_multiplier": None}}
    assert not _valid("TaskSpec", spec)
    body = {"name": "n", "model_sha256": "0" * 64, "spec": spec}
    assert svc.request("POST", "/v1/tasks", body=body).status == 400
    body = {"name": "n", "model_sha256": "0" * 64, "task_id": None}
    assert svc.request("POST", "/v1/tasks", body=body).status == 400


def test_documented_bounds_are_enforced_and_nothing_else(svc: ServiceThread, sha: str) -> None:
    assert not _valid("TokenRequest", {"ttl_s": 0})
    assert svc.request("POST", "/v1/enrollment-tokens", body={"ttl_s": 0}).status == 400
    huge = {"ttl_s": 10**400}  # beyond any float: refused, not a server error
    assert svc.request("POST", "/v1/enrollment-tokens", body=huge).status == 400
    # An integral JSON number is an integer, as JSON Schema says.
    spec = {"eval_every": 7.0, "goal_count": 20.0}
    assert _valid("TaskSpec", spec)
    created = svc.request(
        "POST", "/v1/tasks", body={"name": "n", "model_sha256": sha, "spec": spec}
    )
    assert created.status == 201
    assert created.json()["spec"]["eval_every"] == 7
    for query in ("after=-1", f"after={2**70}", "after=%2B5", "after=1_0", "limit=0"):
        assert svc.request("GET", f"/v1/audit?{query}").status == 400, query
    assert svc.request("GET", "/v1/audit?after=0&limit=5000").status == 200  # served as a page


def test_path_integers_and_model_dirs_are_client_errors(svc: ServiceThread, sha: str) -> None:
    task = svc.request("POST", "/v1/tasks", body={"name": "n", "model_sha256": sha}).json()
    for round_no in ("-1", "1000000000", "%C2%B2", "1.0"):
        path = f"/v1/tasks/{task['task_id']}/rounds/{round_no}"
        assert svc.request("GET", path).status == 400, round_no
    assert svc.request("GET", f"/v1/tasks/{task['task_id']}/rounds/0").status == 404
    for model_dir in ("", "a\x00b"):
        reply = svc.request("POST", "/v1/tasks", body={"name": "n", "model_dir": model_dir})
        assert reply.status == 400


def test_enrollment_fields_have_their_documented_shape(svc: ServiceThread) -> None:
    short_key = {"token": "t" * 20, "public_key": "AAAA", "proof": "A" * 86 + "=="}
    assert not _valid("EnrollRequest", short_key)
    assert svc.request("POST", "/v1/enroll", token=None, body=short_key).status == 400
    null_labels = {"token": "t" * 20, "public_key": "A" * 43 + "=", "proof": "A" * 86 + "=="}
    assert _valid("EnrollRequest", null_labels)
    null_labels["labels"] = None  # type: ignore[assignment]
    assert not _valid("EnrollRequest", null_labels)
    assert svc.request("POST", "/v1/enroll", token=None, body=null_labels).status == 400


def test_refusals_outside_the_handlers_are_json_errors(svc: ServiceThread) -> None:
    missing = svc.request("GET", "/static/nope.js", token=None)
    assert missing.status == 404
    assert missing.json()["error"]["type"] == "HTTPNotFound"
    wrong = svc.request("DELETE", "/v1/tasks", check=False)
    assert wrong.status == 405
    assert wrong.headers["Content-Type"].startswith("application/json")
    assert "GET" in wrong.headers["Allow"]
    body = b"--b\r\nnot a header line\r\n--b--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    broken = svc.request("POST", "/v1/models", raw=body, headers=headers)
    assert broken.status == 400
    assert broken.json()["error"]["type"] == "BadRequestError"


def test_a_range_past_the_end_is_a_documented_json_error(svc: ServiceThread, sha: str) -> None:
    reply = svc.request("GET", f"/v1/models/{sha}", headers={"Range": "bytes=999999-"})
    assert reply.status == 416
    assert reply.headers["Content-Range"] == f"bytes */{len(tflite_bytes(3))}"
    assert reply.json()["error"]["type"] == "HTTPRequestRangeNotSatisfiable"
