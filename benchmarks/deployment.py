"""fedrt deployed on a LAN of network namespaces: broker, coordinator, device hosts, an operator.

Each part runs in its own namespace with its own address on one bridge (``lan.Lan``):
Mosquitto with only its TLS listener facing the LAN, ``fedrt coordinator serve`` over HTTPS at
its public URL, and ``fedrt device run`` processes that reach the coordinator and the broker
only through those addresses. The operator's REST calls run from a host of their own
(``admin_client``). The multi-host tests (tests/deploy/) and ``fedrt bench recovery`` share it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.benchmarks.lan import Host, Lan
from fedrt.benchmarks.processes import ManagedProcess, until
from fedrt.coordinator.broker.mosquitto import BrokerConfig, mosquitto_binary, render_config
from fedrt.coordinator.broker.mosquitto_auth import MosquittoFileAuth
from fedrt.coordinator.security.credentials import hash_password
from fedrt.coordinator.security.tls import TlsFiles, write_tls_files
from fedrt.coordinator.service import COORDINATOR_USERNAME

__all__ = ["DEFAULT_MODEL_DIR", "Deployment", "DeviceProc", "build_deployment", "until"]

ROOT = Path(__file__).resolve().parents[1]
# A small exported MLP (12 features, 4 classes) kept with the on-device tests.
DEFAULT_MODEL_DIR = ROOT / "device_tests" / "fixtures" / "mlp"
FEATURES, CLASSES = 12, 4
HTTPS_PORT = 8443
MQTTS_PORT = 8883
MQTT_LOCAL_PORT = 1883


@dataclass
class DeviceProc:
    """One ``fedrt device run`` process and its JSON status lines."""

    name: str
    host: Host
    directory: Path
    proc: ManagedProcess

    def rounds_completed(self) -> int:
        best = 0
        if self.proc.log_path.exists():
            for line in self.proc.log_path.read_text(errors="replace").splitlines():
                if line.startswith('{"event": "status"'):
                    try:
                        best = max(best, int(json.loads(line).get("rounds_completed", 0)))
                    except ValueError:
                        continue
        return best


@dataclass
class Deployment:
    """What runs where, and the operator's handles on it."""

    root: Path
    broker: Host
    coordinator: Host
    ops: Host
    device_hosts: list[Host]
    tls: TlsFiles
    admin_token: str
    coordinator_env: dict[str, str] = field(default_factory=dict)
    coordinator_args: list[str] = field(default_factory=list)
    procs: list[ManagedProcess] = field(default_factory=list)
    devices: list[DeviceProc] = field(default_factory=list)
    broker_proc: ManagedProcess | None = None
    coordinator_proc: ManagedProcess | None = None
    _starts: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The coordinator's public URL."""
        return f"https://{self.coordinator.address}:{HTTPS_PORT}"

    @property
    def broker_url(self) -> str:
        return f"mqtts://{self.broker.address}:{MQTTS_PORT}"

    def _spawn(
        self, host: Host, argv: list[str], name: str, env: dict[str, str] | None = None
    ) -> ManagedProcess:
        n = self._starts[name] = self._starts.get(name, 0) + 1
        log = self.root / "logs" / f"{name}-{n}.log"
        proc = ManagedProcess(host.argv(argv), log_path=log, env=env, cwd=ROOT)
        self.procs.append(proc.start())
        return proc

    # ---------------------------------------------------------------- broker
    def start_broker(self) -> None:
        directory = self.root / "broker"
        config = BrokerConfig(
            directory=directory,
            host=self.broker.address,
            port=MQTT_LOCAL_PORT,
            tls=self.tls,
            tls_port=MQTTS_PORT,
            allow_anonymous=False,
            password_file=directory / "passwords",
            acl_file=directory / "acl",
        )
        text = render_config(config, MQTT_LOCAL_PORT, MQTTS_PORT)
        # Only the TLS listener faces the LAN: the plain one stays on the broker's loopback.
        plain = f"listener {MQTT_LOCAL_PORT} {self.broker.address}"
        if plain not in text:
            raise RuntimeError(f"unexpected mosquitto.conf (no {plain!r})")
        (directory / "mosquitto.conf").write_text(
            text.replace(plain, f"listener {MQTT_LOCAL_PORT} 127.0.0.1")
        )
        argv = [mosquitto_binary(), "-c", str(directory / "mosquitto.conf")]
        self.broker_proc = proc = self._spawn(self.broker, argv, "broker")
        assert proc.proc is not None
        # ``ip netns exec`` execs the broker: this pid is Mosquitto's (SIGHUP reloads it).
        (directory / "mosquitto.pid").write_text(f"{proc.proc.pid}\n")
        until(lambda: self.tcp_open(self.ops, self.broker.address, MQTTS_PORT), 20, "mqtts")

    def stop_broker(self, *, kill: bool = False) -> None:
        assert self.broker_proc is not None
        if kill:
            self.broker_proc.kill()
        else:
            self.broker_proc.stop()

    # ---------------------------------------------------------------- coordinator
    def start_coordinator(self, timeout: float = 60.0) -> None:
        argv = [sys.executable, "-m", "fedrt", "coordinator", "serve", *self.coordinator_args]
        self.coordinator_proc = proc = self._spawn(
            self.coordinator, argv, "coordinator", env=self.coordinator_env
        )

        def healthy() -> bool:
            if not proc.running:
                raise AssertionError(f"the coordinator exited:\n{proc.log_tail()}")
            reply = self.api("GET", "/healthz", check=False)
            return reply is not None and reply["status"] == 200

        until(healthy, timeout, "the coordinator's /healthz over HTTPS")

    def kill_coordinator(self) -> None:
        assert self.coordinator_proc is not None
        self.coordinator_proc.kill()

    def tcp_open(self, source: Host, address: str, port: int) -> bool:
        code = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(({address!r}, {port}), timeout=1).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        return source.run([sys.executable, "-c", code]).returncode == 0

    # ---------------------------------------------------------------- the operator
    def api(
        self, method: str, path: str, body: Any = None, *, check: bool = True, base: str = ""
    ) -> Any:
        """One REST call from the operator's host (to ``base``, else the coordinator's URL).

        ``check``: the reply's body, or AssertionError unless 2xx. Otherwise the whole reply
        (``{"status", "body"}``), or None when the coordinator could not be reached."""
        url = (base or self.base) + path
        argv = [sys.executable, "-m", "fedrt.benchmarks.admin_client", method, url]
        env = {"FEDRT_ADMIN_TOKEN": self.admin_token, "FEDRT_CA_FILE": str(self.tls.ca_cert),
               "PATH": "/usr/bin:/bin"}  # fmt: skip
        proc = subprocess.run(
            self.ops.argv(argv),
            input=b"" if body is None else json.dumps(body).encode(),
            capture_output=True,
            timeout=30,
            check=False,
            cwd=ROOT,
            env=env,
        )
        if proc.returncode != 0:
            if check:
                raise AssertionError(f"{method} {path}: {proc.stdout!r} {proc.stderr[-500:]!r}")
            return None
        reply = json.loads(proc.stdout)
        if not check:
            return reply
        if not 200 <= reply["status"] < 300:
            raise AssertionError(f"{method} {path}: {reply}")
        return reply["body"]

    def rounds(self, task_id: str) -> list[dict[str, Any]]:
        reply = self.api("GET", f"/v1/tasks/{task_id}/rounds", check=False)
        if reply is None or reply["status"] != 200:
            return []
        body = reply["body"]
        rounds = body["rounds"] if isinstance(body, dict) else body
        return list(rounds)

    def committed(self, task_id: str) -> list[dict[str, Any]]:
        return [r for r in self.rounds(task_id) if r["status"] == "committed"]

    # ---------------------------------------------------------------- devices
    def add_device(self, host: Host, task_id: str, seed: int, examples: int = 64) -> DeviceProc:
        """Enroll and start one ``fedrt device run`` on ``host`` (SDK default timers)."""
        name = f"device-{len(self.devices)}"
        directory = self.root / name
        directory.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(examples, FEATURES)).astype(np.float32)
        y = x[:, :CLASSES].argmax(axis=1).astype(np.int64)
        np.savez(directory / "examples.npz", x=x, y=y)
        token = self.api("POST", "/v1/enrollment-tokens", {})["token"]
        (directory / "device.toml").write_text(
            "[device]\n"
            f'data_dir = "{directory / "data"}"\n'
            f'coordinator_url = "{self.base}"\n'
            f'task_id = "{task_id}"\n'
            f'enrollment_token = "{token}"\n'
            f'ca_file = "{self.tls.ca_cert}"\n'
            'state = "always"\n'
            "poll_s = 1.0\n"
            "[data]\n"
            f"x_shape = [{FEATURES}]\n"
            f'import_npz = "{directory / "examples.npz"}"\n'
        )
        argv = [sys.executable, "-m", "fedrt", "device", "run", "--config",
                str(directory / "device.toml"), "--status-every", "1"]  # fmt: skip
        device = DeviceProc(name, host, directory, self._spawn(host, argv, name))
        self.devices.append(device)
        return device

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=5)

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.log_path.name} ---\n{p.log_tail(lines)}" for p in self.procs)


