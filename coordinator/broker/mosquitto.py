"""Mosquitto as a managed broker: password and ACL files, configuration, and the process."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedrt.coordinator.errors import BrokerError
from fedrt.coordinator.security.tls import TlsFiles

# Mosquitto binds and reads its files within milliseconds; several seconds covers a loaded CI box.
DEFAULT_START_TIMEOUT = 10.0

Access = Literal["read", "write", "readwrite", "deny"]

__all__ = [
    "AclRule",
    "BrokerConfig",
    "BrokerError",
    "MosquittoBroker",
    "free_port",
    "render_config",
    "stop_process",
    "wait_for_port",
    "write_acl_file",
    "write_password_file",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AclRule:
    """One ACL line. ``pattern`` rules apply to every user, with %u / %c substituted."""

    access: Access
    topic: str
    pattern: bool = False

    def render(self) -> str:
        if any(c in self.topic for c in "\n\r") or not self.topic:
            raise BrokerError(f"invalid ACL topic {self.topic!r}")
        return f"{'pattern' if self.pattern else 'topic'} {self.access} {self.topic}"


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    # The broker may re-read these files (SIGHUP) at any time: it must never see half a file.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Write ``users`` (username -> ``$7$`` hash, see :func:`hash_password`)."""
    lines = []
    for user, hashed in sorted(users.items()):
        if not user or ":" in user or any(c.isspace() for c in user):
            raise BrokerError(f"invalid MQTT username {user!r}")
        if not hashed.startswith("$7$"):
            raise BrokerError(f"password for {user!r} is not a $7$ hash")
        lines.append(f"{user}:{hashed}\n")
    _atomic_write(path, "".join(lines))


def write_acl_file(
    path: Path,
    *,
    patterns: Iterable[AclRule] = (),
    users: Mapping[str, Sequence[AclRule]] | None = None,
) -> None:
    """Write an ACL file: pattern rules for everyone, then per-user topic rules."""
    out = [rule.render() for rule in patterns]
    for user, rules in sorted((users or {}).items()):
        out.append(f"\nuser {user}")
        out.extend(rule.render() for rule in rules)
    _atomic_write(path, "\n".join(out) + "\n")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until ``host:port`` accepts a TCP connection; False when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.02)
    return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a broker saves its state and says goodbye), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """What a managed Mosquitto listens on and whom it lets in."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    tls: TlsFiles | None = None
    tls_port: int = 0
    require_client_certificate: bool = False
    allow_anonymous: bool = True
    password_file: Path | None = None
    acl_file: Path | None = None
    # Persistence lets QoS 1 messages and persistent sessions survive a broker restart.
    persistence: bool = True
    # QoS 1 messages Mosquitto queues per client beyond those in flight; past that it DROPS
    # them (its default is 1000). The coordinator is the one client every device's messages
    # go to, and it acknowledges a message only once handled, so its queue must hold a
    # round's largest burst: every selected device answering a stage at once plus a wave of
    # check-ins. 10,000 covers cohorts of ~5,000 (Bonawitz et al. 2019 run a few hundred
    # per round, 130 % over-selected); at 100 KB per update that is 1 GB of broker memory in
    # the worst case, which the broker, not the coordinator, holds. 0: no limit.
    max_queued_messages: int = 10_000
    # Unacknowledged messages in flight to one client (Mosquitto's default). It does not
    # bound what the coordinator holds (2.0.11 overshoots it under load): its MQTT link's
    # ``max_pending`` does.
    max_inflight_messages: int = 20
    extra: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_queued_messages < 0 or self.max_inflight_messages < 0:
            raise BrokerError("max_queued_messages and max_inflight_messages must be >= 0")
        if not self.allow_anonymous and self.password_file is None and self.tls is None:
            raise BrokerError("a broker without anonymous access needs a password file or TLS")


def render_config(config: BrokerConfig, port: int, tls_port: int | None) -> str:
    """The mosquitto.conf text for ``config`` with concrete ports."""
    d = config.directory
    lines = [
        "per_listener_settings false",
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        f"allow_anonymous {'true' if config.allow_anonymous else 'false'}",
        f"persistence {'true' if config.persistence else 'false'}",
        f"persistence_location {d}/",
        f"log_dest file {d / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"max_queued_messages {config.max_queued_messages}",
        f"max_inflight_messages {config.max_inflight_messages}",
    ]
    if config.password_file is not None:
        lines.append(f"password_file {config.password_file}")
    if config.acl_file is not None:
        lines.append(f"acl_file {config.acl_file}")
    lines += [f"listener {port} {config.host}", *_listener_identity(config)]
    if config.tls is not None and tls_port is not None:
        lines += [
            f"listener {tls_port} {config.host}",
            *_listener_identity(config),
            f"cafile {config.tls.ca_cert}",
            f"certfile {config.tls.server_cert}",
            f"keyfile {config.tls.server_key}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if config.require_client_certificate else 'false'}",
        ]
    lines.extend(config.extra)
    return "\n".join(lines) + "\n"


def _listener_identity(config: BrokerConfig) -> list[str]:
    """Lines that pin each client's id to its username, for a listener that authenticates.

    A client id is a device id, which is not secret: without this, any enrolled device could
    connect with another's id and so close that device's connection and, with a clean
    start, wipe its persistent session (Mosquitto lets the newest connection win). With it,
    Mosquitto replaces the id a client sends by its authenticated username, so a client can
    only ever reach its own session. It refuses clients without a username, so a listener
    that admits anonymous clients (tests, demos) goes without. Mosquitto 2.0.11 reads it per
    listener whatever ``per_listener_settings`` says (before any ``listener`` line it opens
    the default listener on 1883 instead), so it follows each ``listener`` line.
    """
    return [] if config.allow_anonymous else ["use_username_as_clientid true"]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )
    if found is None:
        raise BrokerError(
            "mosquitto is not installed (Debian/Ubuntu: apt-get install -y mosquitto)"
        )
    return found


class MosquittoBroker:
    """A Mosquitto process we own: started on loopback, reloaded on demand, stopped cleanly."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.port = config.port or free_port(config.host)
        self.tls_port: int | None = None
        if config.tls is not None:
            self.tls_port = config.tls_port or free_port(config.host)
        self.config_path = config.directory / "mosquitto.conf"
        # Written once the broker runs, for processes that signal it (SIGHUP to reload).
        self.pid_file = config.directory / "mosquitto.pid"
        self.log_path = config.directory / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while running (for a pid file another process signals)."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        if self.running:
            raise BrokerError("broker already running")
        self.config.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.config_path, render_config(self.config, self.port, self.tls_port), 0o644)
        binary = mosquitto_binary()
        with (self.config.directory / "mosquitto.stderr").open("wb") as stderr:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        for port in ports:
            if not wait_for_port(self.host, port, timeout) or not self.running:
                self.stop()
                raise BrokerError(f"mosquitto did not start on {self.host}:{port}:\n{self.logs()}")
        _atomic_write(self.pid_file, f"{self._proc.pid}\n", 0o644)

    def reload(self) -> None:
        """Make the broker re-read its password and ACL files (SIGHUP)."""
        if self._proc is None or not self.running:
            raise BrokerError("broker is not running")
        self._proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout)

    def logs(self, tail: int = 40) -> str:
        text = ""
        for path in (self.log_path, self.config.directory / "mosquitto.stderr"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-tail:])

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
