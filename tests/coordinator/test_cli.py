"""``fedrt coordinator serve`` as a process: ready, SIGTERM clean exit, kill -9 and restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import SpawnFn
from tests.coordinator.exported import write_export
from tests.support.process import free_port, http_ok

TOKEN = "cli-admin-token-0123456789"
FEDRT = shutil.which("fedrt", path=str(Path(sys.executable).parent)) or "fedrt"


def _env() -> dict[str, str]:
    return {"FEDRT_ADMIN_TOKEN": TOKEN, "FEDRT_BROKER_EMBEDDED_PORT": "0"}


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        out = json.loads(resp.read())
    assert isinstance(out, dict)
    return out


def _get(url: str) -> dict[str, object]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        out = json.loads(resp.read())
    assert isinstance(out, dict)
    return out


def test_serve_survives_kill_9_and_stops_cleanly_on_sigterm(spawn: SpawnFn, tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    argv = [FEDRT, "coordinator", "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{port}"]
    base = f"http://127.0.0.1:{port}"
    first = spawn(argv, name="coordinator-1", env=_env())
    first.wait_ready(http_ok(f"{base}/healthz"))
    write_export(tmp_path / "export")
    task = _post(f"{base}/v1/tasks", {"name": "t", "model_dir": str(tmp_path / "export")})
    _post(f"{base}/v1/tasks/{task['task_id']}/start", {})
    first.kill()  # no chance to clean up
    second = spawn(argv, name="coordinator-2", env=_env())
    second.wait_ready(http_ok(f"{base}/healthz"))
    again = _get(f"{base}/v1/tasks/{task['task_id']}")
    assert again["status"] == "running"
    assert again["model_sha256"] == task["model_sha256"]
    assert second.stop() == 0
    assert "coordinator stopped" in second.log_tail()


def test_bad_configuration_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[http]\nport = 99999\n")
    result = subprocess.run(
        [FEDRT, "coordinator", "serve", "--config", str(toml), "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"http.port must be <= 65535" in result.stderr
    bad_flag = subprocess.run(
        [FEDRT, "coordinator", "serve", "--broker", "amqp://x", "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad_flag.returncode == 2
    assert b"broker.url" in bad_flag.stderr
    bad_pace = subprocess.run(
        [FEDRT, "coordinator", "serve", "--pace-min-delay", "-5", "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad_pace.returncode == 2
    assert b"pace.min_delay must be >= 0" in bad_pace.stderr
