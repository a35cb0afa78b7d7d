"""Device credentials for a NATS cluster: one account, per-device users and permissions.

The NATS twin of ``broker.mosquitto_auth``. After every enrollment or revocation the
coordinator rewrites the ``auth.conf`` every node includes and SIGHUPs the nodes. The
permissions give the Mosquitto ACL's guarantees (``topics.device_acl_patterns``), spelled
per user since NATS has no ``%u``: a device publishes only on its own up-topics and reads
only its own inbox and the public announcements. Three NATS-specific points, measured on
nats-server 2.9.10 (docs/coordinator.md, "NATS cluster"):

- an MQTT filter ``a/b/#`` is checked as TWO subjects, ``a.b`` and ``a.b.>``;
- a QoS 1 subscription is a JetStream consumer delivering to ``$MQTT.sub.<nuid>``, so an
  MQTT client needs subscribe permission on ``$MQTT.sub.>``;
- with that permission, the same credentials on the core NATS port would read every other
  device's deliveries: every device user is limited to ``allowed_connection_types:
  ["MQTT"]``. The coordinator user may also connect on the core port (``STANDARD``): several
  instances read the device topics there in a queue group (``broker.reading``), and it
  reads every device's traffic anyway.

Passwords are bcrypt hashes (the only hash nats-server reads); the file is 0600.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrt.coordinator.broker.settings import BrokerConfig
from fedrt.coordinator.devices.enrollment import BrokerAuth
from fedrt.coordinator.errors import BrokerError, ConfigError
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.security.credentials import bcrypt_hash, is_bcrypt
from fedrt.protocol.topics import RULES, coordinator_acl, device_acl

log = logging.getLogger(__name__)

__all__ = [
    "ACCOUNT",
    "COORDINATOR_CONNECTIONS",
    "DEVICE_CONNECTIONS",
    "MQTT_DELIVERY_SUBJECTS",
    "NatsAuth",
    "NatsPermissions",
    "check_nats_topic",
    "filter_to_subjects",
    "nats_broker_auth",
    "render_auth_conf",
]

# One account for fedrt's devices and coordinator; it carries the MQTT JetStream streams.
ACCOUNT = "FEDRT"
# Devices speak MQTT only (see the docstring); the coordinator also reads on the core port.
DEVICE_CONNECTIONS = ("MQTT",)
COORDINATOR_CONNECTIONS = ("STANDARD", "MQTT")
# Where the JetStream consumers behind QoS 1 subscriptions deliver (see the docstring).
MQTT_DELIVERY_SUBJECTS = "$MQTT.sub.>"
# A topic level NATS can carry as a subject token: no '.', which is its separator, no
# wildcard characters and no whitespace (nats-server refuses a topic with a space).
_LEVEL = re.compile(r"[A-Za-z0-9_-]+|[+#]")


def check_nats_topic(topic: str) -> str:
    """``topic`` if a NATS node can carry it as an MQTT topic or filter, else BrokerError."""
    levels = topic.split("/")
    if not topic or not all(_LEVEL.fullmatch(level) for level in levels):
        raise BrokerError(
            f"topic {topic!r} cannot travel through NATS: levels may hold only letters, digits,"
            " '_' and '-' ('.' is NATS's separator)"
        )
    if "#" in levels[:-1]:
        raise BrokerError(f"'#' must be the last level of {topic!r}")
    return topic


def filter_to_subjects(topic_filter: str) -> tuple[str, ...]:
    """The NATS subjects an MQTT topic filter is checked as: ``/`` is ``.``, ``+`` is ``*``,
    and a trailing ``#`` both the parent itself and ``>`` below it (``a/b/#``: ``a.b`` and
    ``a.b.>``)."""
    levels = check_nats_topic(topic_filter).split("/")
    tokens = ["*" if level == "+" else level for level in levels]
    if tokens[-1] != "#":
        return (".".join(tokens),)
    parent = tokens[:-1]
    return (*([".".join(parent)] if parent else []), ".".join([*parent, ">"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsPermissions:
    """What one user may publish and subscribe to (NATS subjects)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    @classmethod
    def from_acl(cls, entries: Sequence[tuple[str, str]]) -> NatsPermissions:
        """From (access, MQTT filter) grants, plus the MQTT delivery subjects to read."""
        pub: list[str] = []
        sub: list[str] = [MQTT_DELIVERY_SUBJECTS]
        for access, topic_filter in entries:
            subjects = filter_to_subjects(topic_filter)
            if access in ("write", "readwrite"):
                pub.extend(subjects)
            if access in ("read", "readwrite"):
                sub.extend(subjects)
        return cls(publish=tuple(dict.fromkeys(pub)), subscribe=tuple(dict.fromkeys(sub)))


def device_permissions(device_id: str) -> NatsPermissions:
    return NatsPermissions.from_acl([(e.access, e.topic) for e in device_acl(device_id)])


