"""One JSON request to the coordinator over urllib; every failure mapped to an ``OpsError``."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from fedrt.ops.connection import ENV_CA_FILE, ENV_URL, Connection
from fedrt.ops.errors import (
    ApiError,
    AuthRefusedError,
    ConflictError,
    NotCoordinatorError,
    NotFoundError,
    OpsConfigError,
    RateLimitedError,
    ServerError,
    TlsError,
    UnreachableError,
)

# Replies are JSON listings; the largest (1000 audit entries, every model) is a few MB.
MAX_REPLY_BYTES = 64 * 1024 * 1024
_STATUS_ERRORS: dict[int, type[ApiError]] = {401: AuthRefusedError, 404: NotFoundError,
                                              409: ConflictError}  # fmt: skip


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would re-send the Authorization header to wherever a redirect points.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Transport:
    """Sends requests with the admin token and decodes the JSON replies."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if connection.is_https:
            handlers.append(urllib.request.HTTPSHandler(context=connection.ssl_context()))
        if connection.is_local:
            # A proxy from the environment would carry loopback traffic off the machine.
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        """The decoded JSON reply of ``method path``; raises an ``OpsError`` otherwise."""
        url = self.connection.base_url + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Authorization": f"Bearer {self.connection.token}", "Accept": "application/json"}
        data = raw
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode()
            except ValueError:  # NaN or infinity: no JSON has them
                raise OpsConfigError("request values must be finite numbers") from None
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        # The scheme is http(s), checked by Connection.
        req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with self._opener.open(req, timeout=self.connection.timeout_s) as resp:
                status, payload = resp.status, resp.read(MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._refusal(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return self._decode(status, payload)

    def _decode(self, status: int, payload: bytes) -> Any:
        if len(payload) > MAX_REPLY_BYTES:
            raise NotCoordinatorError(f"reply larger than {MAX_REPLY_BYTES} bytes")
        try:
            return json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise NotCoordinatorError(
                f"{self.connection.base_url} answered HTTP {status} with something other "
                f"than JSON: is {ENV_URL} / --url the coordinator's address?"
            ) from None

    def _refusal(self, exc: urllib.error.HTTPError) -> Exception:
        where = self.connection.base_url
        if 300 <= exc.code < 400:
            location = exc.headers.get("Location", "?")
            return NotCoordinatorError(
                f"{where} redirects to {location}; the admin token is not sent across "
                "redirects: pass the final address with --url"
            )
        try:
            error = json.loads(exc.read(64 * 1024))["error"]
            kind, message = str(error["type"]), str(error["message"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, OSError):
            return NotCoordinatorError(
                f"{where} answered HTTP {exc.code} without the coordinator's error JSON: "
                f"is {ENV_URL} / --url the coordinator's address?"
            )
        if exc.code == 401:
            message = (
                f"the admin token was refused: check {self.connection.token_source} "
                f"(the coordinator said: {message})"
            )
        if exc.code == 429:
            retry = _retry_after(exc.headers.get("Retry-After"))
            return RateLimitedError(
                f"{message}: retry in {retry:g} s", status=429, error_type=kind, retry_after=retry
            )
        cls = _STATUS_ERRORS.get(exc.code, ServerError if exc.code >= 500 else ApiError)
        if cls is ServerError:
            message += " (the coordinator failed: its log says why)"
        return cls(message, status=exc.code, error_type=kind)

    def _unreachable(self, reason: object) -> Exception:
        where = self.connection.base_url
        if isinstance(reason, ssl.SSLCertVerificationError):
            return TlsError(
                f"cannot verify the certificate of {where} ({reason.verify_message}): pass "
                f"the coordinator's CA with --ca-file or {ENV_CA_FILE} (with tls = "
                '"self-signed" it is DATA_DIR/tls/ca.crt on the coordinator)'
            )
        if isinstance(reason, ssl.SSLError):
            return TlsError(
                f"TLS with {where} failed ({reason.reason or reason}): is it serving https "
                "on this port? An http:// coordinator needs an http:// URL"
            )
        if isinstance(reason, TimeoutError):
            return UnreachableError(
                f"no answer from {where} within {self.connection.timeout_s:g} s: is the "
                "coordinator running and reachable? (--timeout waits longer)"
            )
        if isinstance(reason, http.client.RemoteDisconnected | http.client.BadStatusLine):
            hint = "" if self.connection.is_https else " If it serves HTTPS, use an https:// URL."
            return UnreachableError(f"{where} closed the connection without an answer.{hint}")
        detail = getattr(reason, "strerror", None) or str(reason)
        return UnreachableError(
            f"cannot reach the coordinator at {where} ({detail}): is it running? "
            f"Check {ENV_URL} or --url"
        )


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value or "1"))
    except ValueError:
        return 1.0


__all__ = ["MAX_REPLY_BYTES", "Transport"]
