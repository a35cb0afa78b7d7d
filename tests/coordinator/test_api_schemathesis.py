"""The HTTP API is what /v1/openapi.json says: schemathesis against a real coordinator.

Every operation gets schema-valid and schema-violating requests (coverage, fuzzing and
stateful phases); each reply must be no 5xx, a documented status and content type, match
its schema, and accept valid / refuse invalid input. The CLI runs in a subprocess, seeded
and derandomized, against the service this test starts on a free loopback port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrt.coordinator.config import LimitsConfig, MetricsConfig, Secret
from tests.coordinator.exported import write_export
from tests.coordinator.harness import (
    ADMIN_TOKEN,
    ServiceThread,
    enroll_device,
    make_config,
    upload_model,
)

REPO = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("schemathesis_checks.py")
METRICS_TOKEN = "test-metrics-token-0123456789"
# Tasks the run finds, by the lifecycle actions that bring each to its state.
TASKS = {"task-created": (), "task-running": ("start",), "task-paused": ("start", "pause")}
# Generous allowances: the run is one client sending thousands of requests, not a flood.
LIMITS = LimitsConfig(
    device_rate_per_s=1e6, device_burst=10**6, enroll_rate_per_s=1e6, enroll_burst=10**6
)


def _seed(svc: ServiceThread, export: Path) -> dict[str, str]:
    """Things generated ids and bodies can name: a model, tasks in three states, an export
    directory on disk and two devices."""
    sha = upload_model(svc, seed=7)
    for task_id, actions in TASKS.items():
        task = {"name": task_id, "task_id": task_id, "model_sha256": sha}
        assert svc.request("POST", "/v1/tasks", body=task).status == 201
        for action in actions:
            assert svc.request("POST", f"/v1/tasks/{task_id}/{action}").status == 200
    write_export(export, seed=8)
    downloader = enroll_device(svc)  # downloads authenticate as this one
    spare = enroll_device(svc)  # revocations may take this one
    return {
        "sha": sha,
        "export": str(export),
        "user": downloader["mqtt_username"],
        "password": downloader["mqtt_password"],
        "device": spare["device_id"],
    }


def _config(port: int, ids: dict[str, str], max_examples: int) -> str:
    """The schemathesis project config (TOML) for one run."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    return f"""
base-url = {q(f"http://127.0.0.1:{port}")}
seed = 20260601
workers = 1
continue-on-failure = true
hooks = {q(str(CHECKS))}
warnings = false

[cache]
enabled = false

[generation]
max-examples = {max_examples}
deterministic = true
no-shrink = true
database = "none"

[checks]
enabled = true

[auth.openapi.admin]
bearer = {q(ADMIN_TOKEN)}

[auth.openapi.metrics]
bearer = {q(METRICS_TOKEN)}

[auth.openapi.device]
username = {q(ids["user"])}
password = {q(ids["password"])}

[dictionaries.tasks]
values = {q(list(TASKS))}

[dictionaries.models]
values = [{q(ids["sha"])}]

[dictionaries.exports]
values = [{q(ids["export"])}]

[parameters]
"path.task_id" = {{ dictionary = "tasks", probability = 0.5 }}
"path.sha256" = {{ dictionary = "models", probability = 0.5 }}
"body.model_sha256" = {{ dictionary = "models", probability = 0.5 }}
"body.sha256" = {{ dictionary = "models", probability = 0.5 }}
"body.model_dir" = {{ dictionary = "exports", probability = 0.5 }}

# Only the spare device is revoked: ids read from GET /v1/devices would take the one that
# downloads authenticate as.
[[operations]]
include-path = "/v1/devices/{{device_id}}/revoke"
parameters = {{ "path.device_id" = {q(ids["device"])} }}

# Valid data these two refuse for reasons the document gives in prose:
# schemathesis_checks.positive_data_accepted_or_explained judges them instead.
[[operations]]
include-path = "/v1/models"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/v1/tasks"
include-method = "POST"
checks.positive_data_acceptance.enabled = false
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServiceThread, dict[str, str]]]:
    config = make_config(
        tmp_path / "data", limits=LIMITS, metrics=MetricsConfig(token=Secret(METRICS_TOKEN))
    )
    with ServiceThread(config) as svc:
        yield svc, _seed(svc, tmp_path / "export")


def _run(svc: ServiceThread, ids: dict[str, str], tmp_path: Path, max_examples: int) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(svc.port, ids, max_examples))
    url = f"http://127.0.0.1:{svc.port}/v1/openapi.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    # cwd: the run's own caches and reports stay out of the repository.
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-20_000:] + proc.stderr[-4000:]


def test_api_matches_its_openapi_document(
    served: tuple[ServiceThread, dict[str, str]], tmp_path: Path
) -> None:
    svc, ids = served
    _run(svc, ids, tmp_path, max_examples=30)


@pytest.mark.slow
def test_api_matches_its_openapi_document_thoroughly(
    served: tuple[ServiceThread, dict[str, str]], tmp_path: Path
) -> None:
    svc, ids = served
    _run(svc, ids, tmp_path, max_examples=300)
