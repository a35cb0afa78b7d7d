"""The flatbuffer inspector on hand-built models (Flex, custom, variables) and real exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedrt.cli import main
from fedrt.model_export import (
    MissingSignature,
    ModelFileError,
    inspect_file,
    inspect_model,
    signature_flops,
)
from fedrt.model_export.inspect import model_signatures
from fedrt.model_export.litert_model import LiteRTModel
from tests.model_export.conftest import Exported
from tests.model_export.synthetic_tflite import (
    ASSIGN_VARIABLE,
    CALL_ONCE,
    CUSTOM,
    READ_VARIABLE,
    VAR_HANDLE,
    Graph,
    Op,
    build_model,
    dense_graph,
)


def _variable_model(*, call_once: bool, init_vars: tuple[str, ...] = ("w",)) -> bytes:
    reads = [Op(VAR_HANDLE, outputs=[3], var="w"), Op(READ_VARIABLE, inputs=[3], outputs=[1])]
    main_ops = ([Op(CALL_ONCE, init_subgraph=1)] if call_once else []) + reads
    init = Graph(
        name="init",
        tensors=[("r", [], 13), ("v", [2, 4], 0)],
        ops=[
            op
            for name in init_vars
            for op in (Op(VAR_HANDLE, outputs=[0], var=name), Op(ASSIGN_VARIABLE, inputs=[0, 1]))
        ],
    )
    return build_model([dense_graph(extra=main_ops), init])


def test_clean_model_reports_signatures_and_op_histogram() -> None:
    report = inspect_model(build_model([dense_graph()]))
    assert report.ok
    assert report.ops == {"FULLY_CONNECTED": 1}
    sig = report.signatures["infer"]
    assert [(t.name, t.shape, t.dtype) for t in sig.inputs] == [("x", (1, 4), "float32")]
    assert [t.name for t in sig.outputs] == ["logits"]
    assert report.to_dict()["ok"] is True


def test_flex_op_is_reported() -> None:
    data = build_model([dense_graph(extra=[Op(CUSTOM, custom="FlexReluGrad")])])
    report = inspect_model(data)
    assert report.flex_ops == ("FlexReluGrad",)
    assert not report.ok
    assert "Flex" in report.problems[0]


def test_custom_op_is_reported() -> None:
    report = inspect_model(build_model([dense_graph(extra=[Op(CUSTOM, custom="MyOp")])]))
    assert report.custom_ops == ("MyOp",)
    assert report.flex_ops == ()
    assert not report.ok


def test_variables_without_call_once_are_reported() -> None:
    report = inspect_model(_variable_model(call_once=False))
    assert report.variables == ("/w",)
    assert not report.has_call_once
    assert report.problems == ["resource variables but no CALL_ONCE initializer"]


def test_variable_the_initializer_never_assigns_is_reported() -> None:
    report = inspect_model(_variable_model(call_once=True, init_vars=("other",)))
    assert report.has_call_once
    assert report.uninitialized == ("/w",)
    assert not report.ok


def test_initialized_variables_pass() -> None:
    report = inspect_model(_variable_model(call_once=True))
    assert report.ok, report.problems
    assert report.ops["CALL_ONCE"] == 1


def test_missing_signatures_raise_typed_error() -> None:
    report = inspect_model(build_model([dense_graph()]))
    with pytest.raises(MissingSignature, match="train, evaluate"):
        report.require_signatures(["train", "evaluate", "infer"])


@pytest.mark.parametrize(
    "data",
    [b"", b"TFL3", b"\x00" * 64, b"\x10\x00\x00\x00TFL3" + b"\xff" * 8],
    ids=["empty", "short", "no-identifier", "garbage-root"],
)
def test_unreadable_bytes_are_model_file_errors(data: bytes) -> None:
    with pytest.raises(ModelFileError):
        inspect_model(data)


def test_every_truncation_of_a_real_model_is_a_model_file_error(
    zoo_mlp: Exported,
) -> None:
    data = (zoo_mlp.directory / "model.tflite").read_bytes()
    assert inspect_model(data).ok
    for size in [*range(0, len(data), max(1, len(data) // 97)), len(data) - 1]:
        with pytest.raises(ModelFileError):
            inspect_model(data[:size])


def test_model_signatures_match_inspect_and_litert_refuses_every_cut_file(
    zoo_mlp: Exported,
) -> None:
    data = (zoo_mlp.directory / "model.tflite").read_bytes()
    for model in (data, build_model([dense_graph()]), _variable_model(call_once=True)):
        assert model_signatures(model) == inspect_model(model).signatures
    assert set(model_signatures(data, ("train", "evaluate"))) >= {"train", "evaluate"}
    with pytest.raises(MissingSignature, match="nope"):
        model_signatures(data, ("train", "nope"))
    for bad in (b"", b"TFL3", b"\x00" * 64, b"\x10\x00\x00\x00TFL3" + b"\xff" * 8):
        with pytest.raises(ModelFileError):
            model_signatures(bad)
    # It does not walk the operators, so a file cut inside them may pass it: LiteRT's own
    # flatbuffer verifier refuses those, and a LiteRTModel still raises ModelFileError.
    for size in [*range(0, len(data), max(1, len(data) // 97)), len(data) - 1]:
        with pytest.raises(ModelFileError):
            LiteRTModel(data[:size], zoo_mlp.manifest, num_threads=1)


def test_cli_inspect_exit_codes(
    zoo_cnn: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(zoo_cnn.directory / "model.tflite"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["ops"]["BATCH_MATMUL"] >= 2
    assert sorted(report["signatures"]) == [
        "evaluate",
        "get_weights",
        "infer",
        "read_weights",
        "set_weights",
        "train",
    ]
    # train multiplies more than evaluate's forward pass; weights move without matmuls.
    assert report["flops"]["train"] > report["flops"]["evaluate"] > 0
    assert report["flops"]["set_weights"] == 0
    flex = tmp_path / "flex.tflite"
    flex.write_bytes(
        build_model([dense_graph(extra=[Op(CUSTOM, custom="FlexConv2DBackpropFilter")])])
    )
    assert main(["inspect", str(flex)]) == 1
    captured = capsys.readouterr()
    assert "FlexConv2DBackpropFilter" in captured.out
    assert "Flex ops" in captured.err
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    assert main(["inspect", str(broken)]) == 2
    assert "not a TFLite model" in capsys.readouterr().err


def test_inspect_runs_where_tensorflow_cannot_be_imported(zoo_mlp: Exported) -> None:
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from fedrt.cli import main\n"
        f"rc = main(['inspect', {str(zoo_mlp.directory / 'model.tflite')!r}])\n"
        "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'keras'))]\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "ok: runs on the plain LiteRT interpreter" in out.stdout


def test_inspect_file_reports_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot read"):
        inspect_file(tmp_path / "absent.tflite")


def test_keras3_weights_in_a_tf_module_are_flagged_uninitialized(tmp_path: Path) -> None:
    """The trap of issue 3: Keras 3 variables inside a tf.Module get no CALL_ONCE."""
    import keras
    import tensorflow as tf

    class Naive(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

        @tf.function(input_signature=[tf.TensorSpec([2, 4])])
        def infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"logits": self.model(x)}

    module = Naive()
    tf.saved_model.save(module, str(tmp_path), signatures={"infer": module.infer})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path), signature_keys=["infer"])
    converter.experimental_enable_resource_variables = True
    data = converter.convert()
    report = inspect_model(data)
    assert report.variables
    assert not report.has_call_once
    assert not report.ok
    model_path = tmp_path / "naive.tflite"
    model_path.write_bytes(data)
    assert main(["inspect", str(model_path)]) == 1


def test_signature_flops_count_each_matmul_of_a_call(zoo_mlp: Exported) -> None:
    """mlp 12 -> 16 -> 4, batch 8: train multiplies forward (x W1, h W2), backward (x^T dz1,
    h^T dz2 and dz2 W2^T; no dx for the input), infer per example (its batch is free)."""
    flops = signature_flops((zoo_mlp.directory / "model.tflite").read_bytes())
    forward = 12 * 16 + 16 * 4
    assert flops["infer"] == 2 * forward
    assert flops["evaluate"] == 2 * 8 * forward
    assert flops["train"] == 2 * 8 * (forward + 12 * 16 + 16 * 4 + 4 * 16)
    assert flops["get_weights"] == 0


def test_signature_flops_of_a_foreign_file_is_a_typed_error() -> None:
    with pytest.raises(ModelFileError):
        signature_flops(b"not a model at all")
