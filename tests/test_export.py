import json

import numpy as np
import onnx
import pytest

from edgeser.export import ParityError, export_onnx
from edgeser.runtime import Recognizer


def test_export_metadata_and_dynamic_axes(tiny_onnx):
    m = onnx.load(str(tiny_onnx))
    meta = json.loads({p.key: p.value for p in m.metadata_props}["edgeser"])
    assert meta["labels"] == ["angry", "happy", "neutral", "sad"]
    assert meta["sample_rate"] == 16000 and meta["window_s"] > 0 and meta["hop_s"] > 0
    assert meta["edgeser_version"] and "training" in meta
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(m.graph.input) + list(m.graph.output)
    }
    assert all(isinstance(d, str) for d in (dims["audio"][0], dims["audio"][1], dims["cache"][2]))
    assert m.opset_import[0].version == 18 or any(
        o.version == 18 for o in m.opset_import if o.domain in ("", "ai.onnx")
    )


def test_exported_model_runs_batches_and_lengths(tiny_onnx):
    rec = Recognizer.load(tiny_onnx)
    m = rec.model
    for batch, n in [(1, m.receptive_field), (3, 16000), (2, 48123)]:
        logits, emb = m.run(np.random.default_rng(0).standard_normal((batch, n)).astype(np.float32) * 0.1)
        assert logits.shape == (batch, 4) and emb.shape == (batch, m.embedding_dim, m.n_embeddings(n))


def test_export_refuses_on_parity_failure(tiny_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    with pytest.raises(ParityError):
        export_onnx(tiny_checkpoint, out, tol=-1.0)  # an impossible tolerance: the check must fail
    assert not out.exists() and not (tmp_path / "x.onnx.partial").exists()


def test_cli_export_falls_back_to_fp32_when_int8_fails_parity(tiny_checkpoint, tmp_path, monkeypatch):
    """The int8 default is a size choice: a model it would move beyond the tolerance is written with fp32 weights
    and a note; an explicit ``--weights int8`` still fails."""
    from click.testing import CliRunner

    import edgeser.export.incremental as inc
    from edgeser.cli import cli
    from edgeser.export import ParityError
    from edgeser.runtime import load_model

    monkeypatch.setattr(inc, "INT8_TOL", 0.0)  # the int8 file is then held to --tol (1e-4), which it cannot meet
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(cli, ["export", str(tiny_checkpoint), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "int8-stored weights failed the parity check" in r.output and "fp32 weights" in r.output
    assert load_model(out).metadata.get("weights") != "int8"
    r = CliRunner().invoke(cli, ["export", str(tiny_checkpoint), "-o", str(tmp_path / "n.onnx"), "--weights", "int8"])
    assert r.exit_code != 0 and isinstance(r.exception, ParityError)
    assert not (tmp_path / "n.onnx").exists()
