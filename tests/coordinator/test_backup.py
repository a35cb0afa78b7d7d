"""``fedrt coordinator backup|restore``: taken while serving, verified, secrets kept 0600."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from fedrt.cli import main
from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.config import BrokerConfig, CoordinatorConfig, HttpConfig
from fedrt.coordinator.security.signing import KEY_FILE
from fedrt.coordinator.service import ADMIN_TOKEN_FILE
from fedrt.coordinator.store.backup import DATABASE, MANIFEST
from fedrt.protocol import round_messages as rm
from tests.coordinator.harness import ADMIN_TOKEN, ServiceThread, enroll_device, upload_model
from tests.coordinator.live_round import RawDevice, live_coordinator, start_task, wait_for


def file_config(data_dir: Path) -> CoordinatorConfig:
    """A served coordinator whose admin token (the harness's) is read from its file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    token = data_dir / ADMIN_TOKEN_FILE
    if not token.exists():
        token.write_text(ADMIN_TOKEN + "\n")
        token.chmod(0o600)
    return CoordinatorConfig(
        data_dir=data_dir,
        tick_interval_s=0.05,
        http=HttpConfig(port=0),
        broker=BrokerConfig(url="embedded", embedded_port=0),
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _backup_of_a_serving_coordinator(tmp_path: Path) -> tuple[Path, str, str]:
    """(backup dir, model sha256, device id) of a coordinator backed up while it serves."""
    live = tmp_path / "live"
    with ServiceThread(file_config(live)) as svc:
        sha = upload_model(svc)
        device = str(enroll_device(svc)["device_id"])
        assert main(["coordinator", "backup", str(tmp_path / "bk"), "--data-dir", str(live)]) == 0
    return tmp_path / "bk", sha, device


def test_a_backup_taken_while_serving_restores_into_a_working_coordinator(tmp_path: Path) -> None:
    backup, sha, device = _backup_of_a_serving_coordinator(tmp_path)
    manifest = json.loads((backup / MANIFEST).read_text())
    names = {f["path"] for f in manifest["files"]}
    assert {DATABASE, f"files/{KEY_FILE}", f"files/{ADMIN_TOKEN_FILE}"} <= names
    assert any(n.startswith("files/artifacts/") and sha in n for n in names)
    assert manifest["fedrt_version"]
    assert manifest["created"]
    for secret in (DATABASE, f"files/{KEY_FILE}", f"files/{ADMIN_TOKEN_FILE}", MANIFEST):
        assert _mode(backup / secret) == 0o600, secret

    restored = tmp_path / "restored"
    assert main(["coordinator", "restore", str(backup), "--data-dir", str(restored)]) == 0
    for secret in (DATABASE, KEY_FILE, ADMIN_TOKEN_FILE):
        assert _mode(restored / secret) == 0o600, secret
    live_key = (tmp_path / "live" / KEY_FILE).read_bytes()
    assert (restored / KEY_FILE).read_bytes() == live_key
    with ServiceThread(file_config(restored)) as svc:
        models = svc.request("GET", "/v1/models").json()
        rows = models["models"] if isinstance(models, dict) else models
        assert sha in {m["sha256"] for m in rows}
        assert svc.request("GET", f"/v1/models/{sha}").status == 200
        devices = svc.request("GET", "/v1/devices").json()
        rows = devices["devices"] if isinstance(devices, dict) else devices
        assert device in {d["device_id"] for d in rows}


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], says: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert "Traceback" not in err


def test_restore_refuses_what_is_not_a_backup_and_a_data_dir_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup, _, _ = _backup_of_a_serving_coordinator(tmp_path)
    capsys.readouterr()
    target = tmp_path / "target"
    (tmp_path / "empty").mkdir()
    restore = ["coordinator", "restore"]
    _refused([*restore, str(tmp_path / "empty"), "--data-dir", str(target)], capsys,
             "is not a fedrt coordinator backup")  # fmt: skip
    _refused([*restore, str(tmp_path / "live"), "--data-dir", str(target)], capsys,
             "is not a fedrt coordinator backup")  # fmt: skip
    assert not target.exists()  # nothing written on a refusal
    _refused([*restore, str(backup), "--data-dir", str(tmp_path / "live")], capsys,
             "is not empty")  # fmt: skip
    _refused(["coordinator", "backup", str(backup), "--data-dir", str(tmp_path / "live")],
             capsys, "not an empty directory")  # fmt: skip
    pg = ["--data-dir", str(tmp_path / "live"), "--store", "postgresql://db.invalid/fedrt"]
    _refused(["coordinator", "backup", str(tmp_path / "bk2"), *pg], capsys, "pg_dump")
    live_key = (tmp_path / "live" / KEY_FILE).read_bytes()
    assert main([*restore, str(backup), "--data-dir", str(tmp_path / "live"), "--force"]) == 0
    assert (tmp_path / "live" / KEY_FILE).read_bytes() == live_key


def test_restore_refuses_a_damaged_or_crafted_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup, _, _ = _backup_of_a_serving_coordinator(tmp_path)
    capsys.readouterr()
    target = str(tmp_path / "target")
    key = backup / "files" / KEY_FILE
    good = key.read_bytes()
    key.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    _refused(["coordinator", "restore", str(backup), "--data-dir", target], capsys,
             "does not match the manifest")  # fmt: skip
    key.write_bytes(good)
    manifest_path = backup / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][1]["path"] = "../../etc/passwd"
    manifest_path.write_text(json.dumps(manifest))
    _refused(["coordinator", "restore", str(backup), "--data-dir", target], capsys,
             "outside the backup")  # fmt: skip
    manifest_path.write_text("{not json")
    _refused(["coordinator", "restore", str(backup), "--data-dir", target], capsys,
             "cannot be read")  # fmt: skip
    assert not Path(target).exists()


