"""The report: one timed, self-contained result per check, and the machine it ran on."""

from __future__ import annotations

import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["Check", "Report", "interpreter_info", "run_check"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    ok: bool
    seconds: float
    detail: dict[str, Any]


class CheckFailed(Exception):
    """A check ran and its result was wrong; ``detail`` says what was measured."""

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.detail = detail


def run_check(name: str, fn: Callable[[], dict[str, Any]]) -> Check:
    """Run one check; any exception fails it (a device suite must report, not crash)."""
    start = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except CheckFailed as exc:
        ok, detail = False, {"error": str(exc), **exc.detail}
    except Exception as exc:  # the report names it, and the next check still runs
        tb = traceback.format_exception_only(type(exc), exc)
        ok, detail = False, {"error": "".join(tb).strip()}
    return Check(name=name, ok=ok, seconds=round(time.perf_counter() - start, 4), detail=detail)


def interpreter_info() -> dict[str, Any]:
    """The LiteRT backend the SDK resolves here (or why there is none)."""
    from fedrt.sdk.errors import InterpreterUnavailable
    from fedrt.sdk.interpreter import resolve_interpreter

    try:
        choice = resolve_interpreter()
    except InterpreterUnavailable as exc:
        return {"package": None, "version": None, "error": str(exc)}
    return {"package": choice.package, "version": choice.version}


@dataclass(slots=True, kw_only=True)
class Report:
    machine: str = field(default_factory=platform.machine)
    python: str = field(
        default_factory=lambda: f"{platform.python_implementation()} {platform.python_version()}"
    )
    platform: str = field(default_factory=platform.platform)
    byteorder: str = sys.byteorder
    numpy: str = np.__version__
    interpreter: dict[str, Any] = field(default_factory=interpreter_info)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out
