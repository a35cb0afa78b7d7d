"""Reads a .tflite flatbuffer: signatures, op histogram, Flex/custom ops, variable initializers.

Uses only the ``flatbuffers`` runtime (no tensorflow, keras or LiteRT), so devices and the
coordinator can vet a model before loading it. Field numbers follow TFLite's schema.fbs.
A model passes (``ModelReport.ok``) when it has no Flex or custom op and every resource
variable read by a signature is assigned by an initializer subgraph that a ``CALL_ONCE`` runs.

Stable API: ``inspect_model(data: bytes) -> ModelReport`` and ``inspect_file(path)`` (both
raise ``ModelFileError`` for truncated or foreign bytes); ``model_signatures(data, required)``
(the signatures alone, checked the same way); ``ModelReport.signatures`` (name
-> ``SignatureInfo`` with ``inputs``/``outputs`` as manifest ``TensorSpec``s), ``ops``
(histogram by builtin name), ``flex_ops``, ``custom_ops``, ``variables``, ``uninitialized``,
``problems``, ``ok``, ``require_signatures(names)`` (``MissingSignature``), ``to_dict()``;
``signature_flops(data) -> {signature: FLOPs of its matmuls and convolutions}``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flatbuffers import number_types as nt
from flatbuffers.table import Table

from fedrt.model_export.errors import MissingSignature, ModelFileError
from fedrt.model_export.manifest import DTYPES, TensorSpec

_T = TypeVar("_T")

FILE_IDENTIFIER = b"TFL3"
OP_CUSTOM = 32
OP_CALL_ONCE = 129
OP_VAR_HANDLE = 142
OP_ASSIGN_VARIABLE = 144
OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED = 3, 4, 9
OP_TRANSPOSE_CONV, OP_BATCH_MATMUL = 67, 126
# TensorType enum of schema.fbs, by value.
_TENSOR_TYPES = DTYPES


@functools.cache
def _op_names() -> dict[int, str]:
    # The runtime ships the generated schema; its enum gives names in sync with the kernels.
    # Imported only when a name is asked for: the module is 690 KB of generated Python, and
    # importing it cost a device process 6.7 MiB of RSS just to open a model.
    try:
        from ai_edge_litert.schema_py_generated import BuiltinOperator
    except ImportError:  # pragma: no cover - a coordinator without LiteRT still gets codes
        return {}
    return {v: k for k, v in vars(BuiltinOperator).items() if isinstance(v, int)}


class _Node:
    """A flatbuffer table with the few accessors the TFLite schema needs."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.tab = Table(buf, pos)

    def _off(self, field: int) -> int:
        return int(self.tab.Offset(4 + 2 * field))

    def scalar(self, field: int, flags: Any, default: int = 0) -> int:
        off = self._off(field)
        return default if off == 0 else int(self.tab.Get(flags, off + self.tab.Pos))

    def string(self, field: int) -> str:
        off = self._off(field)
        if off == 0:
            return ""
        return bytes(self.tab.String(off + self.tab.Pos)).decode("utf-8", "replace")

    def tables(self, field: int) -> list[_Node]:
        off = self._off(field)
        if off == 0:
            return []
        start, count = self.tab.Vector(off), self.tab.VectorLen(off)
        return [_Node(self.tab.Bytes, self.tab.Indirect(start + 4 * i)) for i in range(count)]

    def ints(self, field: int) -> list[int]:
        off = self._off(field)
        if off == 0:
            return []
        start, count = self.tab.Vector(off), self.tab.VectorLen(off)
        return [int(self.tab.Get(nt.Int32Flags, start + 4 * i)) for i in range(count)]

    def union(self, field: int) -> _Node | None:
        off = self._off(field)
        if off == 0:
            return None
        inner = Table(bytearray(), 0)
        self.tab.Union(inner, off)
        return _Node(self.tab.Bytes, inner.Pos)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureInfo:
    """One signature: its subgraph and named input/output tensors (-1 = any size)."""

    name: str
    subgraph: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subgraph": self.subgraph,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelReport:
    """What ``inspect_model`` found in one flatbuffer."""

    size: int
    schema_version: int
    subgraphs: int
    signatures: dict[str, SignatureInfo]
    op_counts: dict[int | str, int]
    """Operators by builtin code, or by name for a custom op (``ops`` names them all)."""
    flex_ops: tuple[str, ...]
    custom_ops: tuple[str, ...]
    variables: tuple[str, ...]
    initialized: tuple[str, ...]
    has_call_once: bool

    @property
    def ops(self) -> dict[str, int]:
        """Operator histogram by name (builtin names from LiteRT's schema)."""
        names = _op_names()
        return {
            (names.get(key, f"BUILTIN_{key}") if isinstance(key, int) else key): count
            for key, count in self.op_counts.items()
        }

    @property
    def uninitialized(self) -> tuple[str, ...]:
        return tuple(v for v in self.variables if v not in self.initialized)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.flex_ops:
            found.append(f"Flex ops (need the Select TF ops delegate): {', '.join(self.flex_ops)}")
        if self.custom_ops:
            found.append(f"custom ops: {', '.join(self.custom_ops)}")
        if self.variables and not self.has_call_once:
            found.append("resource variables but no CALL_ONCE initializer")
        elif self.uninitialized:
            found.append(f"variables no initializer assigns: {', '.join(self.uninitialized)}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def require_signatures(self, names: tuple[str, ...] | list[str]) -> None:
        missing = [n for n in names if n not in self.signatures]
        if missing:
            raise MissingSignature(missing, sorted(self.signatures))

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "schema_version": self.schema_version,
            "subgraphs": self.subgraphs,
            "signatures": {k: v.to_dict() for k, v in sorted(self.signatures.items())},
            "ops": dict(sorted(self.ops.items())),
            "flex_ops": list(self.flex_ops),
            "custom_ops": list(self.custom_ops),
            "variables": len(self.variables),
            "uninitialized_variables": list(self.uninitialized),
            "has_call_once": self.has_call_once,
            "ok": self.ok,
            "problems": self.problems,
        }