def _committed(service: ServiceThread, task_id: str, after: int) -> dict[str, object] | None:
    rows = service.request("GET", f"/v1/tasks/{task_id}/rounds").json()
    rows = rows["rounds"] if isinstance(rows, dict) else rows
    done = [r for r in rows if r["status"] == "committed" and r["round_no"] > after]
    return done[0] if done else None


def _one_round(service: ServiceThread, device: RawDevice, task_id: str, after: int) -> str:
    """The device checks in and reports; the sha256 of the version the round commits."""
    seen = {id(m) for m in device.seen}
    device.check_in()
    plan = device.expect(rm.Plan, lambda p: id(p) not in seen)
    device.update(plan, np.full(plan.update.params, 0.01), 10)
    row = wait_for(lambda: _committed(service, task_id, after), "a round to commit")
    return str(row["result_sha256"])


def test_a_coordinator_restored_from_a_live_backup_continues_the_task(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    backup, restored = tmp_path / "bk", tmp_path / "restored"
    with live_coordinator(tmp_path / "live", mosquitto.url) as service:
        # One device is the whole cohort: each round selects it at its check-in.
        task_id = start_task(service, ["dev-0"], goal_count=1, min_reports=1, max_rounds=5,
                             over_selection=1.0, training_deadline_s=60.0)  # fmt: skip
        device = RawDevice(mosquitto.host, mosquitto.port, "dev-0", task_id).connect()
        try:
            first = _one_round(service, device, task_id, after=0)
            assert service.service.store.get_task(task_id).model_sha256 == first
            argv = ["coordinator", "backup", str(backup), "--data-dir", str(tmp_path / "live")]
            assert main(argv) == 0
            # The live coordinator moves on; the restored one must start from the backup.
            after_backup = _one_round(service, device, task_id, after=1)
        finally:
            device.close()
    assert main(["coordinator", "restore", str(backup), "--data-dir", str(restored)]) == 0
    with live_coordinator(restored, mosquitto.url) as service:
        store = service.service.store
        assert store.get_task(task_id).model_sha256 == first
        device = RawDevice(mosquitto.host, mosquitto.port, "dev-0", task_id).connect()
        device.next_id = 1000  # its message ids go on growing, as a real device's do
        try:
            last = max(r.round_no for r in store.list_rounds(task_id))
            result = _one_round(service, device, task_id, after=last)
        finally:
            device.close()
        assert result not in (first, after_backup)
        assert store.get_model(result).parent_sha256 == first
