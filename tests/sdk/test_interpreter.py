"""Interpreter resolution: ai_edge_litert first, tflite_runtime only under numpy < 2."""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest

from fedrt.sdk.errors import InterpreterUnavailable
from fedrt.sdk.interpreter import resolve_interpreter


class FakeInterpreter:
    pass


def importer(available: dict[str, types.ModuleType]) -> Callable[[str], types.ModuleType]:
    def import_module(name: str) -> types.ModuleType:
        if name not in available:
            raise ImportError(f"No module named {name!r}")
        return available[name]

    return import_module


def tflite_modules() -> dict[str, types.ModuleType]:
    interp = types.ModuleType("tflite_runtime.interpreter")
    interp.Interpreter = FakeInterpreter  # type: ignore[attr-defined]
    pkg = types.ModuleType("tflite_runtime")
    pkg.__version__ = "2.14.0"  # type: ignore[attr-defined]
    return {"tflite_runtime.interpreter": interp, "tflite_runtime": pkg}


def test_prefers_ai_edge_litert_when_installed() -> None:
    choice = resolve_interpreter()
    assert choice.package == "ai_edge_litert"
    assert choice.interpreter_cls.__name__ == "Interpreter"


def test_falls_back_to_tflite_runtime_under_numpy_1() -> None:
    choice = resolve_interpreter(import_module=importer(tflite_modules()), numpy_version="1.26.4")
    assert choice.package == "tflite_runtime"
    assert choice.interpreter_cls is FakeInterpreter
    assert choice.version == "2.14.0"


def test_refuses_tflite_runtime_under_numpy_2_and_explains() -> None:
    with pytest.raises(InterpreterUnavailable) as info:
        resolve_interpreter(import_module=importer(tflite_modules()), numpy_version="2.4.0")
    text = str(info.value)
    assert "numpy < 2" in text
    assert "2.4.0" in text
    assert "pip install 'numpy<2'" in text


def test_nothing_installed_names_both_packages() -> None:
    with pytest.raises(InterpreterUnavailable) as info:
        resolve_interpreter(import_module=importer({}), numpy_version="2.4.0")
    text = str(info.value)
    assert "ai_edge_litert" in text
    assert "tflite_runtime" in text
    assert "fedrt[device]" in text