def _tensor_spec(name: str, tensor: _Node) -> TensorSpec:
    shape = tensor.ints(7) or tensor.ints(0)  # shape_signature keeps -1 for dynamic dims
    code = tensor.scalar(1, nt.Int8Flags)
    if not 0 <= code < len(_TENSOR_TYPES):
        raise ModelFileError(f"tensor {name!r} has unknown type code {code}")
    return TensorSpec(name=name, shape=tuple(shape), dtype=_TENSOR_TYPES[code])


def _signatures(model: _Node, graphs: list[_Node]) -> dict[str, SignatureInfo]:
    found: dict[str, SignatureInfo] = {}
    for sig in model.tables(7):
        index = sig.scalar(4, nt.Uint32Flags)
        if index >= len(graphs):
            raise ModelFileError(f"signature points at subgraph {index} of {len(graphs)}")
        tensors = graphs[index].tables(0)

        def specs(
            field: int, tensors: list[_Node] = tensors, sig: _Node = sig
        ) -> tuple[TensorSpec, ...]:
            maps = sig.tables(field)
            out = [_tensor_spec(m.string(0), tensors[m.scalar(1, nt.Uint32Flags)]) for m in maps]
            return tuple(sorted(out, key=lambda t: t.name))

        key = sig.string(2)
        found[key] = SignatureInfo(name=key, subgraph=index, inputs=specs(0), outputs=specs(1))
    return found


def _var_name(op: _Node) -> str:
    options = op.union(4)  # VarHandleOptions: container (0), shared_name (1)
    if options is None:
        return ""
    return f"{options.string(0)}/{options.string(1)}"


def _check_buffers(root: _Node, size: int) -> None:
    """Every weight buffer must lie inside the file: a cut-off tail is a truncated model."""
    for index, buffer in enumerate(root.tables(4)):
        off = buffer._off(0)  # Buffer.data: [ubyte]
        if off:
            end = buffer.tab.Vector(off) + buffer.tab.VectorLen(off)
            if end > size:
                raise ModelFileError(f"buffer {index} ends at {end}, past the file's {size} bytes")
        start = buffer.scalar(1, nt.Uint64Flags)  # offset/size of data stored after the flatbuffer
        if start > 1 and start + buffer.scalar(2, nt.Uint64Flags) > size:
            raise ModelFileError(f"buffer {index} lies past the end of the file")


def _root(buf: bytes) -> _Node:
    return _Node(buf, int(nt.UOffsetTFlags.py_type(struct.unpack_from("<I", buf, 0)[0])))


def _parse(buf: bytes) -> ModelReport:
    root = _root(buf)
    _check_buffers(root, len(buf))
    codes = root.tables(1)
    graphs = root.tables(2)
    ops: Counter[int | str] = Counter()
    flex: set[str] = set()
    custom: set[str] = set()
    init_graphs: set[int] = set()
    handles: dict[int, set[str]] = {}
    for g_index, graph in enumerate(graphs):
        for op in graph.tables(3):
            code_index = op.scalar(0, nt.Uint32Flags)
            if code_index >= len(codes):
                raise ModelFileError(f"operator code {code_index} out of range")
            code_node = codes[code_index]
            code = max(code_node.scalar(0, nt.Int8Flags), code_node.scalar(3, nt.Int32Flags))
            if code == OP_CUSTOM:
                name = code_node.string(1) or "<unnamed custom>"
                (flex if name.startswith("Flex") else custom).add(name)
                ops[name] += 1
            else:
                ops[code] += 1
            if code == OP_CALL_ONCE:
                options = op.union(4)  # CallOnceOptions: init_subgraph_index (0)
                init_graphs.add(options.scalar(0, nt.Int32Flags) if options else -1)
            elif code == OP_VAR_HANDLE:
                handles.setdefault(g_index, set()).add(_var_name(op))
    variables = sorted(set().union(*handles.values())) if handles else []
    initialized = sorted(
        set().union(*(v for g, v in handles.items() if g in init_graphs)) if handles else set()
    )
    return ModelReport(
        size=len(buf),
        schema_version=root.scalar(0, nt.Uint32Flags),
        subgraphs=len(graphs),
        signatures=_signatures(root, graphs),
        op_counts=dict(ops),
        flex_ops=tuple(sorted(flex)),
        custom_ops=tuple(sorted(custom)),
        variables=tuple(variables),
        initialized=tuple(initialized),
        has_call_once=bool(init_graphs),
    )


