"""The operator's bearer token; one kept in a file follows the file, so it rotates live."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from fedrt.coordinator.errors import ConfigError
from fedrt.coordinator.security.credentials import Secret

log = logging.getLogger(__name__)

# Shorter tokens are refused everywhere (config validation says the same).
MIN_TOKEN_CHARS = 16


class AdminToken:
    """Checks bearer tokens against the admin token, re-reading ``path`` when it changes.

    Without ``path`` (a token from the config or environment) the token is fixed. With one,
    each check costs a ``stat``; when the file's state changes its token becomes current and
    the one it replaces is still accepted for ``grace_s`` seconds, so operators and scripts
    can switch over while the service keeps running.
    """

    def __init__(
        self,
        token: Secret,
        *,
        path: Path | None = None,
        grace_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._current = token
        self._previous: Secret | None = None
        self._previous_until = 0.0
        self._path = path
        self._grace_s = grace_s
        self._clock = clock
        self._seen = _file_state(path) if path is not None else None

    @property
    def current(self) -> Secret:
        self._refresh()
        return self._current

    def accepts(self, given: bytes | None) -> bool:
        """True if ``given`` is the current token, or the previous one within its grace."""
        self._refresh()
        ok = _equal(given, self._current)
        if self._previous is not None:
            if self._clock() < self._previous_until:
                # Compared whenever it is live: the time taken does not say which matched.
                ok |= _equal(given, self._previous)
            else:
                self._previous = None
        return ok and given is not None

    def _refresh(self) -> None:
        if self._path is None:
            return
        state = _file_state(self._path)
        if state == self._seen:
            return
        self._seen = state
        try:
            token = self._path.read_text().strip()
        except OSError as exc:
            log.error("cannot read the admin token file %s (%s): keeping the token in use",
                      self._path, exc.strerror)  # fmt: skip
            return
        if len(token) < MIN_TOKEN_CHARS:
            log.error("%s holds no usable admin token: keeping the token in use", self._path)
            return
        if hmac.compare_digest(token.encode(), self._current.reveal().encode()):
            return
        self._previous, self._current = self._current, Secret(token)
        self._previous_until = self._clock() + self._grace_s
        log.info("admin token rotated (%s); the previous one is accepted for %g s more",
                 self._path, self._grace_s)  # fmt: skip


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _equal(given: bytes | None, token: Secret) -> bool:
    # compare_digest on bytes: the time taken does not depend on where the tokens differ.
    return hmac.compare_digest(given or b"", token.reveal().encode())


def write_admin_token(path: Path) -> Secret:
    """Replace ``path`` with a new random token (0600), atomically: readers see old or new."""
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the admin token to {path}: {exc.strerror}") from None
    return Secret(token)


__all__ = ["MIN_TOKEN_CHARS", "AdminToken", "write_admin_token"]
