"""Stand-ins for the Android side: a Context serving recorded readings, Chaquopy's `java`
module, and the app's Kotlin LiteRtTrainer backed by the real ai_edge_litert interpreter."""

from __future__ import annotations

import array
import json
import math
import types
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from fedrt.sdk.android_reader import ACTION_BATTERY_CHANGED, ContextReader
from fedrt.sdk.android_state import AndroidDeviceState, AndroidReadings

ANDROID = Path(__file__).parent / "data" / "android"
ANDROID_CASES = sorted(p.stem for p in ANDROID.glob("*.json"))


def recorded(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ANDROID / f"{case}.json").read_text())
    return data


# ---------------------------------------------------------------------- a Context
class JavaThrowable(Exception):
    """What java.lang.Throwable is under Chaquopy: a Python exception class."""


class IllegalArgumentException(JavaThrowable):
    pass


class SecurityException(JavaThrowable):
    pass


class IllegalStateException(JavaThrowable):
    pass


class IntentFilter:
    def __init__(self, action: str) -> None:
        self.action = action


class Intent:
    def __init__(self, extras: dict[str, Any]) -> None:
        self._extras = extras

    def getIntExtra(self, name: str, default: int) -> int:
        value = self._extras.get(name)
        assert not isinstance(value, bool)
        return default if value is None else int(value)

    def getBooleanExtra(self, name: str, default: bool) -> bool:
        value = self._extras.get(name)
        return default if value is None else bool(value)


class Capabilities:
    def __init__(self, transports: list[int], capabilities: list[int]) -> None:
        self._transports, self._capabilities = set(transports), set(capabilities)

    def hasTransport(self, transport: int) -> bool:
        return transport in self._transports

    def hasCapability(self, capability: int) -> bool:
        return capability in self._capabilities


class LinkProperties:
    def __init__(self, interface: str | None) -> None:
        self._interface = interface

    def getInterfaceName(self) -> str | None:
        return self._interface


class ConnectivityManager:
    def __init__(self, network: dict[str, Any] | None, denied: bool) -> None:
        self._network, self._denied = network, denied

    def getActiveNetwork(self) -> object | None:
        if self._denied:
            raise SecurityException("ConnectivityService: Neither user 10123 nor current process")
        return None if self._network is None else object()

    def getNetworkCapabilities(self, network: object) -> Capabilities:
        assert self._network is not None
        return Capabilities(self._network["transports"], self._network["capabilities"])

    def getLinkProperties(self, network: object) -> LinkProperties:
        assert self._network is not None
        return LinkProperties(self._network["interface"])


class PowerManager:
    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def isInteractive(self) -> bool:
        return bool(self._values["interactive"])

    def isDeviceIdleMode(self) -> bool:
        return bool(self._values["device_idle"])

    def isPowerSaveMode(self) -> bool:
        return bool(self._values["power_save"])


class PowerManagerApi29(PowerManager):
    def getCurrentThermalStatus(self) -> int:
        return int(self._values["thermal_status"])


class Context:
    """Serves one recorded reading through the Android methods ContextReader calls."""

    def __init__(self, values: dict[str, Any], *, network_denied: bool = False) -> None:
        self.values = values
        self.network_denied = network_denied

    def registerReceiver(self, receiver: object, intent_filter: IntentFilter) -> Intent | None:
        assert receiver is None  # a sticky read, never a registration
        assert intent_filter.action == ACTION_BATTERY_CHANGED
        battery = self.values["battery"]
        return None if battery is None else Intent(battery)

    def getSystemService(self, name: str) -> object:
        if name == "connectivity":
            return ConnectivityManager(self.values["network"], self.network_denied)
        if name == "power":
            api29 = self.values["thermal_status"] is not None
            return (PowerManagerApi29 if api29 else PowerManager)(self.values)
        raise AssertionError(f"unexpected service {name}")


def context_reader(values: dict[str, Any], **kwargs: Any) -> ContextReader:
    return ContextReader(
        Context(values, **kwargs),  # type: ignore[arg-type]
        intent_filter=IntentFilter,  # type: ignore[arg-type]
        java_error=JavaThrowable,
    )


def android_provider(case: str) -> AndroidDeviceState:
    """The provider an app builds, reading a Context that serves ``case``."""
    return AndroidDeviceState(context_reader(recorded(case)).read)


def replayed(case: str) -> AndroidDeviceState:
    """The provider over parsed readings (no Context involved)."""
    readings = AndroidReadings.from_dict(recorded(case))
    return AndroidDeviceState(lambda: readings)