def coordinator_permissions() -> NatsPermissions:
    return NatsPermissions.from_acl([(e.access, e.topic) for e in coordinator_acl()])


def _user_entry(
    username: str, password_hash: str, perms: NatsPermissions, connections: Sequence[str]
) -> str:
    if not is_bcrypt(password_hash):
        raise BrokerError(f"password of NATS user {username!r} is not a bcrypt hash")
    check_nats_topic(username)  # a device id: one topic level, which NATS must carry
    q = json.dumps  # NATS config strings take JSON's quoting
    return (
        f"      {{user: {q(username)}, password: {q(password_hash)},\n"
        f"       allowed_connection_types: {q(list(connections))},\n"
        f"       permissions: {{publish: {{allow: {q(list(perms.publish))}}},"
        f" subscribe: {{allow: {q(list(perms.subscribe))}}}}}}}"
    )


def render_auth_conf(
    users: dict[str, tuple[str, NatsPermissions]], *, coordinators: Sequence[str] = ()
) -> str:
    """``auth.conf``: the one account with JetStream, and its users (name -> hash, perms);
    the ``coordinators`` may connect on the core port too, every other user on MQTT only."""
    entries = ",\n".join(
        _user_entry(u, h, p, COORDINATOR_CONNECTIONS if u in coordinators else DEVICE_CONNECTIONS)
        for u, (h, p) in sorted(users.items())
    )
    return (
        "# fedrt NATS users: written by the coordinator (broker/nats_auth.py); do not edit.\n"
        "accounts {\n"
        f"  {ACCOUNT} {{\n"
        "    jetstream: enabled\n"
        "    users: [\n"
        f"{entries}\n"
        "    ]\n"
        "  }\n"
        "}\n"
    )


def nats_broker_auth(config: BrokerConfig, coordinator_username: str) -> NatsAuth:
    """The ``NatsAuth`` a ``[broker]`` section with ``nats_auth_file`` describes."""
    if config.nats_auth_file is None or config.password is None:
        raise ConfigError("broker.nats_auth_file and broker.password go together")
    pid_files = config.pid_paths
    return NatsAuth(
        auth_file=config.nats_auth_file,
        coordinator_username=coordinator_username,
        coordinator_password_hash=bcrypt_hash(config.password.reveal()),
        reload=NatsAuth.reload_from_pid_files(pid_files) if pid_files else None,
    )


class NatsAuth(BrokerAuth):
    """The cluster's ``auth.conf`` from the store, then SIGHUP to every node."""

    def __init__(
        self,
        *,
        auth_file: Path,
        coordinator_username: str,
        coordinator_password_hash: str,
        reload: Callable[[], None] | None = None,
    ) -> None:
        self.auth_file = Path(auth_file)
        self.coordinator_username = coordinator_username
        self._coordinator_hash = coordinator_password_hash
        self._reload = reload
        # The round's topics must be ones NATS carries; checked once, here, not per message.
        for rule in RULES:
            check_nats_topic(rule.template.format(task_id="t", device_id="d", cohort_key="k"))

    def hash_password(self, password: str) -> str:
        return bcrypt_hash(password)

    @staticmethod
    def reload_from_pid_files(pid_files: Sequence[Path]) -> Callable[[], None]:
        """SIGHUP to each node whose pid file exists; a node that is down reads the file when
        it starts. No node reachable at all is an error: the change would reach no one."""

        def reload() -> None:
            signalled, errors = 0, []
            for pid_file in pid_files:
                try:
                    os.kill(int(Path(pid_file).read_text().strip()), signal.SIGHUP)
                    signalled += 1
                except (OSError, ValueError) as exc:
                    errors.append(f"{pid_file}: {exc}")
            if signalled == 0:
                raise BrokerError(f"cannot signal any NATS node: {'; '.join(errors)}")

        return reload

    def sync(self, devices: Sequence[DeviceRecord]) -> None:
        users = {}
        for d in devices:
            if d.revoked:
                continue
            if not is_bcrypt(d.credential_hash):
                # Enrolled while the coordinator managed a Mosquitto: NATS cannot read its
                # hash, and the password is not kept. It must enroll again.
                log.warning("device %s has no bcrypt credential: it cannot use NATS", d.device_id)
                continue
            users[d.device_id] = (d.credential_hash, device_permissions(d.device_id))
        users[self.coordinator_username] = (self._coordinator_hash, coordinator_permissions())
        text = render_auth_conf(users, coordinators=(self.coordinator_username,))
        try:
            tmp = self.auth_file.with_name(f".{self.auth_file.name}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, self.auth_file)
        except OSError as exc:
            raise BrokerError(f"cannot write NATS auth file: {exc}") from None
        if self._reload is not None:
            self._reload()
