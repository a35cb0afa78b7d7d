"""Who may log in to the embedded broker: the coordinator, or an enrolled device not revoked.

The broker asks on the network loop, where nothing may block: the device's row is read on the
state thread (with every other store call) and its bcrypt hash is checked in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from fedrt.coordinator.errors import NotFoundError
from fedrt.coordinator.security.credentials import verify_password
from fedrt.coordinator.state_thread import StateThread
from fedrt.coordinator.store.base import Store


def embedded_verifier(
    state: StateThread, store: Store, *, coordinator: tuple[str, str]
) -> Callable[[str, str], Awaitable[bool]]:
    """The embedded broker's password check; ``coordinator`` is its (user name, password)."""
    username_c, password_c = coordinator

    async def verify(username: str, password: str) -> bool:
        if username == username_c:
            return hmac.compare_digest(password.encode(), password_c.encode())
        try:
            device = await state.call(store.get_device, username)
        except NotFoundError:
            return False
        if device.revoked:
            return False
        return await asyncio.to_thread(verify_password, password, device.credential_hash)

    return verify


__all__ = ["embedded_verifier"]
