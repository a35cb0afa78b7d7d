"""The REST API's JSON request bodies: pydantic models that validate them and give their schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from fedrt.coordinator.devices.enrollment import DEFAULT_TOKEN_TTL_S, MAX_TOKEN_TTL_S
from fedrt.coordinator.errors import BadRequestError
from fedrt.coordinator.tasks.spec import TaskSpec
from fedrt.coordinator.validation import JsonFloat, JsonStr, WireModel

SHA256_PATTERN = "^[0-9a-f]{64}$"
# protocol.topics.check_id: an id is a topic level and an MQTT username.
TASK_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Sha256 = Annotated[JsonStr, Field(pattern=SHA256_PATTERN)]
_BASE64 = {"contentEncoding": "base64"}
# Raw Ed25519: 32-byte keys and 64-byte signatures, padded base64.
Ed25519Key = Annotated[JsonStr, Field(pattern="^[A-Za-z0-9+/]{43}=$", json_schema_extra=_BASE64)]
Ed25519Signature = Annotated[
    JsonStr, Field(pattern="^[A-Za-z0-9+/]{86}==$", json_schema_extra=_BASE64)
]
LabelKey = Annotated[JsonStr, Field(min_length=1, max_length=64)]
LabelValue = Annotated[JsonStr, Field(max_length=256)]


class EnrollRequest(WireModel):
    """A device's one-time enrollment token, its Ed25519 key and the proof it holds it."""

    token: JsonStr = Field(min_length=8, max_length=256)
    public_key: Ed25519Key
    proof: Ed25519Signature
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=16)


class TokenRequest(WireModel):
    """A one-time enrollment token to create."""

    ttl_s: JsonFloat = Field(DEFAULT_TOKEN_TTL_S, gt=0, le=MAX_TOKEN_TTL_S)
    note: JsonStr = Field("", max_length=200)


class TaskCreate(WireModel):
    """A task to create, from exactly one of an uploaded version (``model_sha256``) or a
    ``fedrt export`` directory on the coordinator's host (``model_dir``)."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["model_sha256"]}, {"required": ["model_dir"]}]}
    )

    name: JsonStr = Field(min_length=1, max_length=200)
    # None: a random one.
    task_id: Annotated[JsonStr, Field(pattern=TASK_ID_PATTERN)] | None = None
    model_sha256: Sha256 | None = None
    model_dir: Annotated[JsonStr, Field(min_length=1, pattern="^[^\\x00]*$")] | None = None
    spec: TaskSpec = Field(default_factory=TaskSpec)

    @model_validator(mode="after")
    def _one_model(self) -> TaskCreate:
        if (self.model_sha256 is None) == (self.model_dir is None):
            raise BadRequestError("give exactly one of model_sha256 (uploaded) or model_dir")
        return self


class RollbackRequest(WireModel):
    """The ancestor version to roll back to."""

    # None: the parent version.
    to: Sha256 | None = None


class PromoteRequest(WireModel):
    """The version to make the task's current model."""

    sha256: Sha256


# Every JSON request body the API takes (the OpenAPI components come from these).
REQUEST_BODIES: tuple[type[WireModel], ...] = (
    EnrollRequest,
    PromoteRequest,
    RollbackRequest,
    TaskCreate,
    TokenRequest,
)

__all__ = [
    "REQUEST_BODIES", "SHA256_PATTERN", "TASK_ID_PATTERN", "EnrollRequest", "PromoteRequest",
    "RollbackRequest", "TaskCreate", "TokenRequest",
]  # fmt: skip
