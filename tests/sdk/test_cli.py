"""``fedrt device run|add-examples``: typed config errors, exit status 2 without a traceback,
examples appended once per file and safely from several processes, a round with a real stack."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fedrt.sdk.cli import build_device, load_config, open_device
from fedrt.sdk.device_file import DeviceFile
from fedrt.sdk.errors import SdkConfigError
from tests.conftest import SpawnFn
from tests.sdk.served_coordinator import Broker, serve_coordinator, until

MLP = Path(__file__).resolve().parents[2] / "device_tests" / "fixtures" / "mlp"


def _fedrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedrt", *args], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def _config(tmp_path: Path, data: str, device: str = "", name: str = "device.toml") -> Path:
    path = tmp_path / name
    path.write_text(f"[device]\ndata_dir = '{tmp_path / 'device'}'\n"
                    f"coordinator_url = 'http://127.0.0.1:1'\n{device}[data]\n{data}")  # fmt: skip
    return path


def test_config_errors_are_typed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\ndata_dir = '/tmp/x'\n")
    with pytest.raises(SdkConfigError, match="coordinator_url is required"):
        load_config(bad)
    bad.write_text("[device]\ndata_dir = '/x'\ncoordinator_url = 'http://h'\nsurprise = 1\n")
    with pytest.raises(SdkConfigError, match="surprise"):
        load_config(bad)
    bad.write_text("not toml [")
    with pytest.raises(SdkConfigError, match="cannot read"):
        load_config(bad)
    data: dict[str, dict[str, object]] = {
        "device": {"data_dir": str(tmp_path), "coordinator_url": "http://127.0.0.1:1"}
    }
    with pytest.raises(SdkConfigError, match=r"manifest = PATH .* or x_shape"):
        build_device(data)
    data["policy"] = {"min_battery": 30.0, "warp_drive": True}
    data["data"] = {"x_shape": [64]}
    with pytest.raises(SdkConfigError, match="warp_drive"):
        build_device(data)
    assert not (tmp_path / "examples.sqlite3").exists()  # a bad file opens nothing


@pytest.mark.parametrize(
    ("data", "x", "message"),
    [
        ("x_shape = [5]\nx_dtype = 'int32'\n", np.arange(60).reshape(10, 6),
         "x holds examples of int64[6], the model takes x int32[5]"),
        ("x_shape = [6]\nx_dtype = 'int32'\ny_shape = [2]\n", np.arange(60).reshape(10, 6),
         "y holds examples of int64[], the model takes y int32[2]"),
        ("x_shape = [6]\nx_dtype = 'int32'\n", np.zeros((10, 6)),
         "x is float64, the model takes x int32[6]"),
        ("x_shape = [6]\nx_dtype = 'uint8'\n", np.full((10, 6), 300),
         "x has values outside the range of uint8"),
    ],
)  # fmt: skip
def test_add_examples_refuses_what_does_not_fit(
    tmp_path: Path, data: str, x: np.ndarray, message: str
) -> None:
    np.savez(tmp_path / "tokens.npz", x=x, y=np.arange(10))
    config = _config(tmp_path, data)
    out = _fedrt("device", "add-examples", "--config", str(config), str(tmp_path / "tokens.npz"))
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_bad_files_exit_2_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_text("not numpy")
    config = _config(tmp_path, "x_shape = [6]\nx_dtype = 'int32'\n")
    for args, message in [
        (("add-examples", "--config", str(config), str(tmp_path / "junk.npz")), "not an .npz"),
        (("add-examples", "--config", str(config), str(tmp_path / "none.npz")), "cannot read"),
        (("add-examples", "--config", str(tmp_path / "none.toml"), "x.npz"), "cannot read"),
        (
            ("run", "--config", str(_config(tmp_path, "x_dtype = 'string'\n", name="a.toml"))),
            "x_dtype must be",
        ),
        (
            (
                "run",
                "--config",
                str(_config(tmp_path, f"manifest = '{tmp_path}'\n", name="b.toml")),
            ),
            "cannot read manifest",
        ),
    ]:
        out = _fedrt("device", *args)
        assert out.returncode == 2, out
        assert message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_import_npz_is_appended_once_per_content(tmp_path: Path) -> None:
    npz = tmp_path / "examples.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x=rng.normal(size=(8, 12)), y=rng.integers(0, 4, size=8))
    file = DeviceFile.load(_config(tmp_path, f"manifest = '{MLP}'\nimport_npz = '{npz}'\n"))
    for expected in (8, 8):  # a restart with the same file adds nothing
        device = open_device(file)
        assert len(device.store) == expected
        device.store.close()
    np.savez(npz, x=rng.normal(size=(2, 12)), y=rng.integers(0, 4, size=2))
    device = open_device(file)
    assert len(device.store) == 10
    device.store.close()


def test_add_examples_while_another_process_writes(tmp_path: Path) -> None:
    config = _config(tmp_path, f"manifest = '{MLP}'\n")
    files = []
    for i in range(2):
        files.append(tmp_path / f"batch{i}.npz")
        np.savez(files[-1], x=np.full((50, 12), i, np.float32), y=np.full(50, i))
    store = DeviceFile.load(config).open_store()  # the running device's own connection
    stop = threading.Event()

    def device_side() -> None:  # appends and reads batches, as an app and a round do
        for i in range(200):
            if stop.is_set():
                return
            store.append(np.zeros(12, np.float32), 3)
            store.batch(8, cursor=i)

    writer = threading.Thread(target=device_side)
    writer.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "fedrt", "device", "add-examples",
                                   "--config", str(config), str(f)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for f in files]  # fmt: skip
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        writer.join(60)
        stop.set()
    try:
        assert [p.returncode for p in procs] == [0, 0], outs
        assert len(store) == 200 + 100
        labels = store.batch(300).y
    finally:
        store.close()
    assert sorted(np.bincount(labels, minlength=4).tolist()) == [0, 50, 50, 200]


def test_device_process_enrolls_and_completes_a_round(
    tmp_path: Path, spawn: SpawnFn, mosquitto: Broker
) -> None:
    coordinator = serve_coordinator(spawn, mosquitto.url, tmp_path / "coordinator")
    task_id = coordinator.start_task(MLP)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "examples.npz", x=rng.normal(size=(40, 12)), y=rng.integers(0, 4, 40))
    device = f"task_id = '{task_id}'\nenrollment_token = '{coordinator.token()}'\n"
    config = _config(tmp_path, f"x_shape = [12]\nimport_npz = '{tmp_path / 'examples.npz'}'\n",
                     device + "state = 'always'\npoll_s = 0.2\n")  # fmt: skip
    config.write_text(config.read_text().replace("http://127.0.0.1:1", coordinator.url))
    proc = spawn([sys.executable, "-m", "fedrt", "device", "run", "--config", str(config),
                  "--status-every", "0.5"], name="device")  # fmt: skip

    def completed() -> bool:
        for line in proc.log_path.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("rounds_completed", 0) >= 1:
                return True
        return False

    until(completed, 60, "a completed round", proc)
    assert proc.stop() == 0
    assert '"event": "stopped"' in proc.log_path.read_text()
    assert [r["round_no"] for r in coordinator.committed(task_id)] == [1]
