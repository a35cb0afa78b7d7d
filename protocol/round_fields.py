"""Field checks shared by the round messages: each raises ``MalformedMessage`` naming the field."""

from __future__ import annotations

import enum
import math

from fedrt.protocol.round_errors import InvalidTopic, MalformedMessage
from fedrt.protocol.topics import check_cohort_key, check_id

U64_MAX = 2**64 - 1
# An MQTT packet holds at most 256 MiB; 128 MiB leaves room for a 40M-parameter model at
# 24 bits per coordinate, far beyond what a phone trains.
MAX_PAYLOAD = 128 * 1024 * 1024
MAX_TEXT = 2048
# A week: pace steering never needs to push a device further away than that.
MAX_WINDOW = 7 * 24 * 3600.0


def fail(cls: type, msg: str) -> MalformedMessage:
    return MalformedMessage(f"{cls.__name__}: {msg}")


def u64(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= U64_MAX:
            raise fail(type(obj), f"{name} must be an integer in [0, 2^64), got {v!r}")


def positive(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= U64_MAX:
            raise fail(type(obj), f"{name} must be a positive integer, got {v!r}")


def seconds(obj: object, *names: str, upper: float = MAX_WINDOW) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, float | int) or not (math.isfinite(v) and 0.0 <= v <= upper):
            raise fail(type(obj), f"{name} must be seconds in [0, {upper}], got {v!r}")


def ident(obj: object, name: str) -> None:
    try:
        check_id(getattr(obj, name), name.replace("_", " "))
    except InvalidTopic as exc:
        raise fail(type(obj), str(exc)) from None


def cohort(obj: object, name: str) -> None:
    try:
        check_cohort_key(getattr(obj, name))
    except InvalidTopic as exc:
        raise fail(type(obj), str(exc)) from None


def text(obj: object, name: str, limit: int = MAX_TEXT) -> None:
    v = getattr(obj, name)
    if not isinstance(v, str) or len(v) > limit:
        raise fail(type(obj), f"{name} must be a string of at most {limit} characters")


def blob(obj: object, name: str, limit: int = MAX_PAYLOAD) -> None:
    v = getattr(obj, name)
    if not isinstance(v, bytes) or len(v) > limit:
        raise fail(type(obj), f"{name} must be at most {limit} bytes")


def enum_member(obj: object, name: str, kind: type[enum.IntEnum]) -> None:
    if not isinstance(getattr(obj, name), kind):
        raise fail(type(obj), f"{name} must be a {kind.__name__}")


__all__ = [
    "MAX_PAYLOAD",
    "MAX_TEXT",
    "MAX_WINDOW",
    "U64_MAX",
    "blob",
    "cohort",
    "enum_member",
    "fail",
    "ident",
    "positive",
    "seconds",
    "text",
    "u64",
]
