"""How a ``Device`` reaches its coordinator and when it may work: ``DeviceConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedrt.sdk.eligibility import EligibilityPolicy
from fedrt.sdk.errors import SdkConfigError
from fedrt.sdk.https_trust import check_url
from fedrt.sdk.scheduler import SchedulerConfig

__all__ = ["DeviceConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """How this device reaches its coordinator and when it may work."""

    data_dir: Path
    coordinator_url: str
    # The task to follow; None: the first task the coordinator announces.
    task_id: str | None = None
    # Override the broker address enrollment returned (e.g. behind NAT or a TLS proxy).
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    # None: mqtts exactly when enrollment said the broker speaks it.
    mqtt_tls: bool | None = None
    # The trust root for both HTTPS (enrollment, downloads) and mqtts: the CA (PEM) that
    # signs the coordinator's and the broker's certificates. None: the system store for
    # HTTPS. Once enrolled, the CA the coordinator handed out is trusted for HTTPS as well.
    ca_file: Path | None = None
    # MQTT 5 unless the broker speaks only 3.1.1 (the embedded amqtt broker).
    mqtt_protocol: int = 5
    policy: EligibilityPolicy = field(default_factory=EligibilityPolicy)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # While idle and not told when to come back, look at eligibility this often.
    poll_s: float = 15.0
    participant: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        # Plain http only to loopback: the token and the password would cross the network.
        check_url(self.coordinator_url, what="coordinator_url")
        if not self.poll_s > 0:
            raise SdkConfigError("poll_s must be > 0")