def _macs(code: int, op: _Node, tensors: list[_Node]) -> int:
    """Multiply-adds of one matrix op from its tensors' static shapes (a dynamic dimension
    counts as 1: per example where the batch is free); 0 for any other op."""

    def shape(position: int, field: int) -> list[int]:
        index = op.ints(field)[position]
        return [max(d, 1) for d in tensors[index].ints(0)]

    if code not in (
        OP_BATCH_MATMUL, OP_FULLY_CONNECTED, OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_TRANSPOSE_CONV
    ):  # fmt: skip
        return 0
    if code == OP_TRANSPOSE_CONV:  # inputs: output shape, filter [O, kh, kw, I], input
        out_c, kh, kw, _ = shape(1, 1)
        return math.prod(shape(2, 1)) * kh * kw * out_c
    out = math.prod(shape(0, 2))
    if code == OP_BATCH_MATMUL:
        options = op.union(4)  # BatchMatMulOptions: adj_x (0)
        adj_x = bool(options and options.scalar(0, nt.BoolFlags))
        return out * shape(0, 1)[-2 if adj_x else -1]
    if code == OP_FULLY_CONNECTED:  # weights [N, K]
        return out * shape(1, 1)[-1]
    _, kh, kw, in_c = shape(1, 1)  # conv filter [O, kh, kw, I]; depthwise [1, kh, kw, C*M]
    return out * kh * kw * (in_c if code == OP_CONV_2D else 1)


def signature_flops(data: bytes) -> dict[str, int]:
    """Floating-point operations (2 per multiply-add) of the matmuls and convolutions one
    call of each signature runs, from static shapes (per example where the batch is free).

    The arithmetic floor of a call: on a machine whose best matmul runs at R FLOP/s, a call
    takes at least flops / R seconds (``fedrt bench device`` reports both)."""
    report = inspect_model(data)  # typed error for a truncated or foreign file first
    root = _root(data)
    codes, graphs = root.tables(1), root.tables(2)
    flops = {}
    for name, sig in report.signatures.items():
        graph = graphs[sig.subgraph]
        tensors = graph.tables(0)
        total = 0
        for op in graph.tables(3):
            node = codes[op.scalar(0, nt.Uint32Flags)]
            code = max(node.scalar(0, nt.Int8Flags), node.scalar(3, nt.Int32Flags))
            try:
                total += _macs(code, op, tensors)
            except (IndexError, ValueError) as exc:
                raise ModelFileError(f"{name}: a matrix op without usable shapes ({exc})") from None
        flops[name] = 2 * total
    return flops


def inspect_model(data: bytes) -> ModelReport:
    """Parse TFLite flatbuffer bytes; raise ModelFileError if they are not a readable model."""
    report = _checked(_parse, data)
    if report.subgraphs == 0:
        raise ModelFileError("TFLite model has no subgraphs")
    return report


def model_signatures(
    data: bytes, required: tuple[str, ...] | list[str] = ()
) -> dict[str, SignatureInfo]:
    """``inspect_model(data).signatures`` without the operator census; with ``required``,
    ``MissingSignature`` unless each is there.

    What a device needs to open the model it trains every round: the census (every operator
    of every subgraph) was over half of ``inspect_model``'s time on the zoo mlp. The file is
    checked as far as these fields go (identifier, buffers inside the file, subgraphs,
    signatures); a file cut inside the operators may pass, and LiteRT's flatbuffer verifier
    refuses it when it is loaded (``LiteRTModel`` raises ``ModelFileError`` either way)."""

    def parse(buf: bytes) -> dict[str, SignatureInfo]:
        root = _root(buf)
        _check_buffers(root, len(buf))
        graphs = root.tables(2)
        if not graphs:
            raise ModelFileError("TFLite model has no subgraphs")
        return _signatures(root, graphs)

    found = _checked(parse, data)
    missing = [n for n in required if n not in found]
    if missing:
        raise MissingSignature(missing, sorted(found))
    return found


def _checked(parse: Callable[[bytes], _T], data: bytes) -> _T:
    """``parse(data)`` once the file identifier is there, its failures as ModelFileError."""
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelFileError("not a TFLite model (missing the TFL3 file identifier)")
    try:
        return parse(bytes(data))
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"truncated or corrupt TFLite model: {exc}") from None


def inspect_file(path: str | Path) -> ModelReport:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from None
    return inspect_model(data)
