"""Logging set-up of the ``fedrt`` commands: level and format from flags or ``FEDRT_LOG_*``.

Only the commands call `configure`; importing any fedrt module changes no logger, so an app
that embeds the SDK or the coordinator keeps its own logging set-up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from fedrt.errors import FedrtError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("amqtt", "transitions")
# LogRecord attributes that are not extra fields (the rest go into the JSON object).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class LogConfigError(FedrtError):
    """``FEDRT_LOG_LEVEL`` / ``FEDRT_LOG_FORMAT`` (or the flags) name no known value."""


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a record is emitted, not when the handler
    was made: a command run in-process (tests, embedding apps) may swap and close stderr."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool)) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def resolve(
    level: str | None, fmt: str | None, default_level: str, environ: Mapping[str, str]
) -> tuple[str, str]:
    """Flag > ``FEDRT_LOG_LEVEL``/``FEDRT_LOG_FORMAT`` > the command's default."""
    chosen_level = (level or environ.get("FEDRT_LOG_LEVEL") or default_level).upper()
    chosen_format = (fmt or environ.get("FEDRT_LOG_FORMAT") or "text").lower()
    if chosen_level not in LEVELS:
        raise LogConfigError(f"log level must be one of {', '.join(LEVELS)}, got {chosen_level!r}")
    if chosen_format not in FORMATS:
        raise LogConfigError(f"log format must be text or json, got {chosen_format!r}")
    return chosen_level, chosen_format


def configure(
    level: str | None = None,
    fmt: str | None = None,
    *,
    default_level: str = "INFO",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Set up the root logger for a ``fedrt`` command (stderr)."""
    chosen_level, chosen_format = resolve(
        level, fmt, default_level, os.environ if environ is None else environ
    )
    handler = StderrHandler()
    json_lines = chosen_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, chosen_level))
    # The embedded broker's amqtt (and its state machines) log every step at INFO: a command
    # keeps them at WARNING unless DEBUG was asked for. Only a command does this, never an
    # import, so an app embedding fedrt keeps its own logging set-up.
    quiet = logging.DEBUG if chosen_level == "DEBUG" else logging.WARNING
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(quiet)


__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "LogConfigError",
    "StderrHandler",
    "configure",
    "resolve",
]
