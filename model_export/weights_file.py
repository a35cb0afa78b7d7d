"""Read and replace the initial weights baked into an exported model's flatbuffer.

Each model version the coordinator commits is a complete, runnable ``.tflite`` file: the
exported graph with the new global weights as its variables' initial values. A device (or
any LiteRT runtime, the Android one included) loads it and starts from those weights
without a separate ``set_weights`` call, and the coordinator reads a version's weights
without an interpreter. Initial values are the constant tensors that the CALL_ONCE
initializer subgraph assigns to each variable (``VAR_HANDLE`` shared name = weight name).
A FedProx anchor (``{name}_anchor``) gets the same values, since a round starts there.

No TensorFlow: only the TFLite schema's object API that ``ai_edge_litert`` ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flatbuffers
import numpy as np
import numpy.typing as npt

from fedrt.model_export.errors import ModelFileError
from fedrt.model_export.manifest import Manifest, TensorSpec

__all__ = ["flat_weights", "read_weights", "replace_weights", "strip_weights", "unflatten"]

_FILE_ID = b"TFL3"
_NUMPY = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "int8": np.int8}


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelFileError("reading model weights needs ai-edge-litert") from exc
    return schema_py_generated


def _unpack(model: bytes):  # type: ignore[no-untyped-def]
    if len(model) < 8 or model[4:8] != _FILE_ID:
        raise ModelFileError("not a TFLite model (missing the TFL3 file identifier)")
    try:
        return _schema().ModelT.InitFromPackedBuf(bytearray(model), 0)
    except Exception as exc:  # the generated code raises whatever a bad offset causes
        raise ModelFileError(f"truncated or corrupt TFLite model: {exc}") from None


def _initializers(m) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Variable name -> the constant tensor its initializer assigns."""
    s = _schema()
    op_names = {}
    for i, code in enumerate(m.operatorCodes or []):
        op_names[i] = max(code.builtinCode, code.deprecatedBuiltinCode)
    init_graphs = {
        op.builtinOptions.initSubgraphIndex
        for g in m.subgraphs
        for op in g.operators or []
        if op_names.get(op.opcodeIndex) == s.BuiltinOperator.CALL_ONCE
    }
    found: dict[str, object] = {}
    for gi in init_graphs:
        graph = m.subgraphs[gi]
        handle_of: dict[int, str] = {}
        for op in graph.operators or []:
            if op_names.get(op.opcodeIndex) == s.BuiltinOperator.VAR_HANDLE:
                name = (op.builtinOptions.sharedName or b"").decode()
                handle_of[int(op.outputs[0])] = name
        for op in graph.operators or []:
            if op_names.get(op.opcodeIndex) == s.BuiltinOperator.ASSIGN_VARIABLE:
                name = handle_of.get(int(op.inputs[0]))
                if name is not None:
                    found[name] = graph.tensors[int(op.inputs[1])]
    return found


def _value(m, tensor) -> npt.NDArray[np.generic]:  # type: ignore[no-untyped-def]
    buffer = m.buffers[tensor.buffer]
    data = buffer.data if buffer.data is not None else np.zeros(0, np.uint8)
    dtype = _numpy_dtype(tensor.type)
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
    arr = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=dtype)
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise ModelFileError(f"initial value of {tensor.name!r} does not match its shape")
    return arr.reshape(shape)


def _numpy_dtype(code: int) -> type[np.generic]:
    s = _schema()
    by_code: dict[int, type[np.generic]] = {
        s.TensorType.FLOAT32: np.float32,
        s.TensorType.INT32: np.int32,
        s.TensorType.INT64: np.int64,
        s.TensorType.INT8: np.int8,
    }
    if code not in by_code:
        raise ModelFileError(f"unsupported initial-value tensor type {code}")
    return by_code[code]


def _weight_inits(m, manifest: Manifest) -> dict[str, object]:  # type: ignore[no-untyped-def]
    inits = _initializers(m)
    missing = [w.name for w in manifest.weights if w.name not in inits]
    if missing:
        raise ModelFileError(f"model has no initializer for weight(s): {', '.join(missing)}")
    return inits


def _assigned(inits: dict[str, object], spec: TensorSpec) -> list[object]:
    """The tensors whose initial value is weight ``spec``'s: its own, and its FedProx anchor's."""
    return [t for name in (spec.name, f"{spec.name}_anchor") if (t := inits.get(name)) is not None]


