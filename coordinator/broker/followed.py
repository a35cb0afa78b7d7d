"""The topic filters a coordinator link follows, kept on disk across a crash.

The link's MQTT session is persistent, so the broker keeps its subscriptions when the process
dies: a cohort topic followed for a round that was running then stays subscribed after the
restart, which the new process knows nothing of (on NATS each is a JetStream consumer, one
more after every crash). The link writes what it follows here and, at its first connect,
unsubscribes whatever the file lists that it no longer follows.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["FollowedFile"]


class FollowedFile:
    """A JSON list of topic filters; a missing or unreadable file is an empty list."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return []
        if not isinstance(data, list) or not all(isinstance(f, str) for f in data):
            log.warning("ignoring %s: not a list of topic filters", self.path)
            return []
        return data

    def save(self, filters: Iterable[str]) -> None:
        """Replace the list at once (a crash leaves the old or the new one, never half)."""
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        try:
            tmp.write_text(json.dumps(list(filters)))
            os.replace(tmp, self.path)
        except OSError as exc:
            # Only stale subscriptions after a crash are at stake: worth a warning, no more.
            log.warning("cannot write %s: %s", self.path, exc)
            tmp.unlink(missing_ok=True)
