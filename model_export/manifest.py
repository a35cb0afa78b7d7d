"""The manifest describing an exported model: load, validate, write, verify the file's sha256.

Used on devices and by the coordinator, so it imports neither tensorflow nor keras.

manifest.json (``format_version`` 1) holds::

    format_version      1
    fedrt_version       fedrt that wrote it
    tensorflow_version  TensorFlow used for the conversion
    model_file          file name of the model, relative to the manifest ("model.tflite")
    sha256              hex sha256 of the model file
    model_bytes         size of the model file
    loss                "sparse_ce" | "binary_ce" | "mse"
    batch_size          the static batch of train and evaluate
    input               {shape, dtype} of ONE example (no batch axis)
    output              {shape, dtype} of one example's logits
    num_params          total number of trainable scalars
    weights             ordered [{name, shape, dtype}]: get_weights outputs / set_weights inputs
    options             {"fedprox": bool, "momentum": bool, "dropout": bool, "scaffold": bool}
                        (scaffold: train takes ``correction`` float32[num_params]; absent
                        in older manifests, which means false)
    signatures          {name: {inputs: [{name, shape, dtype}], outputs: [...]}}; shape -1 = any;
                        REQUIRED_SIGNATURES always; ``read_weights`` (get_weights' outputs,
                        input ``unused`` float32[1]) in every export but older ones
    int8_infer          null or {file, sha256}: a separate inference-only int8 model
    source              the spec the model was built from (informational)

Stable API: ``Manifest.load(path_or_dir)``, ``Manifest.from_json(text)``,
``Manifest.from_dict(obj)``, ``to_json()``, ``to_dict()``, ``write(directory)``,
``verify_model_file(path_or_dir)`` (``HashMismatch``), ``signature(name)``,
``num_params``, ``weight_names``; ``TensorSpec(name, shape, dtype)``,
``SignatureSpec(name, inputs, outputs)`` with ``input(name)``/``output(name)``;
``file_sha256(path)``; ``REQUIRED_SIGNATURES``, ``EXPORTED_SIGNATURES`` (those plus
``READ_WEIGHTS``), ``READ_WEIGHTS_INPUT``. Bad content raises ``ManifestError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrt.model_export.errors import HashMismatch, ManifestError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOSSES = ("sparse_ce", "binary_ce", "mse")
# TFLite schema.fbs TensorType names in enum order, so inspected signatures fit a TensorSpec.
DTYPES = (
    "float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64",
    "int8", "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16",
    "int4", "bfloat16", "int2", "uint4", "float8_e4m3fn", "float8_e5m2",
)  # fmt: skip
REQUIRED_SIGNATURES = ("train", "evaluate", "infer", "get_weights", "set_weights")
# get_weights' twin with one ignored input, for LiteRT's Java Interpreter.runSignature, which
# refuses an empty input map. Every export has it; manifests of older exports load without it.
READ_WEIGHTS = "read_weights"
EXPORTED_SIGNATURES = (*REQUIRED_SIGNATURES, READ_WEIGHTS)
# SCAFFOLD's train input (``fedrt export --scaffold``): the flat c - c_i, manifest order.
CORRECTION_INPUT = "correction"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so big models do not double memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSpec:
    """Name, shape (-1 for a dimension of any size) and dtype of one tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ManifestError(f"tensor name must be a non-empty string, got {self.name!r}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in self.shape):
            raise ManifestError(f"tensor {self.name!r}: bad shape {self.shape!r}")
        if self.dtype not in DTYPES:
            raise ManifestError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}")

    @property
    def size(self) -> int:
        """Number of elements (only meaningful for fully static shapes)."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TensorSpec:
        obj = _mapping(data, where)
        return cls(
            name=_get(obj, "name", str, where),
            shape=_shape(_get(obj, "shape", list, where), where),
            dtype=_get(obj, "dtype", str, where),
        )


# Shape [1], not 0-d: a 0-d float input segfaults LiteRT on aarch64.
READ_WEIGHTS_INPUT = TensorSpec(name="unused", shape=(1,), dtype="float32")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureSpec:
    """Inputs and outputs of one signature, in a stable (sorted by name) order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, name: str, data: Any) -> SignatureSpec:
        where = f"signatures.{name}"
        obj = _mapping(data, where)
        inputs = _get(obj, "inputs", list, where)
        outputs = _get(obj, "outputs", list, where)
        return cls(
            name=name,
            inputs=tuple(TensorSpec.from_dict(t, f"{where}.inputs") for t in inputs),
            outputs=tuple(TensorSpec.from_dict(t, f"{where}.outputs") for t in outputs),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a device and the coordinator need to know about an exported model."""

    fedrt_version: str
    tensorflow_version: str
    model_file: str
    sha256: str
    model_bytes: int
    loss: str
    batch_size: int
    input: TensorSpec
    output: TensorSpec
    weights: tuple[TensorSpec, ...]
    signatures: dict[str, SignatureSpec]
    options: dict[str, bool] = field(default_factory=dict)
    int8_infer: dict[str, str] | None = None
    source: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ManifestError(
                f"manifest format_version {self.format_version} is not {FORMAT_VERSION}"
            )
        if not _SHA256.match(self.sha256):
            raise ManifestError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.loss not in LOSSES:
            raise ManifestError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.batch_size < 1 or self.model_bytes < 1:
            raise ManifestError("batch_size and model_bytes must be positive")
        if Path(self.model_file).name != self.model_file or self.model_file in ("", ".", ".."):
            raise ManifestError(f"model_file must be a bare file name, got {self.model_file!r}")
        names = [w.name for w in self.weights]
        if len(set(names)) != len(names) or not names:
            raise ManifestError("weights must be a non-empty list of unique names")
        if not all(_NAME.match(n) for n in names):
            raise ManifestError("weight names must be identifiers ([A-Za-z_][A-Za-z0-9_]*)")
        if any(-1 in w.shape for w in self.weights):
            raise ManifestError("weight shapes must be fully static")
        missing = [s for s in REQUIRED_SIGNATURES if s not in self.signatures]
        if missing:
            raise ManifestError(f"manifest lacks signature(s) {', '.join(missing)}")
        got = self.signatures["get_weights"]
        if sorted(t.name for t in got.outputs) != sorted(names):
            raise ManifestError("get_weights outputs do not match the weights list")
        put = self.signatures["set_weights"]
        if sorted(t.name for t in put.inputs) != sorted(names):
            raise ManifestError("set_weights inputs do not match the weights list")
        read = self.signatures.get(READ_WEIGHTS)
        if read is not None and read.outputs != got.outputs:
            raise ManifestError(f"{READ_WEIGHTS} outputs differ from get_weights outputs")
        if read is not None and read.inputs != (READ_WEIGHTS_INPUT,):
            raise ManifestError(f"{READ_WEIGHTS} must take exactly unused: float32[1]")

    @property
    def num_params(self) -> int:
        return sum(w.size for w in self.weights)

    @property
    def weight_names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.weights)

    def signature(self, name: str) -> SignatureSpec:
        try:
            return self.signatures[name]
        except KeyError:
            raise ManifestError(f"manifest has no signature {name!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "fedrt_version": self.fedrt_version,
            "tensorflow_version": self.tensorflow_version,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "model_bytes": self.model_bytes,
            "loss": self.loss,
            "batch_size": self.batch_size,
            "input": {"shape": list(self.input.shape), "dtype": self.input.dtype},
            "output": {"shape": list(self.output.shape), "dtype": self.output.dtype},
            "num_params": self.num_params,
            "weights": [w.to_dict() for w in self.weights],
            "options": dict(sorted(self.options.items())),
            "signatures": {k: v.to_dict() for k, v in sorted(self.signatures.items())},
            "int8_infer": self.int8_infer,
            "source": self.source,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        obj = _mapping(data, "manifest")
        version = _get(obj, "format_version", int, "manifest")
        if version != FORMAT_VERSION:
            raise ManifestError(f"manifest format_version {version} is not {FORMAT_VERSION}")
        sigs = _mapping(_get(obj, "signatures", dict, "manifest"), "signatures")
        options = _mapping(obj.get("options", {}), "options")
        if not all(isinstance(v, bool) for v in options.values()):
            raise ManifestError("options must map names to booleans")
        int8 = obj.get("int8_infer")
        if int8 is not None:
            int8 = _mapping(int8, "int8_infer")
            if not all(isinstance(v, str) for v in int8.values()):
                raise ManifestError("int8_infer must map names to strings")
        manifest = cls(
            format_version=version,
            fedrt_version=_get(obj, "fedrt_version", str, "manifest"),
            tensorflow_version=_get(obj, "tensorflow_version", str, "manifest"),
            model_file=_get(obj, "model_file", str, "manifest"),
            sha256=_get(obj, "sha256", str, "manifest"),
            model_bytes=_get(obj, "model_bytes", int, "manifest"),
            loss=_get(obj, "loss", str, "manifest"),
            batch_size=_get(obj, "batch_size", int, "manifest"),
            input=TensorSpec.from_dict(
                {"name": "x", **_mapping(obj.get("input"), "input")}, "input"
            ),
            output=TensorSpec.from_dict(
                {"name": "logits", **_mapping(obj.get("output"), "output")}, "output"
            ),
            weights=tuple(
                TensorSpec.from_dict(w, "weights") for w in _get(obj, "weights", list, "manifest")
            ),
            signatures={str(k): SignatureSpec.from_dict(str(k), v) for k, v in sigs.items()},
            options={str(k): bool(v) for k, v in options.items()},
            int8_infer=int8,
            source=str(obj.get("source", "")),
        )
        if "num_params" in obj and obj["num_params"] != manifest.num_params:
            raise ManifestError(
                f"num_params {obj['num_params']!r} disagrees with the weights "
                f"({manifest.num_params})"
            )
        return manifest

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read ``path`` (a manifest.json, or a directory holding one)."""
        target = Path(path)
        if target.is_dir():
            target = target / MANIFEST_NAME
        try:
            text = target.read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {target}: {exc.strerror}") from None
        return cls.from_json(text)

    def write(self, directory: str | Path) -> Path:
        target = Path(directory) / MANIFEST_NAME
        target.write_text(self.to_json(), encoding="utf-8")
        return target

    def verify_model_file(self, path: str | Path) -> Path:
        """Check that ``path`` (the model file, or its directory) has the recorded sha256."""
        target = Path(path)
        if target.is_dir():
            target = target / self.model_file
        try:
            actual = file_sha256(target)
        except OSError as exc:
            raise ManifestError(f"cannot read model file {target}: {exc.strerror}") from None
        if actual != self.sha256:
            raise HashMismatch(str(target), self.sha256, actual)
        return target


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object, got {type(data).__name__}")
    return data


def _get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _shape(dims: list[Any], where: str) -> tuple[int, ...]:
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise ManifestError(f"{where}: shape must be a list of integers, got {dims!r}")
    return tuple(dims)
