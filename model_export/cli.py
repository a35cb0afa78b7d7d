"""``fedrt export`` and ``fedrt inspect``; registration imports nothing heavy.

``fedrt inspect FILE [--json]`` exits 0 when the model runs on the plain interpreter, 1 when
it has Flex or custom ops or variables without a ``CALL_ONCE`` initializer.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from fedrt.errors import UsageError
from fedrt.model_export.manifest import LOSSES


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (use e.g. 28,28,1)") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (use e.g. 28,28,1)")
    return dims


def load_spec(spec: str, input_shape: tuple[int, ...] | None, classes: int | None) -> Any:
    """Build the Keras model named by ``zoo:NAME`` or ``module:function``."""
    kind, _, name = spec.partition(":")
    if not name:
        raise UsageError(f"spec {spec!r} must be zoo:NAME or module:function")
    if kind == "zoo":
        from fedrt.model_export.zoo import ZOO

        if name not in ZOO:
            raise UsageError(f"no zoo model {name!r}; the zoo has {', '.join(sorted(ZOO))}")
        if input_shape is None or classes is None:
            raise UsageError("zoo models need --input-shape and --classes")
        return ZOO[name](input_shape, classes)
    try:
        module = importlib.import_module(kind)
    except ImportError as exc:
        raise UsageError(f"cannot import {kind!r}: {exc}") from None
    builder = getattr(module, name, None)
    if not callable(builder):
        raise UsageError(f"{kind!r} has no callable {name!r}")
    model = builder()
    if input_shape is not None and not getattr(model, "built", True):
        model.build((None, *input_shape))
    return model


def run_export(args: argparse.Namespace) -> int:
    from fedrt.model_export.exporter import ExportOptions, export_model

    model = load_spec(args.spec, args.input_shape, args.classes)
    options = ExportOptions(
        batch_size=args.batch,
        loss=args.loss,
        fedprox=args.fedprox,
        momentum=args.momentum,
        scaffold=args.scaffold,
        int8_infer=args.int8_infer,
        source=args.spec,
    )
    manifest = export_model(model, args.out, options)
    print(
        f"wrote {args.out}/{manifest.model_file} ({manifest.model_bytes} bytes, "
        f"{manifest.num_params} params, sha256 {manifest.sha256}) and manifest.json"
    )
    return 0


def register_export(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export", help="export a Keras model to a LiteRT model that trains on device"
    )
    parser.add_argument("spec", help="zoo:NAME (mlp, cnn, lstm_lm) or module:function")
    parser.add_argument("--out", required=True, help="directory for model.tflite + manifest.json")
    parser.add_argument("--batch", type=int, default=32, help="static train batch size")
    parser.add_argument("--loss", choices=LOSSES, default="sparse_ce")
    parser.add_argument("--input-shape", type=_shape, help="one example's shape, e.g. 28,28,1")
    parser.add_argument("--classes", type=int, help="output classes (vocabulary for lstm_lm)")
    parser.add_argument("--fedprox", action="store_true", help="add the FedProx `mu` input")
    parser.add_argument(
        "--momentum", action="store_true", help="add a `momentum` input and velocity state"
    )
    parser.add_argument(
        "--scaffold",
        action="store_true",
        help="add SCAFFOLD's `correction` input (c - c_i, added to each gradient)",
    )
    parser.add_argument(
        "--int8-infer", action="store_true", help="also write infer_int8.tflite (int8 weights)"
    )
    parser.set_defaults(run=run_export)


def _format(report: Any, flops: dict[str, int]) -> str:
    lines = [f"size {report.size} bytes, {report.subgraphs} subgraphs"]
    for name, sig in sorted(report.signatures.items()):
        ins = ", ".join(f"{t.name}:{t.dtype}{list(t.shape)}" for t in sig.inputs)
        outs = ", ".join(f"{t.name}:{t.dtype}{list(t.shape)}" for t in sig.outputs)
        lines.append(f"  {name}({ins}) -> {{{outs}}}")
    counted = [f"{name} {count / 1e6:.3f}" for name, count in sorted(flops.items()) if count]
    if counted:
        lines.append(
            "MFLOP per call in matmuls and convolutions (per example where the batch is free): "
            + ", ".join(counted)
        )
    lines.append("ops:")
    for op, count in sorted(report.ops.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {op:<28} {count}")
    lines.append(
        f"variables {len(report.variables)}, initializer (CALL_ONCE) "
        f"{'yes' if report.has_call_once else 'no'}"
    )
    lines.extend(f"PROBLEM: {p}" for p in report.problems)
    lines.append("ok: runs on the plain LiteRT interpreter" if report.ok else "NOT OK")
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    from fedrt.model_export.inspect import inspect_file, signature_flops

    report = inspect_file(args.file)
    flops = signature_flops(Path(args.file).read_bytes())
    if args.json:
        print(json.dumps({**report.to_dict(), "flops": flops}, sort_keys=True))
    else:
        print(_format(report, flops))
    if not report.ok:
        print(f"fedrt inspect: {args.file}: {'; '.join(report.problems)}", file=sys.stderr)
    return 0 if report.ok else 1


def register_inspect(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect", help="list a .tflite model's signatures and ops; exit 1 if Flex/custom"
    )
    parser.add_argument("file", help="a .tflite file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run_inspect)
