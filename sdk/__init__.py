"""The on-device runtime: eligibility, idle-window training on LiteRT, secure updates over MQTT.

Importing ``fedrt.sdk`` loads only the error classes; every other name is imported on first
use (PEP 562), so an app that needs the example store does not pay for paho-mqtt, the
cryptography backend or the model runner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedrt.sdk.errors import (
    BadSignature,
    ChecksumMismatch,
    DeviceStateError,
    DownloadError,
    DownloadRefused,
    ExampleStoreError,
    InsecureUrl,
    InterpreterUnavailable,
    ModelError,
    ModelRejected,
    NotConnected,
    NotEnoughExamples,
    OutboxError,
    RebuildMismatch,
    RemoteError,
    SchedulerError,
    SchemaMismatch,
    SdkConfigError,
    SdkError,
    TlsError,
    TrainStepFailed,
    TransportError,
)

if TYPE_CHECKING:
    from fedrt.sdk.android_state import (
        AndroidDeviceState,
        AndroidReadings,
    )
    from fedrt.sdk.android_trainer import (
        JavaTrainer,
        java_trainer_factory,
    )
    from fedrt.sdk.budget import (
        DailyBudget,
    )
    from fedrt.sdk.checkpoint import (
        Checkpoint,
    )
    from fedrt.sdk.clock import (
        Clock,
        ManualClock,
        SystemClock,
    )
    from fedrt.sdk.credentials import (
        Credentials,
        EnrollmentRefused,
        enroll,
        load_or_create_identity,
    )
    from fedrt.sdk.dedupe import (
        SeenIds,
    )
    from fedrt.sdk.device import (
        Device,
        DeviceStatus,
    )
    from fedrt.sdk.device_config import (
        DeviceConfig,
    )
    from fedrt.sdk.device_file import (
        DeviceFile,
    )
    from fedrt.sdk.device_hub import (
        DeviceHub,
    )
    from fedrt.sdk.device_runtime import (
        DeviceEvent,
    )
    from fedrt.sdk.device_state import (
        BatteryStatus,
        DeviceSnapshot,
        DeviceState,
        NetworkKind,
        PowerSource,
        ThermalStatus,
    )
    from fedrt.sdk.download import (
        DownloadResult,
        download_blob,
        download_model,
        model_signing_payload,
        verify_model_signature,
    )
    from fedrt.sdk.eligibility import (
        EligibilityDecision,
        EligibilityPolicy,
        Ineligible,
        Reason,
    )
    from fedrt.sdk.example_schema import (
        ExampleSchema,
        read_npz,
    )
    from fedrt.sdk.example_store import (
        Batch,
        ExampleStore,
        Retention,
    )
    from fedrt.sdk.interpreter import (
        InterpreterChoice,
        resolve_interpreter,
    )
    from fedrt.sdk.linux_state import (
        LinuxDeviceState,
    )
    from fedrt.sdk.memory_transport import (
        MemoryBroker,
        MemoryTransport,
    )
    from fedrt.sdk.outbox import (
        Outbox,
        OutboxEntry,
        ReliableSender,
        new_msg_id,
    )
    from fedrt.sdk.participant import (
        Participant,
    )
    from fedrt.sdk.participant_commands import (
        ParticipantConfig,
    )
    from fedrt.sdk.process_memory import (
        limit_malloc_arenas,
    )
    from fedrt.sdk.scheduler import (
        JobState,
        JobStatus,
        Outcome,
        SchedulerConfig,
        TrainingJob,
        TrainingPlan,
        TrainingResult,
        TrainingScheduler,
        steps_for,
    )
    from fedrt.sdk.scripted_state import (
        ScriptedDeviceState,
        idle_plugged_in,
    )
    from fedrt.sdk.trainer import (
        LiteRtTrainer,
        TrainerBackend,
    )
    from fedrt.sdk.transport import (
        PahoTransport,
    )
    from fedrt.sdk.transport_base import (
        Message,
        MqttConfig,
        ReconnectBackoff,
        Transport,
    )

_LAZY: dict[str, str] = {
    "AndroidDeviceState": "android_state",
    "AndroidReadings": "android_state",
    "JavaTrainer": "android_trainer",
    "java_trainer_factory": "android_trainer",
    "DailyBudget": "budget",
    "Checkpoint": "checkpoint",
    "Clock": "clock",
    "ManualClock": "clock",
    "SystemClock": "clock",
    "Credentials": "credentials",
    "EnrollmentRefused": "credentials",
    "enroll": "credentials",
    "load_or_create_identity": "credentials",
    "SeenIds": "dedupe",
    "Device": "device",
    "DeviceConfig": "device_config",
    "DeviceEvent": "device_runtime",
    "DeviceStatus": "device",
    "DeviceFile": "device_file",
    "DeviceHub": "device_hub",
    "Participant": "participant",
    "ParticipantConfig": "participant_commands",
    "limit_malloc_arenas": "process_memory",
    "BatteryStatus": "device_state",
    "DeviceSnapshot": "device_state",
    "DeviceState": "device_state",
    "NetworkKind": "device_state",
    "PowerSource": "device_state",
    "ThermalStatus": "device_state",
    "DownloadResult": "download",
    "download_blob": "download",
    "download_model": "download",
    "model_signing_payload": "download",
    "verify_model_signature": "download",
    "EligibilityDecision": "eligibility",
    "EligibilityPolicy": "eligibility",
    "Ineligible": "eligibility",
    "Reason": "eligibility",
    "ExampleSchema": "example_schema",
    "read_npz": "example_schema",
    "Batch": "example_store",
    "ExampleStore": "example_store",
    "Retention": "example_store",
    "InterpreterChoice": "interpreter",
    "resolve_interpreter": "interpreter",
    "LinuxDeviceState": "linux_state",
    "MemoryBroker": "memory_transport",
    "MemoryTransport": "memory_transport",
    "Outbox": "outbox",
    "OutboxEntry": "outbox",
    "ReliableSender": "outbox",
    "new_msg_id": "outbox",
    "JobState": "scheduler",
    "JobStatus": "scheduler",
    "Outcome": "scheduler",
    "SchedulerConfig": "scheduler",
    "TrainingJob": "scheduler",
    "TrainingPlan": "scheduler",
    "TrainingResult": "scheduler",
    "TrainingScheduler": "scheduler",
    "steps_for": "scheduler",
    "ScriptedDeviceState": "scripted_state",
    "idle_plugged_in": "scripted_state",
    "LiteRtTrainer": "trainer",
    "TrainerBackend": "trainer",
    "Message": "transport_base",
    "MqttConfig": "transport_base",
    "PahoTransport": "transport",
    "ReconnectBackoff": "transport_base",
    "Transport": "transport_base",
}

__all__ = [
    "AndroidDeviceState",
    "AndroidReadings",
    "BadSignature",
    "Batch",
    "BatteryStatus",
    "Checkpoint",
    "ChecksumMismatch",
    "Clock",
    "Credentials",
    "DailyBudget",
    "Device",
    "DeviceConfig",
    "DeviceEvent",
    "DeviceFile",
    "DeviceHub",
    "DeviceSnapshot",
    "DeviceState",
    "DeviceStateError",
    "DeviceStatus",
    "DownloadError",
    "DownloadRefused",
    "DownloadResult",
    "EligibilityDecision",
    "EligibilityPolicy",
    "EnrollmentRefused",
    "ExampleSchema",
    "ExampleStore",
    "ExampleStoreError",
    "Ineligible",
    "InsecureUrl",
    "InterpreterChoice",
    "InterpreterUnavailable",
    "JavaTrainer",
    "JobState",
    "JobStatus",
    "LinuxDeviceState",
    "LiteRtTrainer",
    "ManualClock",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "ModelError",
    "ModelRejected",
    "MqttConfig",
    "NetworkKind",
    "NotConnected",
    "NotEnoughExamples",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "Outcome",
    "PahoTransport",
    "Participant",
    "ParticipantConfig",
    "PowerSource",
    "Reason",
    "RebuildMismatch",
    "ReconnectBackoff",
    "ReliableSender",
    "RemoteError",
    "Retention",
    "SchedulerConfig",
    "SchedulerError",
    "SchemaMismatch",
    "ScriptedDeviceState",
    "SdkConfigError",
    "SdkError",
    "SeenIds",
    "SystemClock",
    "ThermalStatus",
    "TlsError",
    "TrainStepFailed",
    "TrainerBackend",
    "TrainingJob",
    "TrainingPlan",
    "TrainingResult",
    "TrainingScheduler",
    "Transport",
    "TransportError",
    "download_blob",
    "download_model",
    "enroll",
    "idle_plugged_in",
    "java_trainer_factory",
    "limit_malloc_arenas",
    "load_or_create_identity",
    "model_signing_payload",
    "new_msg_id",
    "read_npz",
    "resolve_interpreter",
    "steps_for",
    "verify_model_signature",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fedrt.sdk.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
