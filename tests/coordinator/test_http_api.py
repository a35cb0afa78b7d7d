"""The REST API on a real socket, with a real Mosquitto; every reply checked against OpenAPI."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.config import LimitsConfig
from fedrt.coordinator.records import MetricRecord, RoundRecord, RoundStatus, StageRecord
from fedrt.coordinator.security.signing import verify_model_signature
from tests.coordinator.exported import manifest_for, tflite_bytes, write_export
from tests.coordinator.harness import (
    ADMIN_TOKEN,
    ServiceThread,
    enroll_device,
    make_config,
    multipart,
)


@pytest.fixture
def svc(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[ServiceThread]:
    with ServiceThread(make_config(tmp_path / "data", mosquitto.url)) as running:
        yield running


def _upload(svc: ServiceThread, data: bytes, manifest: bytes) -> tuple[int, dict[str, object]]:
    body, ctype = multipart(
        [("manifest", manifest, "application/json"), ("model", data, "application/octet-stream")]
    )
    reply = svc.request("POST", "/v1/models", raw=body, headers={"Content-Type": ctype})
    return reply.status, reply.json()


def _model(svc: ServiceThread, seed: int = 0) -> str:
    data = tflite_bytes(seed)
    status, body = _upload(svc, data, manifest_for(data).to_json().encode())
    assert status == 201
    return str(body["sha256"])


def _enroll(svc: ServiceThread) -> tuple[str, str]:
    grant = enroll_device(svc, labels={"kind": "pi"}, note="pi")
    return grant["mqtt_username"], grant["mqtt_password"]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_public_routes_and_admin_auth(svc: ServiceThread) -> None:
    health = svc.request("GET", "/healthz", token=None).json()
    assert health["status"] == "ok"
    assert health["mqtt_connected"] is True
    text = svc.request("GET", "/metrics", token=None).body.decode()
    assert "# TYPE fedrt_mqtt_messages_total counter" in text
    assert 'fedrt_http_requests_total{route="/healthz",status="200"} 1' in text
    assert svc.request("GET", "/v1/tasks", token=None).status == 401
    wrong = svc.request("GET", "/v1/tasks", token="x" * 27)
    assert wrong.status == 401
    assert wrong.json()["error"]["type"] == "AuthError"
    info = svc.request("GET", "/v1/info").json()
    assert info["config"]["admin_token"] == "***"
    assert base64.b64decode(info["coordinator_public_key"]) == svc.service.signer.public_key_bytes()


def test_model_upload_is_validated_and_idempotent(svc: ServiceThread) -> None:
    data = tflite_bytes(1)
    manifest = manifest_for(data).to_json().encode()
    status, body = _upload(svc, data, manifest)
    assert status == 201
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    verify_model_signature(
        svc.service.signer.public_key_bytes(),
        str(body["sha256"]),
        body["manifest"],  # type: ignore[arg-type]
        base64.b64decode(str(body["signature"])),
    )
    assert _upload(svc, data, manifest)[0] == 200
    bad_cases = [
        (data + b"x", manifest),  # size and sha256 disagree with the manifest
        (b"\0" * len(data), manifest_for(b"\0" * len(data)).to_json().encode()),  # not TFLite
        (data, b"{}"),  # manifest missing fields
        (data, b"\xff\xfe garbage"),
    ]
    for model, man in bad_cases:
        status, body = _upload(svc, model, man)
        assert status == 400, body
        assert body["error"]["type"] == "BadArtifactError"  # type: ignore[index]
    swapped, ctype = multipart([("model", data, "x/y"), ("manifest", manifest, "x/y")])
    reply = svc.request("POST", "/v1/models", raw=swapped, headers={"Content-Type": ctype})
    assert reply.status == 400
    not_multipart = svc.request("POST", "/v1/models", body={"x": 1})
    assert not_multipart.status == 400
    assert len(svc.request("GET", "/v1/models").json()["models"]) == 1
    assert svc.service.store.list_models()[0].sha256 == hashlib.sha256(data).hexdigest()


def test_task_lifecycle(svc: ServiceThread, tmp_path: Path) -> None:
    sha = _model(svc)
    created = svc.request(
        "POST",
        "/v1/tasks",
        body={"name": "digits", "model_sha256": sha, "spec": {"goal_count": 5, "min_reports": 3}},
    )
    assert created.status == 201
    task = created.json()
    assert task["status"] == "created"
    assert task["spec"]["goal_count"] == 5
    tid = task["task_id"]
    write_export(tmp_path / "export", seed=7)
    from_dir = svc.request(
        "POST", "/v1/tasks", body={"name": "b", "model_dir": str(tmp_path / "export")}
    )
    assert from_dir.status == 201
    for action, expect in [("start", "running"), ("pause", "paused"), ("resume", "running")]:
        reply = svc.request("POST", f"/v1/tasks/{tid}/{action}")
        assert (reply.status, reply.json()["status"]) == (200, expect)
    assert svc.request("POST", f"/v1/tasks/{tid}/start").status == 409
    assert svc.request("POST", f"/v1/tasks/{tid}/cancel").json()["status"] == "cancelled"
    assert svc.request("POST", f"/v1/tasks/{tid}/resume").status == 409
    assert svc.request("POST", "/v1/tasks/nope/start").status == 404
    assert svc.request("GET", f"/v1/tasks/{tid}").json()["status"] == "cancelled"
    listed = svc.request("GET", "/v1/tasks").json()["tasks"]
    assert [t["name"] for t in listed] == ["digits", "b"]
    actions = [e["action"] for e in svc.request("GET", "/v1/audit?limit=50").json()["entries"]]
    assert actions.count("task.create") == 2
    assert actions[-1] == "task.cancel"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "model_sha256": "0" * 64},  # unknown model -> 404
        {"name": "x", "model_sha256": "nothex"},
        {"name": "x"},
        {"name": "x", "model_sha256": "0" * 64, "model_dir": "/tmp"},
        {"name": "x", "model_sha256": "0" * 64, "colour": "red"},
        {"name": "x", "model_dir": "/nonexistent"},
        {"name": "", "MODEL": 1},
    ],
)
def test_bad_task_requests_change_nothing(svc: ServiceThread, body: dict[str, object]) -> None:
    reply = svc.request("POST", "/v1/tasks", body=body)
    assert reply.status in (400, 404)
    assert svc.service.store.list_tasks() == []


@pytest.mark.parametrize(
    "spec",
    [
        {"goal_count": 0},
        {"goal_count": "10"},
        {"strategy": "median"},  # robust aggregation needs secagg off
        {"strategy": "fedsgd"},
        {"learning_rate": -1},
        {"min_reports": 50, "goal_count": 10},
        {"unknown_knob": 1},
        {"secagg": 1},
        {"dp": {"mode": "central"}},  # neither noise_multiplier nor target_epsilon
        {"dp": {"mode": "distributed", "noise_multiplier": 1.0}, "secagg": False},
        {"dp": {"mode": "central", "noise_multiplier": 1.0, "delta": 0.2}},
    ],
)
def test_bad_specs_are_400(svc: ServiceThread, spec: dict[str, object]) -> None:
    sha = _model(svc)
    reply = svc.request("POST", "/v1/tasks", body={"name": "x", "model_sha256": sha, "spec": spec})
    assert reply.status == 400
    assert reply.json()["error"]["type"] == "BadRequestError"
    if "dp" in spec:  # the message names the DP setting at fault
        assert reply.json()["error"]["message"].startswith("dp: ")
    assert svc.service.store.list_tasks() == []


def test_json_body_arriving_in_pieces_is_read_whole(svc: ServiceThread) -> None:
    import socket

    body = json.dumps({"note": "n" * 150, "ttl_s": 60}).encode()
    head = (
        f"POST /v1/enrollment-tokens HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        sock.sendall(head + body[:40])
        time.sleep(0.2)  # the handler has started reading and sees only part of the body
        sock.sendall(body[40:])
        reply = sock.recv(65536).split(b"\r\n", 1)[0]
    assert reply == b"HTTP/1.1 201 Created"


def test_malformed_bodies(svc: ServiceThread) -> None:
    assert svc.request("POST", "/v1/tasks", raw=b"{nope").status == 400
    assert svc.request("POST", "/v1/tasks", raw=b"[1, 2]").status == 400
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    assert svc.request("POST", "/v1/tasks", raw=big).status == 400
    assert svc.request("GET", "/v1/audit?after=x").status == 400
    deep = b"[" * 60_000 + b"]" * 60_000
    assert svc.request("POST", "/v1/tasks", raw=deep[:65_000]).status == 400
    assert svc.request("POST", "/v1/enrollment-tokens", raw=b"[" * 50_000).status == 400
    nested = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
    assert svc.request("POST", "/v1/enrollment-tokens", raw=nested).status == 400
    assert svc.service.store.list_tasks() == []


def test_enrollment_and_revocation_over_http(svc: ServiceThread) -> None:
    user, _ = _enroll(svc)
    devices = svc.request("GET", "/v1/devices").json()["devices"]
    assert [d["device_id"] for d in devices] == [user]
    assert devices[0]["labels"] == {"kind": "pi"}
    bad = svc.request(
        "POST", "/v1/enroll", token=None, body={"token": "t" * 20, "public_key": "%%", "proof": ""}
    )
    assert bad.status == 400
    unknown = svc.request(
        "POST",
        "/v1/enroll",
        token=None,
        body={"token": "t" * 20, "public_key": base64.b64encode(b"k" * 32).decode(), "proof": ""},
    )
    assert unknown.status in (400, 401)
    assert svc.request("POST", f"/v1/devices/{user}/revoke").json()["revoked"] is True
    assert svc.request("POST", f"/v1/devices/{user}/revoke").status == 409
    assert svc.request("POST", "/v1/devices/ghost/revoke").status == 404
    assert len(svc.service.store.list_devices()) == 1


def test_model_download_etag_range_and_device_auth(svc: ServiceThread) -> None:
    sha = _model(svc, seed=3)
    data = tflite_bytes(3)
    user, password = _enroll(svc)
    auth = _basic(user, password)
    path = f"/v1/models/{sha}"
    full = svc.request("GET", path, token=None, headers=auth)
    assert (full.status, full.body) == (200, data)
    etag = full.headers["ETag"]
    assert etag == f'"{sha}"'
    assert full.headers["Accept-Ranges"] == "bytes"
    assert (
        svc.request("GET", path, token=None, headers={**auth, "If-None-Match": etag}).status == 304
    )
    part = svc.request("GET", path, token=None, headers={**auth, "Range": "bytes=10-19"})
    assert (part.status, part.body) == (206, data[10:20])
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    resume = svc.request("GET", path, token=None, headers={**auth, "Range": "bytes=4000-"})
    assert (resume.status, resume.body) == (206, data[4000:])
    tail = svc.request("GET", path, token=None, headers={**auth, "Range": "bytes=-5"})
    assert tail.body == data[-5:]
    beyond = svc.request("GET", path, token=None, headers={**auth, "Range": "bytes=99999-"})
    assert beyond.status == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    stale = svc.request(
        "GET", path, token=None, headers={**auth, "Range": "bytes=0-1", "If-Range": '"old"'}
    )
    assert (stale.status, stale.body) == (200, data)
    meta = svc.request("GET", f"{path}/meta", token=None, headers=auth).json()
    assert meta["sha256"] == sha
    assert svc.request("GET", path, token=None).status == 401
    assert svc.request("GET", path, token=None, headers=_basic(user, "wrong")).status == 401
    assert svc.request("GET", path, token=None, headers={"Authorization": "Basic %%"}).status == 401
    assert svc.request("GET", "/v1/models/" + "0" * 64).status == 404
    assert svc.request("GET", "/v1/models/not-a-sha").status == 400
    svc.request("POST", f"/v1/devices/{user}/revoke")
    assert svc.request("GET", path, token=None, headers=auth).status == 401


def test_rollback_rounds_and_metrics(svc: ServiceThread) -> None:
    base = _model(svc)
    tid = svc.request("POST", "/v1/tasks", body={"name": "t", "model_sha256": base}).json()[
        "task_id"
    ]
    store, catalog = svc.service.store, svc.service.catalog
    v1 = catalog.add_version(
        b"w1", {"kind": "weights"}, task_id=tid, parent_sha256=base, round_no=1
    )
    promoted = svc.request("POST", f"/v1/tasks/{tid}/promote", body={"sha256": v1.sha256})
    assert promoted.json()["model_sha256"] == v1.sha256
    store.create_round(
        RoundRecord(
            task_id=tid, round_no=1, stage="check_in", status=RoundStatus.RUNNING,
            model_sha256=base, started_at=1.0, deadline=100.0,
        )
    )  # fmt: skip
    store.append_stage(StageRecord(task_id=tid, round_no=1, stage="training", at=2.0))
    store.update_round(tid, 1, checked_in=13, selected=13, reporting=9, dropped=1, bytes_in=4096)
    for rnd, acc in [(1, 0.5), (2, 0.7)]:
        store.add_metric(MetricRecord(task_id=tid, round_no=rnd, name="accuracy", value=acc, at=1))
    rounds = svc.request("GET", f"/v1/tasks/{tid}/rounds").json()["rounds"]
    assert [(r["round_no"], r["stage"], r["checked_in"]) for r in rounds] == [(1, "training", 13)]
    detail = svc.request("GET", f"/v1/tasks/{tid}/rounds/1").json()
    assert [s["stage"] for s in detail["stages"]] == ["training"]
    assert svc.request("GET", f"/v1/tasks/{tid}/rounds/9").status == 404
    assert svc.request("GET", f"/v1/tasks/{tid}/rounds/x").status == 400
    series = svc.request("GET", f"/v1/tasks/{tid}/metrics").json()["series"]
    assert [p["value"] for p in series["accuracy"]] == [0.5, 0.7]
    assert svc.request("GET", f"/v1/tasks/{tid}").json()["latest_round"]["reporting"] == 9
    back = svc.request("POST", f"/v1/tasks/{tid}/rollback", body={})
    assert back.json()["model_sha256"] == base
    assert svc.request("POST", f"/v1/tasks/{tid}/rollback", body={}).status == 409
    models = {m["sha256"]: m["status"] for m in svc.request("GET", "/v1/models").json()["models"]}
    assert models[v1.sha256] == "rolled_back"
    overview = svc.request("GET", "/v1/overview").json()
    assert overview["tasks"][0]["series"]["accuracy"][1]["value"] == 0.7


def test_dp_task_rounds_show_epsilon_and_noise(svc: ServiceThread) -> None:
    base = _model(svc)
    dp = {"mode": "central", "noise_multiplier": 1.1, "budget_epsilon": 8.0}
    reply = svc.request(
        "POST", "/v1/tasks", body={"name": "t", "model_sha256": base, "spec": {"dp": dp}}
    )
    assert reply.status == 201
    tid = reply.json()["task_id"]
    assert reply.json()["spec"]["dp"] == {**dp, "delta": 1e-5, "clip": {"fixed": 1.0}}
    svc.service.store.create_round(
        RoundRecord(
            task_id=tid, round_no=1, stage="committed", status=RoundStatus.COMMITTED,
            model_sha256=base, started_at=1.0, epsilon=1.5, noise_stddev=1.1,
        )
    )  # fmt: skip
    rounds = svc.request("GET", f"/v1/tasks/{tid}/rounds").json()["rounds"]
    assert [(r["epsilon"], r["noise_stddev"]) for r in rounds] == [(1.5, 1.1)]
    assert svc.request("GET", f"/v1/tasks/{tid}").json()["latest_round"]["epsilon"] == 1.5


def test_per_device_rate_limit(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    config = make_config(
        tmp_path / "data",
        mosquitto.url,
        limits=LimitsConfig(device_rate_per_s=0.01, device_burst=3),
    )
    with ServiceThread(config) as svc:
        sha = _model(svc)
        user, password = _enroll(svc)
        statuses = [
            svc.request("GET", f"/v1/models/{sha}", token=None, headers=_basic(user, password))
            for _ in range(5)
        ]
        assert [r.status for r in statuses] == [200, 200, 200, 429, 429]
        assert int(statuses[-1].headers["Retry-After"]) >= 1
        # Another device has its own allowance.
        other_user, other_password = _enroll(svc)
        assert (
            svc.request(
                "GET", f"/v1/models/{sha}", token=None, headers=_basic(other_user, other_password)
            ).status
            == 200
        )


def test_upload_limit_and_enrollment_flood(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    from fedrt.coordinator.config import HttpConfig

    config = make_config(tmp_path / "data", mosquitto.url)
    config = type(config)(
        data_dir=config.data_dir,
        admin_token=config.admin_token,
        broker=config.broker,
        http=HttpConfig(port=0, max_upload_bytes=2048),
    )
    with ServiceThread(config) as svc:
        data = tflite_bytes(0, size=4096)
        status, body = _upload(svc, data, manifest_for(data).to_json().encode())
        assert status == 400
        assert "limit" in body["error"]["message"]  # type: ignore[index]
        assert svc.service.store.list_models() == []
        junk = {"token": "t" * 20, "public_key": "AA==", "proof": "AA=="}
        statuses = [
            svc.request("POST", "/v1/enroll", token=None, body=junk).status for _ in range(12)
        ]
        # Ten tries per address in a burst, then 429 with Retry-After.
        assert statuses[:10] == [400] * 10
        assert statuses[10:] == [429, 429]
