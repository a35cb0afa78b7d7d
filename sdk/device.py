"""The ``Device`` facade: what an app embeds to take part in federated rounds.

One event thread owns the round ``Participant`` (sans-I/O) and acts on its commands:
publishing through the on-disk outbox, starting local work (download, then training or
evaluation in idle windows) on a worker thread, and waking for deadlines and scheduled
check-ins. MQTT callbacks and workers only put events on its queue, so the participant
is never touched from two threads. The app's own thread is never blocked.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from fedrt.protocol.topics import (
    coordinator_status,
    device_inbox,
    task_announcements_filter,
)
from fedrt.sdk.credentials import enroll
from fedrt.sdk.device_config import DeviceConfig
from fedrt.sdk.device_runtime import DeviceEvent, DeviceRuntime
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.https_trust import trust_context
from fedrt.sdk.outbox import Outbox, ReliableSender
from fedrt.sdk.transport import MqttConfig

# DeviceConfig and DeviceEvent are re-exported: their import path predates their modules.
__all__ = ["Device", "DeviceConfig", "DeviceEvent", "DeviceStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus:
    device_id: str | None
    task_id: str | None
    state: str
    connected: bool
    round_id: int | None
    rounds_completed: int
    pending_uploads: int
    eligibility: str
    bytes_up: int
    bytes_down: int
    last_detail: str = ""
    # bytes_down by kind: "meta", "file", "graph", "weights", "delta" (model-forms).
    bytes_down_by_kind: dict[str, int] | None = None


class Device(DeviceRuntime):
    """A device taking part in one task's rounds (see the module docstring)."""

    # ------------------------------------------------------------------ app API
    def enroll(self, token: str | None = None) -> str:
        """Enroll once (idempotent): returns the device id."""
        if self.credentials is None:
            if not token:
                raise SdkConfigError("this device is not enrolled: an enrollment token is needed")
            self.credentials = enroll(
                self.config.coordinator_url,
                token,
                self.identity,
                labels=self.config.labels,
                ca_file=self.config.ca_file,
            )
            self.credentials.save(self.config.data_dir)
            log.info("enrolled as %s", self.credentials.device_id)
        return self.credentials.device_id

    def start(self) -> None:
        creds = self.credentials
        if creds is None:
            raise SdkConfigError("enroll() before start()")
        if self._running:
            raise SdkConfigError("device already started")
        self._ssl_context = trust_context(self.config.ca_file, creds.ca_pem)
        tls = creds.mqtt_tls if self.config.mqtt_tls is None else self.config.mqtt_tls
        if tls and self.config.ca_file is None:
            raise SdkConfigError("the broker speaks mqtts: set ca_file to the CA that signs it")
        mqtt = MqttConfig(
            host=self.config.mqtt_host or creds.mqtt_host,
            port=self.config.mqtt_port or creds.mqtt_port,
            client_id=creds.device_id,
            username=creds.mqtt_username,
            password=creds.mqtt_password,
            # MqttConfig turns TLS on with a CA file; ca_file also serves plain-MQTT + HTTPS.
            ca_file=self.config.ca_file if tls else None,
            # A broker that speaks only 3.1.1 (NATS) said so at enrollment.
            protocol=creds.mqtt_protocol or self.config.mqtt_protocol,
            # A configured address overrides the cluster enrollment named.
            fallbacks=() if self.config.mqtt_host else creds.mqtt_nodes,
        )
        self._transport = self._transport_factory(mqtt)
        if not self._network_up:
            self._transport.network_changed(False)
        self._outbox = Outbox(self.config.data_dir / "outbox.sqlite3")
        self._sender = ReliableSender(self._transport, self._outbox)
        inbox_qos = 1 if creds.mqtt_inbox_qos is None else creds.mqtt_inbox_qos
        self._transport.subscribe(device_inbox(creds.device_id), self._on_inbox, qos=inbox_qos)
        # Announcements and presence are retained state, re-read at every (re)connect (the
        # transport subscribes again each time), so QoS 0 loses nothing a device needs;
        # on a NATS cluster each QoS 1 subscription is a replicated JetStream consumer,
        # and three of them per device made connecting a fleet 2.8x slower (issue 17).
        self._transport.subscribe(task_announcements_filter(), self._on_announcement, qos=0)
        # Retained: a new incarnation says the coordinator restarted and lost its rounds.
        self._transport.subscribe(coordinator_status(), self._on_coordinator_status, qos=0)
        if self._task_id is not None:
            # Before the link is up: stale answers leave the outbox before its first flush.
            self._participant = self._new_participant()
            self._restart()
        self._running = True
        if self._hub is not None:
            self._hub.add(self)
        else:
            self._thread = threading.Thread(target=self._loop, name="fedrt-device", daemon=True)
            self._thread.start()
        self._transport.start()

    def stop(self, timeout: float = 10.0) -> None:
        if not self._running:
            return
        self._running = False
        if self._hub is not None:
            self._hub.remove(self, timeout)
        elif self._thread is not None:
            self._events.put(("stop", None))
            self._thread.join(timeout)
            self._thread = None
        if self._work is not None:
            self._work.cancel()
            self._work.join(timeout)
        if self._transport is not None:
            self._transport.close()
        if self._outbox is not None:
            self._outbox.close()

    def network_changed(self, available: bool) -> None:
        """The OS reported the network gone (False) or back (True): the MQTT link is cut at
        once or reconnects at once (Android: from a ConnectivityManager.NetworkCallback)."""
        self._network_up = available
        if self._transport is not None:
            self._transport.network_changed(available)

    def status(self) -> DeviceStatus:
        p = self._participant
        decision = self._last_decision
        return DeviceStatus(
            device_id=self.credentials.device_id if self.credentials else None,
            task_id=self._task_id,
            state=p.state.value if p is not None else "idle",
            connected=bool(self._transport is not None and self._transport.connected),
            round_id=self._round_id,
            rounds_completed=self._rounds_completed,
            pending_uploads=self._sender.pending if self._sender is not None else 0,
            eligibility=str(decision) if decision is not None else "unknown",
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            last_detail=self._last_detail,
            bytes_down_by_kind=dict(self._down_by_kind),  # model-forms
        )
