"""The operator commands against a real coordinator on loopback: tables, --json, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrt.coordinator.records import RoundRecord, RoundStatus, StageRecord
from fedrt.ops.cli import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from tests.coordinator.exported import write_export
from tests.coordinator.harness import ServiceThread, make_config
from tests.coordinator.https_harness import enroll_body
from tests.ops.cli_harness import env_for, fedrt, fedrt_process
from tests.support.process import free_port


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    with ServiceThread(make_config(tmp_path_factory.mktemp("ops") / "data")) as running:
        yield running


@pytest.fixture
def env(svc: ServiceThread) -> dict[str, str | None]:
    return env_for(svc)


def _export(tmp_path: Path, seed: int = 0) -> Path:
    write_export(tmp_path / f"export-{seed}", seed=seed)
    return tmp_path / f"export-{seed}"


def test_a_task_is_created_from_an_export_and_steered(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('goal_count = 4\nmin_reports = 3\nstrategy = "fedavg"\n')
    created = fedrt(
        "tasks", "create", "--name", "life", "--task-id", "life", "--model-dir",
        str(_export(tmp_path)), "--spec", str(spec), "--set", "eval_every=0", env=env,
    )  # fmt: skip
    assert created.code == 0, created.err
    assert ["status", "created"] in [line.split() for line in created.out.splitlines()]
    shown = json.loads(fedrt("tasks", "show", "life", "--json", env=env).out)
    assert (shown["spec"]["goal_count"], shown["spec"]["eval_every"]) == (4, 0)
    assert shown["status"] == "created"
    listing = fedrt("tasks", "list", env=env).out.splitlines()
    assert listing[0].split()[:3] == ["TASK", "NAME", "STATUS"]
    assert any(line.split()[:3] == ["life", "life", "created"] for line in listing[1:])
    refused = fedrt("tasks", "pause", "life", env=env)
    assert refused.code == EXIT_REFUSED
    assert "cannot pause a task that is created" in refused.err
    for action, status in [("start", "running"), ("pause", "paused"), ("resume", "running"),
                           ("cancel", "cancelled")]:  # fmt: skip
        moved = fedrt("tasks", action, "life", env=env)
        assert moved.code == 0, moved.err
        assert f"status {status}" in moved.out
    assert fedrt("tasks", "resume", "life", env=env).code == EXIT_REFUSED


def test_create_uploads_a_local_export_and_starts_it(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    ran = fedrt(
        "tasks", "create", "--name", "up", "--upload", str(_export(tmp_path, seed=3)),
        "--start", "--json", env=env,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    task = json.loads(ran.out)
    assert task["status"] == "running"
    models = json.loads(fedrt("models", "list", "--json", env=env).out)["models"]
    assert task["model_sha256"] in {m["sha256"] for m in models}
    assert fedrt("tasks", "cancel", task["task_id"], env=env).code == 0


def test_promote_rollback_and_rounds(
    svc: ServiceThread, env: dict[str, str | None], tmp_path: Path
) -> None:
    made = fedrt("tasks", "create", "--name", "m", "--task-id", "lineage", "--model-dir",
                 str(_export(tmp_path, seed=5)), "--json", env=env)  # fmt: skip
    base = json.loads(made.out)["model_sha256"]
    catalog, store = svc.service.catalog, svc.service.store
    v1 = svc.run(lambda: catalog.add_version(b"w1", {"kind": "weights"}, task_id="lineage",
                                             parent_sha256=base, round_no=1))  # fmt: skip
    assert fedrt("models", "promote", "lineage", v1.sha256, env=env).code == 0
    listed = fedrt("models", "list", "--task", "lineage", env=env).out
    assert any(line.startswith(v1.sha256) and "promoted" in line for line in listed.splitlines())
    back = json.loads(fedrt("models", "rollback", "lineage", "--json", env=env).out)
    assert back["model_sha256"] == base
    again = fedrt("models", "rollback", "lineage", env=env)
    assert again.code == EXIT_REFUSED
    assert "nothing to roll back" in again.err
    assert fedrt("rounds", "list", "lineage", env=env).out.strip() == "no rounds yet"
    rnd = RoundRecord(task_id="lineage", round_no=1, stage="check_in", status=RoundStatus.RUNNING,
                      model_sha256=base, started_at=1.0, deadline=100.0)  # fmt: skip
    svc.run(store.create_round, rnd)
    svc.run(store.append_stage, StageRecord(task_id="lineage", round_no=1, stage="training", at=2))
    rounds = json.loads(fedrt("rounds", "list", "lineage", "--json", env=env).out)["rounds"]
    assert [(r["round_no"], r["status"]) for r in rounds] == [(1, "running")]
    table = fedrt("rounds", "list", "lineage", env=env).out.splitlines()
    assert table[1].split()[:3] == ["1", "running", "training"]
    detail = fedrt("rounds", "show", "lineage", "1", env=env)
    assert "1970-01-01 00:00:02Z  training" in detail.out
    assert fedrt("rounds", "show", "lineage", "9", env=env).code == EXIT_NOT_FOUND


def test_tokens_devices_and_audit(svc: ServiceThread, env: dict[str, str | None]) -> None:
    issued = fedrt("tokens", "create", "--note", "pi fleet", "--ttl", "600", env=env)
    assert issued.code == 0, issued.err
    token = issued.out.strip()  # the token alone on stdout, for TOKEN=$(fedrt tokens create)
    assert "valid until" in issued.err
    grant = svc.request("POST", "/v1/enroll", token=None, body=enroll_body(token))
    assert grant.status == 201
    device_id = grant.json()["device_id"]
    devices = fedrt("devices", "list", env=env).out.splitlines()
    assert any(line.split()[:2] == [device_id, "active"] for line in devices)
    assert fedrt("devices", "revoke", device_id, env=env).code == 0
    after = json.loads(fedrt("devices", "list", "--json", env=env).out)["devices"]
    assert {d["device_id"]: d["revoked"] for d in after}[device_id] is True
    assert fedrt("devices", "revoke", "no-such-device", env=env).code == EXIT_NOT_FOUND
    entries = json.loads(fedrt("audit", "--json", "--limit", "1000", env=env).out)["entries"]
    actions = [e["action"] for e in entries]
    assert "device.revoke" in actions
    last = entries[-1]["seq"]
    assert fedrt("audit", "--after", str(last), env=env).out.strip() == "no entries"
    page = fedrt("audit", "--after", str(last - 2), "--limit", "1", env=env).out.splitlines()
    assert len(page) == 2
    assert page[1].split()[0] == str(last - 1)


def test_refusals_map_to_exit_codes_with_advice(
    svc: ServiceThread, env: dict[str, str | None], tmp_path: Path
) -> None:
    wrong = fedrt("tasks", "list", env={**env, "FEDRT_ADMIN_TOKEN": "x" * 27})
    assert wrong.code == EXIT_REFUSED
    assert "the admin token was refused" in wrong.err
    assert "check FEDRT_ADMIN_TOKEN" in wrong.err
    token_file = tmp_path / "token"
    token_file.write_text("y" * 27 + "\n")
    by_file = fedrt("devices", "list", "--token-file", str(token_file), env=env)
    assert by_file.code == EXIT_REFUSED
    assert f"check --token-file {token_file}" in by_file.err
    missing = fedrt("tasks", "show", "no-such-task", env=env)
    assert (missing.code, missing.out) == (EXIT_NOT_FOUND, "")
    assert "no task no-such-task" in missing.err
    assert fedrt("rounds", "list", "no-such-task", env=env).code == EXIT_NOT_FOUND
    assert fedrt("tasks", "show", "a/../b", env=env).code == EXIT_NOT_FOUND
    bad = fedrt("tasks", "create", "--name", "x", "--model-dir", str(_export(tmp_path)),
                "--set", "goal_count=-1", env=env)  # fmt: skip
    assert bad.code == EXIT_REFUSED
    assert "goal_count" in bad.err


def test_unreachable_and_misconfigured(env: dict[str, str | None], tmp_path: Path) -> None:
    dead = fedrt("tasks", "list", "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert dead.code == EXIT_UNREACHABLE
    assert "cannot reach the coordinator" in dead.err
    no_url = fedrt("tasks", "list", env={**env, "FEDRT_URL": None})
    assert no_url.code == EXIT_USAGE
    assert "set FEDRT_URL or pass --url" in no_url.err
    no_token = fedrt("tasks", "list", env={**env, "FEDRT_ADMIN_TOKEN": None})
    assert no_token.code == EXIT_USAGE
    assert "set FEDRT_ADMIN_TOKEN or pass --token-file" in no_token.err
    # The token would cross the network in clear: refused before any connection.
    remote = fedrt("tasks", "list", "--url", "http://192.0.2.1:8080", env=env)
    assert remote.code == EXIT_USAGE
    assert "--insecure-http" in remote.err
    spec = tmp_path / "spec.yaml"
    spec.write_text("goal_count: 3\n")
    for extra in (["--spec", str(spec)], ["--set", "goal_count"], ["--spec", str(tmp_path)]):
        ran = fedrt("tasks", "create", "--name", "x", "--model-sha256", "0" * 64, *extra, env=env)
        assert ran.code == EXIT_USAGE, (extra, ran.err)
    usage = fedrt("tasks", "create", "--name", "x", env=env)  # no model option
    assert usage.code == EXIT_USAGE
    assert "one of the arguments" in usage.err


def test_the_console_script_prints_json_and_exit_codes(env: dict[str, str | None]) -> None:
    listed = fedrt_process("tasks", "list", "--json", env=env)
    assert listed.code == 0, listed.err
    assert isinstance(json.loads(listed.out)["tasks"], list)
    missing = fedrt_process("tasks", "show", "nope", env=env)
    assert missing.code == EXIT_NOT_FOUND
    assert missing.err.strip() == "fedrt tasks show: no task nope (see fedrt tasks list)"