def build_deployment(lan: Lan, root: Path, *, device_hosts: int = 2) -> Deployment:
    """Hosts, certificates and broker files for a deployment; nothing started yet."""
    broker = lan.add_host("broker")
    coordinator = lan.add_host("coord")
    ops = lan.add_host("ops")
    devices = [lan.add_host(f"dev{i + 1}") for i in range(device_hosts)]
    # One private CA for the operator's PKI: the broker's and the coordinator's certificates.
    pki = write_tls_files(root / "pki", server_names=(broker.address, coordinator.address))
    password = secrets.token_urlsafe(24)
    broker_dir = root / "broker"
    broker_dir.mkdir(parents=True)
    # The coordinator owns the broker's password and ACL files; they exist before it starts.
    auth = MosquittoFileAuth(
        password_file=broker_dir / "passwords",
        acl_file=broker_dir / "acl",
        coordinator_username=COORDINATOR_USERNAME,
        coordinator_password_hash=hash_password(password),
    )
    auth.sync([])
    dep = Deployment(
        root=root,
        broker=broker,
        coordinator=coordinator,
        ops=ops,
        device_hosts=devices,
        tls=pki,
        admin_token="deploy-admin-" + secrets.token_hex(12),
    )
    dep.coordinator_env = {
        "FEDRT_ADMIN_TOKEN": dep.admin_token,
        "FEDRT_BROKER_USERNAME": COORDINATOR_USERNAME,
        "FEDRT_BROKER_PASSWORD": password,
        "FEDRT_BROKER_CA_FILE": str(pki.ca_cert),
        "FEDRT_BROKER_PASSWORD_FILE": str(auth.password_file),
        "FEDRT_BROKER_ACL_FILE": str(auth.acl_file),
        "FEDRT_BROKER_PID_FILE": str(broker_dir / "mosquitto.pid"),
    }
    dep.coordinator_args = [
        "--http", f"0.0.0.0:{HTTPS_PORT}",
        "--public-url", dep.base,
        "--tls-cert", str(pki.server_cert),
        "--tls-key", str(pki.server_key),
        "--broker", dep.broker_url,
        "--data-dir", str(root / "coordinator-data"),
    ]  # fmt: skip
    return dep