def flat_weights(model: bytes, manifest: Manifest) -> npt.NDArray[np.float32]:
    """The initial weights of ``model`` as one float32 vector in the manifest's order."""
    return np.concatenate([w.reshape(-1) for w in read_weights(model, manifest)]).astype(np.float32)


def unflatten(flat: npt.NDArray[np.generic], manifest: Manifest) -> list[npt.NDArray[np.float32]]:
    """A flat vector cut into the manifest's weights (float32, their shapes)."""
    out, at = [], 0
    for spec in manifest.weights:
        out.append(np.asarray(flat[at : at + spec.size], np.float32).reshape(spec.shape))
        at += spec.size
    return out


def read_weights(model: bytes, manifest: Manifest) -> list[npt.NDArray[np.generic]]:
    """The initial weights of ``model``, in the manifest's order."""
    m = _unpack(model)
    inits = _weight_inits(m, manifest)
    return [_value(m, inits[w.name]) for w in manifest.weights]


def replace_weights(
    model: bytes, manifest: Manifest, weights: Sequence[npt.NDArray[np.generic]]
) -> bytes:
    """A copy of ``model`` whose weights (and FedProx anchors) start at ``weights``."""
    if len(weights) != len(manifest.weights):
        raise ModelFileError(f"{len(weights)} weight arrays for {len(manifest.weights)} weights")
    m = _unpack(model)
    inits = _weight_inits(m, manifest)
    s = _schema()
    # The converter shares one buffer between equal constants (zero biases, say): give every
    # replaced value a buffer of its own rather than overwrite a shared one.
    for spec, value in zip(manifest.weights, weights, strict=True):
        arr = np.asarray(value)
        want = _NUMPY[spec.dtype]
        if tuple(arr.shape) != tuple(spec.shape):
            raise ModelFileError(f"weight {spec.name}: shape {arr.shape}, expected {spec.shape}")
        data = np.ascontiguousarray(arr, dtype=want).reshape(-1).view(np.uint8)
        for tensor in _assigned(inits, spec):
            buffer = s.BufferT()
            buffer.data = data.copy()
            m.buffers.append(buffer)
            tensor.buffer = len(m.buffers) - 1  # type: ignore[attr-defined]
    _drop_unused_buffers(m)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=_FILE_ID)
    return bytes(builder.Output())


def strip_weights(model: bytes, manifest: Manifest) -> bytes:
    """The model's graph: ``model`` without its weights' (and anchors') initial values.

    Canonical per architecture: every version ``replace_weights(graph, w)`` strips back to
    the same bytes, so devices cache it once by its sha256 and rebuild any version from it
    and that version's weights (``replace_weights(graph, w)``, byte for byte the file the
    coordinator signed when it built the version the same way). The stripped initial
    values point at buffer 0 (TFLite's empty buffer) and unused buffers are removed.
    """
    m = _unpack(model)
    inits = _weight_inits(m, manifest)
    for spec in manifest.weights:
        for tensor in _assigned(inits, spec):
            tensor.buffer = 0  # type: ignore[attr-defined]
    _compact_buffers(m)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=_FILE_ID)
    return bytes(builder.Output())


def _used_buffers(m) -> set[int]:  # type: ignore[no-untyped-def]
    """Buffer 0 (TFLite's empty buffer) and every buffer a tensor or metadata refers to."""
    used = {0}
    for graph in m.subgraphs:
        used.update(int(t.buffer) for t in graph.tensors or [])
    for meta in m.metadata or []:
        used.add(int(meta.buffer))
    used.update(int(i) for i in (m.metadataBuffer or []))
    return used


def _compact_buffers(m) -> None:  # type: ignore[no-untyped-def]
    """Keep buffer 0 and the referenced buffers, in their order, and renumber references."""
    keep = sorted(i for i in _used_buffers(m) if i < len(m.buffers))
    index = {old: new for new, old in enumerate(keep)}
    m.buffers = [m.buffers[i] for i in keep]
    for graph in m.subgraphs:
        for t in graph.tensors or []:
            t.buffer = index[int(t.buffer)]
    for meta in m.metadata or []:
        meta.buffer = index[int(meta.buffer)]
    if m.metadataBuffer is not None:
        m.metadataBuffer = [index[int(i)] for i in m.metadataBuffer]


def _drop_unused_buffers(m) -> None:  # type: ignore[no-untyped-def]
    """Empty the data of buffers no tensor refers to any more (the replaced initial values)."""
    used = _used_buffers(m)
    for index, buffer in enumerate(m.buffers):
        if index not in used:
            buffer.data = None
