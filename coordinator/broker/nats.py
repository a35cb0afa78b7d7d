"""A managed NATS cluster: nodes with routes, JetStream and an MQTT listener each.

Devices and the coordinator speak MQTT 3.1.1 to any node; the cluster keeps MQTT sessions,
retained messages and QoS 1 messages in JetStream (replicated over the nodes), so a client
whose node dies reconnects to another and finds its session there. Each node has its own
store directory and ports; all nodes include one ``auth.conf`` (accounts, users,
permissions: ``broker.nats_auth``) and re-read it on SIGHUP. One node can be killed (SIGKILL)
and started again on the same ports and store, as a crashed machine would come back.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fedrt.coordinator.broker.mosquitto import free_port, stop_process, wait_for_port
from fedrt.coordinator.errors import BrokerError

__all__ = [
    "AUTH_FILE",
    "NatsCluster",
    "NatsNode",
    "NodeHost",
    "NodePorts",
    "nats_server_binary",
    "render_node_config",
    "restartable_port",
]

AUTH_FILE = "auth.conf"
PID_FILE = "nats.pid"
CLUSTER_NAME = "fedrt"
# Three nodes: the smallest Raft group that survives the loss of one (JetStream replicas 3).
DEFAULT_NODES = 3
# A node binds within a second; JetStream's meta leader and the MQTT streams need a few more
# once all routes are up. Generous for a loaded 2-core CI box.
DEFAULT_START_TIMEOUT = 30.0
# What one node's JetStream may hold: enough for sessions, retained announcements and a
# burst of queued QoS 1 updates (1,000 devices x 100 KB); nats-server refuses past it.
JS_MAX_FILE = "2G"
JS_MAX_MEM = "256M"


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if found is None:
        raise BrokerError(
            "nats-server is not installed (Debian/Ubuntu: apt-get install -y nats-server)"
        )
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePorts:
    """The three listeners of one node: core NATS clients, cluster routes, MQTT."""

    client: int
    cluster: int
    mqtt: int
    # Monitoring (HTTP): ``/healthz`` says when the node's JetStream is ready.
    http: int


# NATS's registered ports (4222 clients, 6222 routes, 8222 monitoring) and MQTT's 1883.
STANDARD_PORTS = NodePorts(client=4222, cluster=6222, mqtt=1883, http=8222)

Argv = Callable[[Sequence[str]], list[str]]


class NodeHost(Protocol):
    """Another machine a node runs on (``benchmarks.lan.Host``): its address, and how a
    command is run there (an ``ip netns exec`` prefix)."""

    @property
    def address(self) -> str: ...

    def argv(self, command: Sequence[str]) -> list[str]: ...


def render_node_config(
    *,
    name: str,
    host: str,
    ports: NodePorts,
    routes: Sequence[int | tuple[str, int]],
    directory: Path,
) -> str:
    """The nats-server configuration of one node (the auth file is included, not inlined).

    ``routes``: the other nodes' cluster ports on ``host``, or (address, port) elsewhere."""
    # MQTT sessions and messages replicated on up to 3 nodes: with 3, losing one node keeps a
    # Raft majority (2 of 3); nats-server would otherwise size them by the nodes it saw first.
    replicas = min(3, len(routes) + 1)
    targets = [(host, r) if isinstance(r, int) else r for r in routes]
    route_urls = ", ".join(f'"nats-route://{h}:{p}"' for h, p in targets)
    # A single node is no cluster: JetStream refuses a cluster block without routes.
    cluster = (
        "cluster {\n"
        f'  name: "{CLUSTER_NAME}"\n'
        f'  listen: "{host}:{ports.cluster}"\n'
        f"  routes: [{route_urls}]\n"
        "}\n"
        if routes
        else ""
    )
    return (
        f'server_name: "{name}"\n'
        f'listen: "{host}:{ports.client}"\n'
        f'http: "{host}:{ports.http}"\n'
        f'pid_file: "{directory / PID_FILE}"\n'
        "jetstream {\n"
        f'  store_dir: "{directory / "jetstream"}"\n'
        f"  max_file_store: {JS_MAX_FILE}\n"
        f"  max_memory_store: {JS_MAX_MEM}\n"
        "}\n"
        f"{cluster}"
        "mqtt {\n"
        f'  listen: "{host}:{ports.mqtt}"\n'
        # An MQTT client whose QoS 1 message is not acknowledged gets it again after this.
        '  ack_wait: "30s"\n'
        f"  stream_replicas: {replicas}\n"
        "}\n"
        f"include {AUTH_FILE}\n"
    )


# Ports the kernel never hands to outgoing connections: below its ephemeral range.
_LOW_PORTS = (20000, 32767)
_PORT_TRIES = 200


def restartable_port(host: str, rng: random.Random | None = None) -> int:
    """A free port below the ephemeral range, for a node that is killed and started again.

    A port from ``free_port`` (the kernel's choice, from the ephemeral range) can be taken
    by any outgoing connection while its node is down, and then the node cannot come back
    (seen on a busy test machine); one below that range is only taken by another listener.
    """
    pick = rng or random.SystemRandom()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_PORT_TRIES):
        candidate = pick.randint(*_LOW_PORTS)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
        return candidate
    return free_port(host)


