"""fedrt beyond one machine on a LAN of namespaces: PostgreSQL, a NATS cluster, two instances.

Each part on a host of its own (``lan.Lan``): PostgreSQL (trust auth for the LAN only), three
NATS nodes routed to each other by address (JetStream, MQTT listener each), and
``fedrt coordinator serve`` instances on one store (``--store`` via ``FEDRT_STORE_URL``),
each with its own data dir holding a copy of the first one's signing key, its own
``--instance-id`` and its own public HTTPS URL. Devices (``fedrt device run``) on more hosts
speak MQTT 3.1.1 to the cluster and fetch models from the URL in their plan (the instance
running the round). ``InstancesDeployment`` is a ``deployment.Deployment`` whose "broker" is
the database and the NATS cluster and whose "coordinator" is the instance the operator
talks to; tests/deploy/test_instances_multihost.py and ``fedrt bench failover`` share it.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrt.benchmarks.deployment import HTTPS_PORT, Deployment
from fedrt.benchmarks.lan import Host, Lan
from fedrt.benchmarks.postgres import start_postgres
from fedrt.benchmarks.processes import ManagedProcess, until
from fedrt.coordinator.broker.nats import NatsCluster
from fedrt.coordinator.broker.nats_auth import NatsAuth
from fedrt.coordinator.security.credentials import bcrypt_hash
from fedrt.coordinator.security.signing import KEY_FILE
from fedrt.coordinator.service import COORDINATOR_USERNAME

__all__ = ["InstancesDeployment", "build_instances_deployment"]

POSTGRES_PORT = 5432


@dataclass
class InstancesDeployment(Deployment):
    """The deployment with a store host, NATS hosts and several coordinator instances."""

    db_host: Host | None = None
    nats_hosts: list[Host] = field(default_factory=list)
    instances: dict[str, Host] = field(default_factory=dict)
    instance_procs: dict[str, ManagedProcess] = field(default_factory=dict)
    nats: NatsCluster | None = None
    store_url: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def broker_url(self) -> str:
        assert self.nats is not None
        host, port = self.nats.mqtt_addresses[0]
        return f"mqtt://{host}:{port}"

    def url_of(self, name: str) -> str:
        return f"https://{self.instances[name].address}:{HTTPS_PORT}"

    # ---------------------------------------------------------------- store and broker
    def start_broker(self) -> None:
        """PostgreSQL on its host, then the NATS cluster over the three NATS hosts."""
        assert self.db_host is not None
        assert self.nats is not None
        lan_range = self.db_host.address.rsplit(".", 1)[0] + ".0/24"
        server = self._stack.enter_context(
            start_postgres(host=self.db_host.address, port=POSTGRES_PORT, trust=lan_range,
                           argv=self.db_host.argv)
        )  # fmt: skip
        self.store_url = server.url()
        self._stack.callback(self.nats.stop)
        self.nats.start()
        # The cluster makes the MQTT account's JetStream streams at the first MQTT login,
        # which can take longer than a client's CONNACK wait on a busy machine; a coordinator
        # whose first login fails on every node exits. One login per node first, from here.
        for host, port in self.nats.mqtt_addresses:

            def login(h: str = host, p: int = port) -> bool:
                return self.mqtt_login(h, p)

            until(login, 90, f"an MQTT login at {host}:{port}")

    def mqtt_login(self, address: str, port: int) -> bool:
        """The coordinator's user logs in (MQTT 3.1.1 CONNECT) from the operator's host."""
        secret = "\n".join(
            [self.coordinator_env["FEDRT_BROKER_USERNAME"],
             self.coordinator_env["FEDRT_BROKER_PASSWORD"]]
        )  # fmt: skip
        # The password goes on stdin, never on a command line others can read.
        code = (
            "import os, socket, sys\n"
            "user, password = sys.stdin.read().split('\\n')\n"
            "def s(b): return len(b).to_bytes(2, 'big') + b\n"
            "cid = b'fedrt-ready-' + os.urandom(4).hex().encode()\n"
            "body = s(b'MQTT') + bytes([4, 0xC2, 0, 30]) + s(cid) + s(user.encode())"
            " + s(password.encode())\n"
            "assert len(body) < 128\n"
            f"c = socket.create_connection(({address!r}, {port}), timeout=15)\n"
            "c.sendall(bytes([0x10, len(body)]) + body)\n"
            "ack = c.recv(4)\n"
            "sys.exit(0 if ack[:2] == bytes([0x20, 2]) and ack[3:4] == bytes([0]) else 1)\n"
        )
        argv = self.ops.argv([sys.executable, "-c", code])
        try:
            proc = subprocess.run(argv, input=secret.encode(), capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0

    def kill_nats_node(self, index: int) -> None:
        assert self.nats is not None
        self.nats.kill_node(index)

    # ---------------------------------------------------------------- instances
    def start_coordinator(self, timeout: float = 90.0) -> None:
        """Every instance, one after the other (the first creates the schema and the key)."""
        first, *others = self.instances
        self.start_instance(first, timeout)
        for name in others:
            self.start_instance(name, timeout)

    def start_instance(self, name: str, timeout: float = 90.0) -> None:
        first = next(iter(self.instances))
        data_dir = self.root / f"instance-{name}"
        data_dir.mkdir(parents=True, exist_ok=True)
        if name != first and not (data_dir / KEY_FILE).exists():
            # The one file an operator copies: every instance signs plans with the same key.
            shutil.copy2(self.root / f"instance-{first}" / KEY_FILE, data_dir / KEY_FILE)
        base = self.url_of(name)
        argv = [sys.executable, "-m", "fedrt", "coordinator", "serve", *self.coordinator_args,
                "--public-url", base, "--data-dir", str(data_dir),
                "--instance-id", name]  # fmt: skip
        env = {**self.coordinator_env, "FEDRT_STORE_URL": self.store_url}
        proc = self._spawn(self.instances[name], argv, f"coordinator-{name}", env=env)
        self.instance_procs[name] = proc
        if name == first:
            self.coordinator_proc = proc

        def healthy() -> bool:
            if not proc.running:
                raise AssertionError(f"instance {name} exited:\n{proc.log_tail()}")
            reply = self.api("GET", "/healthz", check=False, base=base)
            return reply is not None and reply["status"] == 200

        until(healthy, timeout, f"instance {name}'s /healthz over HTTPS")

    def kill_instance(self, name: str) -> None:
        """kill -9; the operator moves to an instance still running."""
        self.instance_procs[name].kill()
        alive = [n for n, p in self.instance_procs.items() if p.running]
        if not alive:
            raise AssertionError("no coordinator instance left running")
        self.coordinator = self.instances[alive[0]]

    def owner(self, round_: dict[str, Any]) -> str:
        """The instance the round's detail names as running it."""
        detail = round_.get("detail") or {}
        name = detail.get("instance")
        if name not in self.instances:
            raise AssertionError(f"round {round_.get('round_no')} names no instance: {detail}")
        return str(name)

    def stop_all(self) -> None:
        try:
            super().stop_all()
        finally:
            self._stack.close()

    def logs(self, lines: int = 40) -> str:
        text = super().logs(lines)
        return text if self.nats is None else f"{text}\n{self.nats.logs(lines)}"