# ---------------------------------------------------------------------- Chaquopy's java module
class JavaArray(array.array):  # type: ignore[type-arg]
    """A Java primitive array: supports the buffer protocol like Chaquopy's.

    Built from a value only through Chaquopy's one-memcpy path (1-D, contiguous, the exact
    element format); Chaquopy would fall back to element-by-element assignment for anything
    else, which the bridge must never cause, so that fails here.
    """

    TYPECODE = "f"
    copies_from_buffer = 0

    def __new__(cls, length_or_value: Any) -> JavaArray:
        self = super().__new__(cls, cls.TYPECODE)
        if isinstance(length_or_value, int):
            self.frombytes(bytes(self.itemsize * length_or_value))
            return self
        view = memoryview(length_or_value)
        if view.format != cls.TYPECODE or view.ndim != 1 or not view.c_contiguous:
            raise AssertionError(
                f"{cls.__name__} from format={view.format} ndim={view.ndim}: "
                "Chaquopy would copy it element by element"
            )
        self.frombytes(view.cast("B"))
        JavaArray.copies_from_buffer += 1
        return self


class JavaFloatArray(JavaArray):
    TYPECODE = "f"


class JavaIntArray(JavaArray):
    TYPECODE = "i"


class HashMap(dict[str, Any]):
    def put(self, key: str, value: Any) -> Any:
        old = self.get(key)
        self[key] = value
        return old


class jfloat:  # noqa: N801 - Chaquopy's names
    pass


class jint:  # noqa: N801
    pass


def _jarray(element: type) -> type[JavaArray]:
    return {jfloat: JavaFloatArray, jint: JavaIntArray}[element]


def _jclass(name: str) -> type:
    return {"java.util.HashMap": HashMap, "java.lang.Throwable": JavaThrowable}[name]


def java_module() -> types.ModuleType:
    module = types.ModuleType("java")
    module.jarray = _jarray  # type: ignore[attr-defined]
    module.jclass = _jclass  # type: ignore[attr-defined]
    module.jfloat = jfloat  # type: ignore[attr-defined]
    module.jint = jint  # type: ignore[attr-defined]
    return module


# ---------------------------------------------------------------------- the Kotlin LiteRtTrainer
_ELEMENTS = {np.dtype(np.float32): JavaFloatArray, np.dtype(np.int32): JavaIntArray}
EMPTY_INPUTS = "Input error: Inputs should not be null or empty."  # LiteRT Java's words


class StandInLiteRtTrainer:
    """The contract of examples/android_bridge's Kotlin ``LiteRtTrainer.runSignature``.

    Values are flat Java primitive arrays; an input of a static shape must hold exactly
    its elements (LiteRT's Buffer check), a dynamic leading dimension is taken from the
    length, and outputs are written into arrays at least as large as the result. An empty
    input map is refused first, as Java's ``NativeInterpreterWrapper.runSignature`` does
    (so ``get_weights``, which has no inputs, cannot run here either).
    """

    def __init__(self, model_path: str) -> None:
        self.interpreter: Interpreter | None = Interpreter(
            model_content=Path(model_path).read_bytes(),
            experimental_default_delegate_latest_features=True,
        )
        self.calls: list[str] = []
        self.fail_next: str | None = None

    def close(self) -> None:
        self.calls.append("close")
        self.interpreter = None

    def runSignature(self, inputs: HashMap, outputs: HashMap, key: str) -> None:
        self.calls.append(key)
        if self.interpreter is None:
            raise IllegalStateException("Internal error: The Interpreter has already been closed.")
        if not inputs:
            raise IllegalArgumentException(EMPTY_INPUTS)
        if self.fail_next == key:
            self.fail_next = None
            raise IllegalArgumentException("Internal error: Failed to run on the given Interpreter")
        runner = self.interpreter.get_signature_runner(key)
        details = runner.get_input_details()
        if set(inputs) != set(details):
            raise IllegalArgumentException(f"inputs {sorted(inputs)} for {sorted(details)}")
        feed = {}
        for name, value in inputs.items():
            detail = details[name]
            dtype = np.dtype(detail["dtype"])
            if not isinstance(value, _ELEMENTS[dtype]):
                raise IllegalArgumentException(f"{name}: {type(value).__name__} for {dtype}")
            signature = [int(d) for d in detail["shape_signature"]]
            static = math.prod(d for d in signature if d != -1)
            if -1 in signature:
                signature[signature.index(-1)] = len(value) // static
            if math.prod(signature) != len(value):
                raise IllegalArgumentException(f"{name}: {len(value)} values for {signature}")
            feed[name] = np.frombuffer(value, dtype).reshape(signature)
        result = runner(**feed)
        for name, target in outputs.items():
            flat = np.ascontiguousarray(result[name]).reshape(-1)
            if len(target) < flat.size:
                raise IllegalArgumentException(f"{name}: {len(target)} < {flat.size} values")
            np.frombuffer(target, flat.dtype)[: flat.size] = flat