class NatsNode:
    """One nats-server process of the cluster (on ``machine`` when given, else here)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        host: str,
        ports: NodePorts,
        machine: NodeHost | None = None,
    ) -> None:
        self.name, self.directory, self.host, self.ports = name, directory, host, ports
        self.machine = machine
        self.config_path = directory / "nats.conf"
        self.pid_file = directory / PID_FILE
        self.log_path = directory / "nats.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def mqtt_address(self) -> tuple[str, int]:
        return self.host, self.ports.mqtt

    def launch(self) -> None:
        if self.running:
            raise BrokerError(f"NATS node {self.name} already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv([nats_server_binary(), "-c", str(self.config_path)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _argv(self, command: Sequence[str]) -> list[str]:
        return list(command) if self.machine is None else self.machine.argv(command)

    def wait_listening(self, deadline: float) -> None:
        if self.machine is not None:
            # Its address is not reachable from here: ``wait_healthy`` probes from there.
            return
        for port in (self.ports.client, self.ports.mqtt, self.ports.http):
            left = max(0.1, deadline - time.monotonic())
            if not wait_for_port(self.host, port, left) or not self.running:
                raise BrokerError(
                    f"NATS node {self.name} did not listen on {self.host}:{port}:\n{self.logs()}"
                )

    def healthy(self) -> bool:
        """``/healthz`` answers ok: the node has joined the cluster and JetStream is current."""
        url = f"http://{self.host}:{self.ports.http}/healthz"
        if self.machine is not None:
            return self._healthy_there(url)
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _healthy_there(self, url: str) -> bool:
        """The same checks from inside the node's machine: every listener, then /healthz."""
        ports = (self.ports.client, self.ports.mqtt)
        code = (
            "import socket, sys, urllib.request\n"
            f"for p in {ports!r}:\n"
            f"    socket.create_connection(({self.host!r}, p), timeout=1).close()\n"
            f"with urllib.request.urlopen({url!r}, timeout=1) as r:\n"
            "    sys.exit(0 if r.status == 200 else 1)\n"
        )
        try:
            probe = subprocess.run(
                self._argv([sys.executable, "-c", code]), capture_output=True, timeout=10
            )
        except subprocess.TimeoutExpired:
            return False
        return probe.returncode == 0

    def wait_healthy(self, deadline: float) -> None:
        while not self.healthy():
            if not self.running or time.monotonic() >= deadline:
                raise BrokerError(f"NATS node {self.name} is not healthy:\n{self.logs()}")
            time.sleep(0.1)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration (users and permissions among it)."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to routes or clients."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
        # A killed server leaves its pid file: a reload must not SIGHUP whoever gets the pid.
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout)

    def logs(self, tail: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])


class NatsCluster:
    """``nodes`` nats-server processes on loopback, clustered, each with JetStream and MQTT.

    With ``machines``, one node on each (``NodeHost``: another host's address and how to run
    a command there), on NATS's standard ports, routes between the machines' addresses.
    The caller writes ``auth_path`` (``NatsAuth.sync``) before ``start()``: a node refuses
    to start without its included file. ``reload()`` makes every running node re-read it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        nodes: int = DEFAULT_NODES,
        host: str = "127.0.0.1",
        machines: Sequence[NodeHost] = (),
    ):
        if machines:
            nodes = len(machines)
        if nodes < 1:
            raise BrokerError("a NATS cluster needs at least one node")
        self.directory = Path(directory).absolute()  # the nodes link the auth file by this path
        self.host = host

        taken: set[int] = set()

        def port() -> int:
            # Each port once: a free port is free until its node binds it, so two draws
            # could name the same one (seen: a node's monitor and route ports collided).
            for _ in range(_PORT_TRIES):
                chosen = restartable_port(host)
                if chosen not in taken:
                    break
            taken.add(chosen)
            return chosen

        if machines:
            self.nodes = [
                NatsNode(f"n{i + 1}", self.directory / f"n{i + 1}", m.address, STANDARD_PORTS, m)
                for i, m in enumerate(machines)
            ]
        else:
            self.nodes = [
                NatsNode(f"n{i + 1}", self.directory / f"n{i + 1}", host,
                         NodePorts(client=port(), cluster=port(), mqtt=port(), http=port()))
                for i in range(nodes)
            ]  # fmt: skip
        self.auth_path = self.directory / AUTH_FILE

    @property
    def mqtt_addresses(self) -> list[tuple[str, int]]:
        return [node.mqtt_address for node in self.nodes]

    @property
    def pid_files(self) -> list[Path]:
        return [node.pid_file for node in self.nodes]

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if not self.auth_path.is_file():
            raise BrokerError(f"write {self.auth_path} (NatsAuth.sync) before starting NATS")
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            routes = [(o.host, o.ports.cluster) for o in self.nodes if o is not node]
            text = render_node_config(
                name=node.name, host=node.host, ports=node.ports, routes=routes,
                directory=node.directory,
            )  # fmt: skip
            node.config_path.write_text(text)
            # Each node includes the one auth file, by a link beside its own config.
            link = node.directory / AUTH_FILE
            if not link.exists():
                os.symlink(self.auth_path, link)
        for node in self.nodes:
            node.launch()
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.wait_listening(deadline)
            for node in self.nodes:
                node.wait_healthy(deadline)
        except BrokerError:
            self.stop()
            raise

    def reload(self) -> None:
        for node in self.nodes:
            node.reload()

    def kill_node(self, index: int) -> NatsNode:
        node = self.nodes[index]
        node.kill()
        return node

    def restart_node(self, index: int, timeout: float = DEFAULT_START_TIMEOUT) -> NatsNode:
        """Start a killed or stopped node again, on its ports and its JetStream store."""
        node = self.nodes[index]
        node.stop()
        node.launch()
        deadline = time.monotonic() + timeout
        node.wait_listening(deadline)
        node.wait_healthy(deadline)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self, tail: int = 20) -> str:
        return "\n".join(f"--- {n.name}\n{n.logs(tail)}" for n in self.nodes)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
