"""The coordinator's operator API as Python calls: one method per route, its JSON as is."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fedrt.ops.connection import Connection
from fedrt.ops.errors import NotCoordinatorError, OpsConfigError
from fedrt.ops.transport import Transport

Json = dict[str, Any]
# The task lifecycle moves the coordinator accepts at POST /v1/tasks/{id}/{action}.
TASK_ACTIONS = ("start", "pause", "resume", "cancel")
# A manifest is a few KB; the coordinator refuses more than 1 MiB.
_MAX_MANIFEST = 1 << 20


def _seg(value: str) -> str:
    # Ids become one path segment: a "/" or "?" in one must not reach another route.
    return quote(value, safe="")


def _export_parts(export_dir: Path) -> tuple[bytes, bytes]:
    """(manifest.json, model file) of a ``fedrt export`` directory."""
    manifest_path = export_dir / "manifest.json"
    try:
        manifest = manifest_path.read_bytes()
        if len(manifest) > _MAX_MANIFEST:
            raise OpsConfigError(f"{manifest_path} is larger than {_MAX_MANIFEST} bytes")
        model_file = json.loads(manifest)["model_file"]
        if not isinstance(model_file, str) or Path(model_file).name != model_file:
            raise OpsConfigError(f"{manifest_path}: model_file must be a file name")
        return manifest, (export_dir / model_file).read_bytes()
    except OSError as exc:
        raise OpsConfigError(
            f"{export_dir} is not a `fedrt export` directory ({exc.filename}: {exc.strerror})"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise OpsConfigError(f"{manifest_path} is not a fedrt manifest") from None


def _multipart(parts: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, data, ctype in parts:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n'.encode()
        out += f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class OpsClient:
    """Operator calls against one coordinator; raises the ``fedrt.ops.errors`` hierarchy."""

    def __init__(self, connection: Connection) -> None:
        self._t = Transport(connection)

    # ---------------------------------------------------------------- tasks
    def list_tasks(self) -> Json:
        return self._get("/v1/tasks")

    def get_task(self, task_id: str) -> Json:
        return self._get(f"/v1/tasks/{_seg(task_id)}")

    def create_task(
        self,
        *,
        name: str,
        spec: Json | None = None,
        model_dir: str | None = None,
        model_sha256: str | None = None,
        task_id: str | None = None,
    ) -> Json:
        """``model_dir`` is a path on the coordinator's host; else an uploaded version."""
        if (model_dir is None) == (model_sha256 is None):
            raise OpsConfigError("give exactly one of model_dir or model_sha256")
        body: Json = {"name": name, "spec": spec or {}}
        if model_dir is not None:
            body["model_dir"] = model_dir
        if model_sha256 is not None:
            body["model_sha256"] = model_sha256
        if task_id is not None:
            body["task_id"] = task_id
        return self._post("/v1/tasks", body)

    def task_action(self, task_id: str, action: str) -> Json:
        if action not in TASK_ACTIONS:
            raise OpsConfigError(f"task action must be one of {', '.join(TASK_ACTIONS)}")
        return self._post(f"/v1/tasks/{_seg(task_id)}/{action}", None)

    def list_rounds(self, task_id: str) -> Json:
        return self._get(f"/v1/tasks/{_seg(task_id)}/rounds")

    def get_round(self, task_id: str, round_no: int) -> Json:
        return self._get(f"/v1/tasks/{_seg(task_id)}/rounds/{round_no}")

    # ---------------------------------------------------------------- models
    def list_models(self, task_id: str | None = None) -> Json:
        return self._get("/v1/models", {"task_id": task_id} if task_id is not None else None)

    def upload_model(self, export_dir: Path) -> Json:
        """Upload a local ``fedrt export`` directory; the same bytes twice are one version."""
        manifest, model = _export_parts(export_dir)
        raw, ctype = _multipart(
            [("manifest", manifest, "application/json"),
             ("model", model, "application/octet-stream")]
        )  # fmt: skip
        return self._json(self._t.request("POST", "/v1/models", raw=raw, content_type=ctype))

    def promote(self, task_id: str, sha256: str) -> Json:
        return self._post(f"/v1/tasks/{_seg(task_id)}/promote", {"sha256": sha256})

    def rollback(self, task_id: str, to: str | None = None) -> Json:
        """Back to ``to`` (an ancestor version), or to the current version's parent."""
        return self._post(f"/v1/tasks/{_seg(task_id)}/rollback", {"to": to} if to else {})

    # ---------------------------------------------------------------- devices and audit
    def list_devices(self) -> Json:
        return self._get("/v1/devices")

    def revoke_device(self, device_id: str) -> Json:
        return self._post(f"/v1/devices/{_seg(device_id)}/revoke", None)

    def create_enrollment_token(self, *, ttl_s: float | None = None, note: str = "") -> Json:
        body: Json = {"note": note}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return self._post("/v1/enrollment-tokens", body)

    def audit(self, *, after: int = 0, limit: int = 100) -> Json:
        return self._get("/v1/audit", {"after": str(after), "limit": str(limit)})

    # ---------------------------------------------------------------- plumbing
    def _get(self, path: str, query: dict[str, str] | None = None) -> Json:
        return self._json(self._t.request("GET", path, query=query))

    def _post(self, path: str, body: Json | None) -> Json:
        # The coordinator reads a JSON object body on every POST, even an empty one.
        return self._json(self._t.request("POST", path, body=body if body is not None else {}))

    @staticmethod
    def _json(reply: Any) -> Json:
        if not isinstance(reply, dict):
            raise NotCoordinatorError("the coordinator answered with JSON that is not an object")
        return reply


__all__ = ["TASK_ACTIONS", "Json", "OpsClient"]
