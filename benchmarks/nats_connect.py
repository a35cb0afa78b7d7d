"""What a device's QoS 1 subscriptions cost a NATS cluster when a fleet connects:
``python -m fedrt.benchmarks.nats_connect N``.

Starts a 3-node cluster (``coordinator.broker.nats``) with N enrolled devices, then connects
them one after another as MQTT 3.1.1 persistent sessions, each subscribing to its inbox, the
announcements and the coordinator's presence: all three at QoS 1, then (a fresh cluster) the
inbox at QoS 1 and the other two at QoS 0, which is what the SDK does (``sdk.device``). Each
QoS 1 subscription is a JetStream consumer replicated over the nodes (a Raft group each).
Prints the seconds each took and the load average.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fedrt.coordinator.broker.nats import NatsCluster
from fedrt.coordinator.broker.nats_auth import NatsAuth
from fedrt.coordinator.records import DeviceRecord
from fedrt.coordinator.security.credentials import bcrypt_hash
from fedrt.protocol.topics import coordinator_status, device_inbox, task_announcements_filter

__all__ = ["main"]

_TIMEOUT_S = 30.0


def _connect(host: str, port: int, user: str, password: str, qos_rest: int) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311, clean_session=False
    )
    client.username_pw_set(user, password)
    acked: list[int] = []
    client.on_subscribe = lambda c, u, mid, rcs, p: acked.append(mid)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    wanted = [(device_inbox(user), 1), (task_announcements_filter(), qos_rest),
              (coordinator_status(), qos_rest)]  # fmt: skip
    _, mid = client.subscribe(wanted)
    deadline = time.monotonic() + _TIMEOUT_S
    while mid not in acked:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{user}: no SUBACK in {_TIMEOUT_S} s")
        time.sleep(0.005)
    return client


def _run(n: int, qos_rest: int) -> float:
    with tempfile.TemporaryDirectory(prefix="fedrt-nats-connect-") as tmp:
        cluster = NatsCluster(Path(tmp) / "nats")
        cluster.directory.mkdir(parents=True)
        passwords = {f"dev-{uuid.uuid4().hex[:12]}": secrets.token_urlsafe(16) for _ in range(n)}
        coordinator_hash = bcrypt_hash(secrets.token_urlsafe(16))
        auth = NatsAuth(auth_file=cluster.auth_path, coordinator_username="fedrt-coordinator",
                        coordinator_password_hash=coordinator_hash)  # fmt: skip
        auth.sync([
            DeviceRecord(device_id=d, credential_hash=bcrypt_hash(p), public_key=bytes(32),
                         enrolled_at=0.0)
            for d, p in passwords.items()
        ])  # fmt: skip
        with cluster:
            clients = []
            started = time.monotonic()
            try:
                for i, (user, password) in enumerate(passwords.items()):
                    host, port = cluster.mqtt_addresses[i % len(cluster.nodes)]
                    clients.append(_connect(host, port, user, password, qos_rest))
                return time.monotonic() - started
            finally:
                for client in clients:
                    client.disconnect()
                    client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 100
    for label, qos_rest in (("inbox, announcements, presence at QoS 1", 1),
                            ("inbox at QoS 1, the other two at QoS 0", 0)):  # fmt: skip
        seconds = _run(n, qos_rest)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{label}: {n} devices in {seconds:.1f} s ({n / seconds:.1f}/s), load {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