def build_instances_deployment(
    lan: Lan, root: Path, *, instances: int = 2, device_hosts: int = 2
) -> InstancesDeployment:
    """Hosts, certificates, the NATS users file; nothing started yet."""
    from fedrt.coordinator.security.tls import write_tls_files

    db = lan.add_host("db")
    nats_hosts = [lan.add_host(f"nats{i + 1}") for i in range(3)]
    names = [chr(ord("a") + i) for i in range(instances)]
    coordinators = {name: lan.add_host(f"coord{name}") for name in names}
    ops = lan.add_host("ops")
    devices = [lan.add_host(f"dev{i + 1}") for i in range(device_hosts)]
    # One certificate for every instance: devices check whichever URL their plan names.
    pki = write_tls_files(
        root / "pki", server_names=tuple(h.address for h in coordinators.values())
    )
    password = secrets.token_urlsafe(24)
    cluster = NatsCluster(root / "nats", machines=nats_hosts)
    cluster.directory.mkdir(parents=True)
    # Every instance rewrites this file at each enrollment and SIGHUPs every node (one pid
    # namespace: the pid files name processes in the NATS hosts' namespaces).
    NatsAuth(
        auth_file=cluster.auth_path,
        coordinator_username=COORDINATOR_USERNAME,
        coordinator_password_hash=bcrypt_hash(password),
    ).sync([])
    dep = InstancesDeployment(
        root=root,
        broker=nats_hosts[0],
        coordinator=coordinators[names[0]],
        ops=ops,
        device_hosts=devices,
        tls=pki,
        admin_token="deploy-admin-" + secrets.token_hex(12),
        db_host=db,
        nats_hosts=nats_hosts,
        instances=coordinators,
        nats=cluster,
    )
    others = [f"{h}:{p}" for h, p in cluster.mqtt_addresses[1:]]
    dep.coordinator_env = {
        "FEDRT_ADMIN_TOKEN": dep.admin_token,
        "FEDRT_BROKER_USERNAME": COORDINATOR_USERNAME,
        "FEDRT_BROKER_PASSWORD": password,
        "FEDRT_BROKER_NODES": json.dumps(others),
        "FEDRT_BROKER_NATS_AUTH_FILE": str(cluster.auth_path),
        "FEDRT_BROKER_NATS_PID_FILES": json.dumps([str(p) for p in cluster.pid_files]),
    }
    dep.coordinator_args = [
        "--http", f"0.0.0.0:{HTTPS_PORT}",
        "--tls-cert", str(pki.server_cert),
        "--tls-key", str(pki.server_key),
        "--broker", dep.broker_url,
    ]  # fmt: skip
    return dep
