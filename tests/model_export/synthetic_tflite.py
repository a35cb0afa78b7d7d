"""Builds small TFLite flatbuffers by hand (field numbers of schema.fbs) to test the inspector.

They hold only what the inspector reads: operator codes, subgraphs with tensors and
operators (with VarHandle/CallOnce options), and signature defs. No interpreter runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers

CUSTOM = 32
FULLY_CONNECTED = 9
CALL_ONCE = 129
VAR_HANDLE = 142
READ_VARIABLE = 143
ASSIGN_VARIABLE = 144
OPTIONS_CALL_ONCE = 103
OPTIONS_VAR_HANDLE = 111


@dataclass
class Op:
    code: int
    custom: str = ""
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    var: str | None = None  # VarHandleOptions.shared_name
    init_subgraph: int | None = None  # CallOnceOptions.init_subgraph_index


@dataclass
class Graph:
    name: str
    tensors: list[tuple[str, list[int], int]]  # name, shape, TensorType code
    ops: list[Op]
    signature_inputs: list[tuple[str, int]] = field(default_factory=list)
    signature_outputs: list[tuple[str, int]] = field(default_factory=list)


def _ints(b: flatbuffers.Builder, values: list[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(v)
    return int(b.EndVector())


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def _op_codes(b: flatbuffers.Builder, codes: list[tuple[int, str]]) -> list[int]:
    out = []
    for code, custom in codes:
        name = b.CreateString(custom) if custom else 0
        b.StartObject(4)
        b.PrependInt8Slot(0, min(code, 127), 0)
        if name:
            b.PrependUOffsetTRelativeSlot(1, name, 0)
        b.PrependInt32Slot(2, 1, 1)
        b.PrependInt32Slot(3, code, 0)
        out.append(b.EndObject())
    return out


def _operator(b: flatbuffers.Builder, op: Op, code_index: int) -> int:
    options, options_type = 0, 0
    if op.var is not None:
        shared = b.CreateString(op.var)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(1, shared, 0)
        options, options_type = b.EndObject(), OPTIONS_VAR_HANDLE
    elif op.init_subgraph is not None:
        b.StartObject(1)
        b.PrependInt32Slot(0, op.init_subgraph, 0)
        options, options_type = b.EndObject(), OPTIONS_CALL_ONCE
    ins, outs = _ints(b, op.inputs), _ints(b, op.outputs)
    b.StartObject(5)
    b.PrependUint32Slot(0, code_index, 0)
    b.PrependUOffsetTRelativeSlot(1, ins, 0)
    b.PrependUOffsetTRelativeSlot(2, outs, 0)
    if options:
        b.PrependUint8Slot(3, options_type, 0)
        b.PrependUOffsetTRelativeSlot(4, options, 0)
    return int(b.EndObject())


def _tensor(b: flatbuffers.Builder, name: str, shape: list[int], dtype: int) -> int:
    name_off, shape_off = b.CreateString(name), _ints(b, shape)
    b.StartObject(8)
    b.PrependUOffsetTRelativeSlot(0, shape_off, 0)
    b.PrependInt8Slot(1, dtype, 0)
    b.PrependUOffsetTRelativeSlot(3, name_off, 0)
    return int(b.EndObject())


def _tensor_maps(b: flatbuffers.Builder, maps: list[tuple[str, int]]) -> int:
    out = []
    for name, index in maps:
        name_off = b.CreateString(name)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, name_off, 0)
        b.PrependUint32Slot(1, index, 0)
        out.append(b.EndObject())
    return _offsets(b, out)


def build_model(graphs: list[Graph]) -> bytes:
    """A TFL3 flatbuffer; every graph with a signature input or output gets a signature."""
    b = flatbuffers.Builder(1024)
    codes = sorted({(op.code, op.custom) for g in graphs for op in g.ops})
    code_offsets = _op_codes(b, codes)
    graph_offsets, signatures = [], []
    for index, graph in enumerate(graphs):
        tensors = _offsets(b, [_tensor(b, *t) for t in graph.tensors])
        ops = _offsets(b, [_operator(b, op, codes.index((op.code, op.custom))) for op in graph.ops])
        name = b.CreateString(graph.name)
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, tensors, 0)
        b.PrependUOffsetTRelativeSlot(3, ops, 0)
        b.PrependUOffsetTRelativeSlot(4, name, 0)
        graph_offsets.append(b.EndObject())
        if graph.signature_inputs or graph.signature_outputs:
            ins = _tensor_maps(b, graph.signature_inputs)
            outs = _tensor_maps(b, graph.signature_outputs)
            key = b.CreateString(graph.name)
            b.StartObject(5)
            b.PrependUOffsetTRelativeSlot(0, ins, 0)
            b.PrependUOffsetTRelativeSlot(1, outs, 0)
            b.PrependUOffsetTRelativeSlot(2, key, 0)
            b.PrependUint32Slot(4, index, 0)
            signatures.append(b.EndObject())
    code_vec, graph_vec = _offsets(b, code_offsets), _offsets(b, graph_offsets)
    sig_vec = _offsets(b, signatures)
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, code_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, graph_vec, 0)
    b.PrependUOffsetTRelativeSlot(7, sig_vec, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())


def dense_graph(name: str = "infer", extra: list[Op] | None = None) -> Graph:
    """x[-1,4] -> FULLY_CONNECTED -> logits[-1,2], plus ``extra`` ops."""
    return Graph(
        name=name,
        tensors=[("x", [1, 4], 0), ("w", [2, 4], 0), ("logits", [1, 2], 0), ("r", [], 13)],
        ops=[Op(FULLY_CONNECTED, inputs=[0, 1], outputs=[2]), *(extra or [])],
        signature_inputs=[("x", 0)],
        signature_outputs=[("logits", 2)],
    )
