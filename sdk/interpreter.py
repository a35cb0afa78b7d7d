"""Finds a LiteRT interpreter: ai_edge_litert first, tflite_runtime 2.14 (numpy < 2) as fallback."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from fedrt.sdk.errors import InterpreterUnavailable

__all__ = ["InterpreterChoice", "resolve_interpreter"]

# tflite_runtime's last wheels (2.14) were built against the numpy 1.x C API; imported under
# numpy 2 they load and then crash inside the interpreter, so we refuse them up front.
_TFLITE_RUNTIME_MAX_NUMPY_MAJOR = 1

_HINT = (
    "install the device extra (`pip install 'fedrt[device]'`, which brings ai-edge-litert for "
    "CPython 3.10+ on Linux x86_64/aarch64, macOS arm64 and Windows); on 32-bit Raspberry Pi "
    "OS (armv7) or older Pythons use `pip install tflite-runtime==2.14 'numpy<2'` instead"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class InterpreterChoice:
    """The interpreter class found, and where it came from (for logs and `fedrt device run`)."""

    interpreter_cls: Callable[..., Any]
    package: str
    version: str


def _numpy_major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def resolve_interpreter(
    *,
    import_module: Callable[[str], ModuleType] = importlib.import_module,
    numpy_version: str = np.__version__,
) -> InterpreterChoice:
    """Return the interpreter to use, or raise `InterpreterUnavailable` explaining why.

    ``import_module`` and ``numpy_version`` are injectable so the fallback logic can be tested
    on a machine that has ai_edge_litert installed.
    """
    try:
        litert = import_module("ai_edge_litert.interpreter")
    except ImportError as exc:
        litert_problem = f"ai_edge_litert is not importable ({exc})"
    else:
        return InterpreterChoice(
            interpreter_cls=litert.Interpreter,
            package="ai_edge_litert",
            version=_version_of(import_module, "ai_edge_litert"),
        )

    try:
        tflite = import_module("tflite_runtime.interpreter")
    except ImportError as exc:
        raise InterpreterUnavailable(
            f"no LiteRT interpreter: {litert_problem}; tflite_runtime is not importable "
            f"either ({exc}); {_HINT}"
        ) from exc

    if _numpy_major(numpy_version) > _TFLITE_RUNTIME_MAX_NUMPY_MAJOR:
        raise InterpreterUnavailable(
            f"{litert_problem}; tflite_runtime is installed but needs numpy < 2 and numpy "
            f"{numpy_version} is installed (its wheels are built against the numpy 1.x ABI "
            "and crash under numpy 2); run `pip install 'numpy<2'` in this environment, or "
            f"{_HINT}"
        )
    return InterpreterChoice(
        interpreter_cls=tflite.Interpreter,
        package="tflite_runtime",
        version=_version_of(import_module, "tflite_runtime"),
    )


def _version_of(import_module: Callable[[str], ModuleType], package: str) -> str:
    try:
        module = import_module(package)
    except ImportError:
        return "unknown"
    return str(getattr(module, "__version__", "unknown"))
