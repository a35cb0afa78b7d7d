"""Several hosts on one machine: network namespaces on a Linux bridge, made and removed by tests.

Theory of operation
-------------------
A ``Lan`` is one namespace holding a bridge (the switch) plus one namespace per host, each
joined to the switch by a veth pair whose host end is ``eth0`` with an address of the LAN's
own /24. No interface of the LAN lives in the machine's own namespace, so nothing a test
sends on it can leave the machine, and the host namespaces reach each other only through
the switch. ``Host.port_down()`` takes the host's switch port down (a partition; this
kernel has no ``netem``). ``Lan.close()`` deletes every namespace by name, which also
deletes the veth pairs; it runs in the fixture's finally step, so a failed test leaves
nothing behind.

Processes run in a host with ``Host.argv(...)`` (``ip netns exec NS ...``, which execs the
command, so the pid is the command's own and ``kill -9`` reaches it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Host", "Lan", "NetnsUnavailable", "netns_unavailable_reason"]

# Interface names are at most 15 bytes: "fr" + 6 hex + "-" + up to 6 characters.
_MAX_HOSTS = 200


class NetnsUnavailable(RuntimeError):
    """This runner cannot make network namespaces (not root, no ``ip``, no permission)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and proc.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def netns_unavailable_reason() -> str | None:
    """Why a multi-host test cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns); run the deploy tests as root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"frprobe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (NetnsUnavailable, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the LAN: a namespace and its address."""

    name: str
    netns: str
    address: str
    switch_port: str
    switch_netns: str

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *command]

    def run(
        self, command: Sequence[str], timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command), capture_output=True, text=True, timeout=timeout, check=False
        )

    def port_down(self) -> None:
        _ip("-n", self.switch_netns, "link", "set", self.switch_port, "down")

    def port_up(self) -> None:
        _ip("-n", self.switch_netns, "link", "set", self.switch_port, "up")


class Lan:
    """A switch and hosts on ``10.X.Y.0/24`` (X, Y random), all inside namespaces."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        # The /24 lives only inside this LAN's namespaces; a random one keeps two runs apart.
        self.prefix = f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(250) + 1}"
        self.switch = f"fr{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        try:
            self._netns(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        """A new host namespace on the switch, with the next free address."""
        if len(self.hosts) >= _MAX_HOSTS or name in self.hosts or not name.isalnum():
            raise ValueError(f"bad or duplicate host name {name!r}")
        index = len(self.hosts) + 1
        netns = f"fr{self.tag}-{name}"
        port = f"fr{self.tag}-{index}"
        address = f"{self.prefix}.{index}"
        self._netns(netns)
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", netns)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name, netns, address, port, self.switch)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Delete every namespace this LAN made (and with them the veth pairs)."""
        for name in reversed(self._made):
            _ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
