"""int8-stored weights (edgeser.export.storage): known values, the graph's arithmetic, the CLI and the bundled file."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeser.export.storage import INT8, SCALE, quantize_rows, store_int8, stored_weights
from edgeser.runtime import DEFAULT_MODEL, IncrementalModel, Recognizer


def test_quantize_rows_per_output_channel():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], np.float32)
    q, s = quantize_rows(w, axis=0)  # rows are the output channels
    assert q.dtype == np.int8 and q.tolist() == [[64, -127, 32], [0, 0, 0]]
    assert s.ravel().tolist() == pytest.approx([1 / 127, 1.0])
    q, s = quantize_rows(w, axis=1)  # columns are: per column max 0.5, 1.0, 0.25
    assert s.ravel().tolist() == pytest.approx([0.5 / 127, 1 / 127, 0.25 / 127])
    assert np.abs(q * s - w).max() <= s.max() / 2 + 1e-9  # within half a step
    with pytest.raises(ValueError):
        quantize_rows(np.zeros(3, np.float32), 0)


def _graph(rng):
    """x [N, 64] @ W1 [64, 32] -> Gemm with W2 [16, 32] (transB) + b; plus a fixed matrix F [64, 64] to skip."""
    w1, w2 = rng.standard_normal((64, 32)).astype(np.float32), rng.standard_normal((16, 32)).astype(np.float32)
    f, b = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "F"], ["xf"]),
        helper.make_node("MatMul", ["xf", "W1"], ["h"]),
        helper.make_node("Gemm", ["h", "W2", "b"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (w2, "W2"), (f, "F"), (b, "b"))]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), (w1, w2, f, b)


def test_store_int8_computes_with_the_dequantized_weights_and_skips_fixed_matrices():
    rng = np.random.default_rng(0)
    model, (w1, w2, f, b) = _graph(rng)
    store_int8(model, skip=("F",), min_size=256)
    onnx.checker.check_model(model)
    names = {t.name: t.data_type for t in model.graph.initializer}
    assert names["W1" + INT8] == names["W2" + INT8] == TensorProto.INT8 and "F" in names and "W1" not in names
    weights = stored_weights(model)
    assert set(weights) == {"W1", "W2", "F", "b"} and np.array_equal(weights["F"], f)
    # per output channel: W1's columns (MatMul [in, out]), W2's rows (Gemm, transB=1)
    assert model.graph.initializer[[t.name for t in model.graph.initializer].index("W1" + SCALE)].dims == [1, 32]
    assert np.abs(weights["W1"] - w1).max() <= np.abs(w1).max(axis=0).max() / 254 + 1e-7
    x = rng.standard_normal((5, 64)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = (x @ f @ weights["W1"]) @ weights["W2"].T + b
    assert np.abs(y - want).max() < 1e-3 * np.abs(want).max()
    exact = (x @ f @ w1) @ w2.T + b
    assert np.abs(y - exact).max() > 1e-4  # it did change the weights (a test that can fail)


def test_bundled_model_is_the_incremental_graph_with_int8_weights():
    rec = Recognizer.load()
    assert isinstance(rec.model, IncrementalModel) and rec.model.metadata["weights"] == "int8"
    assert DEFAULT_MODEL.stat().st_size <= 0.6e6  # issue 10: a bundled model of at most 0.6 MB
    m = onnx.load(str(DEFAULT_MODEL))
    types = {t.name: t.data_type for t in m.graph.initializer}
    assert types["mel"] == TensorProto.FLOAT and types["block0_w" + INT8] == TensorProto.INT8
    assert "config" in json.loads({p.key: p.value for p in m.metadata_props}["edgeser"])["incremental"]


def test_cli_exports_the_bundled_form_by_default(tiny_checkpoint, tmp_path):
    from edgeser.cli import cli
    from edgeser.runtime import OnnxModel

    out = tmp_path / "inc8.onnx"
    r = CliRunner().invoke(cli, ["export", str(tiny_checkpoint), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "incremental, int8 weights" in r.output
    rec = Recognizer.load(out)
    assert isinstance(rec.model, IncrementalModel) and rec.model.metadata["weights"] == "int8"
    r = CliRunner().invoke(cli, ["export", str(tiny_checkpoint), "-o", str(tmp_path / "w.onnx"), "--form", "whole"])
    assert r.exit_code == 0, r.output
    assert "whole, fp32 weights" in r.output and isinstance(Recognizer.load(tmp_path / "w.onnx").model, OnnxModel)
    args = ["export", str(tiny_checkpoint), "-o", str(tmp_path / "x.onnx"), "--form", "whole", "--weights", "int8"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "needs --form incremental" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.onnx").exists()


def test_exports_carry_no_exporter_notes(tiny_checkpoint, tmp_path):
    # the exporter's node notes hold memory addresses ("<function sym_min at 0x7f...>"): two processes exporting
    # one checkpoint wrote different bytes; without them the same weights give the same file
    from edgeser.export.incremental import export_incremental

    export_incremental(tiny_checkpoint, tmp_path / "a.onnx", weights="int8")
    nodes = onnx.load(str(tmp_path / "a.onnx")).graph.node
    assert len(nodes) > 50 and not any(n.metadata_props for n in nodes)
    assert not any(n.metadata_props for n in onnx.load(str(DEFAULT_MODEL)).graph.node)


def test_load_model_picks_the_class_by_the_metadata_entry_not_by_a_string(tiny_onnx, tmp_path):
    from edgeser.runtime import OnnxModel, load_model

    m = onnx.load(str(tiny_onnx))
    meta = json.loads(m.metadata_props[0].value)
    meta["model_card"] = 'mentions "incremental" in its text'  # a whole-clip file: not an incremental one
    m.metadata_props[0].value = json.dumps(meta)
    onnx.save(m, str(tmp_path / "w.onnx"))
    assert type(load_model(tmp_path / "w.onnx")) is OnnxModel
    assert type(load_model(DEFAULT_MODEL)) is IncrementalModel
