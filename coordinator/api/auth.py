"""HTTP credentials: the operator's bearer token and devices' MQTT credentials (Basic)."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from fedrt.coordinator.errors import AuthError, NotFoundError
from fedrt.coordinator.security.admin_token import AdminToken
from fedrt.coordinator.security.credentials import CheckedPasswords, Secret
from fedrt.coordinator.store.base import Store

ADMIN = "admin"


def _bearer(request: web.Request) -> bytes | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" else None


def _matches(given: bytes | None, token: Secret | AdminToken) -> bool:
    if isinstance(token, AdminToken):
        return token.accepts(given)
    # compare_digest on bytes: the time taken does not depend on where the tokens differ.
    return hmac.compare_digest(given or b"", token.reveal().encode()) and given is not None


def require_admin(request: web.Request, token: Secret | AdminToken) -> str:
    """``"admin"`` if the request carries ``Authorization: Bearer <admin token>``."""
    if not _matches(_bearer(request), token):
        raise AuthError("admin token required (Authorization: Bearer ...)")
    return ADMIN


def require_metrics_reader(
    request: web.Request, token: Secret | None, admin: Secret | AdminToken
) -> None:
    """Open without a metrics ``token``; with one, that token or the admin token."""
    if token is None:
        return
    given = _bearer(request)
    # Both compared every time: how long it takes does not say which token matched.
    if not (_matches(given, token) | _matches(given, admin)):
        raise AuthError("metrics token required (Authorization: Bearer ...)")


def require_device_or_admin(
    request: web.Request, token: Secret | AdminToken, store: Store, passwords: CheckedPasswords
) -> str:
    """The device id (Basic auth with the MQTT username/password), or ``"admin"``; a
    password that matched before is not hashed again (``passwords``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return require_admin(request, token)
    if scheme.lower() != "basic":
        raise AuthError("device credentials (Basic) or admin token (Bearer) required")
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed Basic credentials") from None
    if not sep:
        raise AuthError("malformed Basic credentials")
    try:
        device = store.get_device(user)
    except NotFoundError:
        device = None
    # Same answer for unknown, revoked and wrong password: nothing to probe.
    if (
        device is None
        or device.revoked
        or not passwords.verify(device.device_id, password, device.credential_hash)
    ):
        raise AuthError("unknown device, revoked device or wrong password")
    return device.device_id


__all__ = ["ADMIN", "require_admin", "require_device_or_admin", "require_metrics_reader"]
