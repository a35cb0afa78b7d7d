"""Device credentials for an external Mosquitto: its password and ACL files, then SIGHUP.

The ``BrokerAuth`` of a coordinator that manages a Mosquitto it does not embed: after every
enrollment or revocation the files are rewritten from the store (``broker.mosquitto``'s
atomic writers) and the broker re-reads them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from fedrt.coordinator.broker.mosquitto import AclRule, write_acl_file, write_password_file
from fedrt.coordinator.devices.enrollment import BrokerAuth
from fedrt.coordinator.errors import BrokerError
from fedrt.coordinator.records import DeviceRecord
from fedrt.protocol.topics import coordinator_acl, device_acl_patterns


class MosquittoFileAuth(BrokerAuth):
    """Mosquitto ``password_file`` + ``acl_file``, then SIGHUP so the broker re-reads them."""

    def __init__(
        self,
        *,
        password_file: Path,
        acl_file: Path,
        coordinator_username: str,
        coordinator_password_hash: str,
        reload: Callable[[], None] | None = None,
        coordinator_accounts: Sequence[str] = (),
    ) -> None:
        self.password_file = Path(password_file)
        self.acl_file = Path(acl_file)
        self.coordinator_username = coordinator_username
        # The other instances' users (``BrokerConfig.coordinator_accounts``): same password.
        self.coordinators = sorted({coordinator_username, *coordinator_accounts})
        self._coordinator_hash = coordinator_password_hash
        self._reload = reload

    @staticmethod
    def reload_from_pid_file(pid_file: Path) -> Callable[[], None]:
        """A reload hook for a Mosquitto we do not own: SIGHUP to the pid in ``pid_file``."""

        def reload() -> None:
            try:
                pid = int(Path(pid_file).read_text().strip())
                os.kill(pid, signal.SIGHUP)
            except (OSError, ValueError) as exc:
                raise BrokerError(f"cannot signal mosquitto via {pid_file}: {exc}") from None

        return reload

    def sync(self, devices: Sequence[DeviceRecord]) -> None:
        users = {d.device_id: d.credential_hash for d in devices if not d.revoked}
        users.update(dict.fromkeys(self.coordinators, self._coordinator_hash))
        patterns = [
            AclRule(access=e.access, topic=e.topic, pattern=True) for e in device_acl_patterns()
        ]
        mine = [AclRule(access=e.access, topic=e.topic) for e in coordinator_acl()]
        try:
            write_password_file(self.password_file, users)
            write_acl_file(
                self.acl_file, patterns=patterns, users=dict.fromkeys(self.coordinators, mine)
            )
        except OSError as exc:
            raise BrokerError(f"cannot write broker auth files: {exc}") from None
        if self._reload is not None:
            self._reload()


__all__ = ["MosquittoFileAuth"]
