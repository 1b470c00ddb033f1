"""The bundled model's storage forms (issue 10, item 2), measurements only: the incremental graph of the
bundled weights stored five ways, compared on size, CPU time per call (one thread, interleaved) and
UA on the default model's held-out test speakers (needs ../shared/data or $EDGESER_DATA).

    python benchmarks/runtime/smaller_model.py --source runs/default_model/whole-0.1.onnx

(``--source``: a whole-clip ONNX of the fp32 weights, e.g. the 0.1 bundled file, ``git show
b0f5eb9:edgeser/runtime/default_model/edgeser-default.onnx``; default: the bundled model itself.)

* fp32: as exported;
* int8: ONNX Runtime dynamic quantization of the stem's and blocks' matrix products only (weights int8
  per output channel, activations quantized per call); the frontend's DFT/mel products and the head stay
  fp32 (quantizing the frontend's power spectrum destroys the model: top-1 agreement fell to 40-50 %);
* fp16-stored: large weights stored as fp16 plus a Cast (folded back to fp32 when the session loads:
  same arithmetic, smaller file);
* int8-weights-stored: learned weights stored int8 per output channel plus a DequantizeLinear (which ONNX
  Runtime keeps unfolded for its quantized kernels), the frontend's fixed matrices fp16-stored;
* int8-stored, Cast+Mul: the bundled file since 0.2 (``edgeser.export.storage``): learned weights int8 per
  output channel plus a Cast and a Mul by the scales, which every runtime folds at load (fp32 arithmetic);
  the frontend's fixed matrices fp32."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import corpus  # noqa: E402

from edgeser.audio import load_audio  # noqa: E402
from edgeser.runtime.incremental import IncrementalModel  # noqa: E402
from edgeser.runtime.model_file import softmax  # noqa: E402

TEST_SPEAKERS = {"emodb": {"03", "08"}, "nemo": {"EB0", "KS0"}, "turev_db": {"1358"}}  # default_model/results.md


def int8_conv_products(src: Path, out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    nodes = [
        n.name for n in graph.node if n.op_type == "MatMul" and any(i.startswith(("block", "stem")) for i in n.input)
    ]
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes)
    return out


def fp16_stored(src: Path, out: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    inits, casts = [], []
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size >= 1024:
            inits.append(numpy_helper.from_array(a.astype(np.float16), t.name + "_fp16"))
            casts.append(helper.make_node("Cast", [t.name + "_fp16"], [t.name], to=TensorProto.FLOAT))
        else:
            inits.append(t)
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    nodes = casts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(out))
    return out


def int8_weights_stored(src: Path, out: Path) -> Path:
    """Learned weights (>= 1024 values) stored int8, symmetric per output channel, with a DequantizeLinear
    (ONNX Runtime folds it into fp32 constants when the session loads: fp32 arithmetic, as fp16-stored); the
    frontend's fixed DFT and mel matrices stored as fp16 (8 bits would add spectral leakage)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    inits, nodes = [], []
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32 or a.size < 1024:
            inits.append(t)
        elif "frontend" in t.name or "mel" in t.name:
            inits.append(numpy_helper.from_array(a.astype(np.float16), t.name + "_fp16"))
            nodes.append(helper.make_node("Cast", [t.name + "_fp16"], [t.name], to=TensorProto.FLOAT))
        else:
            scale = np.abs(a.reshape(a.shape[0], -1)).max(axis=1) / 127.0
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            q = np.clip(np.round(a / scale.reshape(-1, *([1] * (a.ndim - 1)))), -127, 127).astype(np.int8)
            inits += [numpy_helper.from_array(q, t.name + "_q"), numpy_helper.from_array(scale, t.name + "_scale")]
            nodes.append(helper.make_node("DequantizeLinear", [t.name + "_q", t.name + "_scale"], [t.name], axis=0))
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    rest = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes + rest)
    onnx.save(m, str(out))
    return out


def unweighted_accuracy(labels: list[str], pred: list[str]) -> float:
    return float(np.mean([np.mean([p == c for p, t in zip(pred, labels) if t == c]) for c in sorted(set(labels))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--source",
        type=Path,
        default=None,
        help="whole-clip ONNX of the fp32 weights (e.g. the 0.1 bundled file; default: the bundled model, whose "
        "weights are already int8-rounded)",
    )
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    from edgeser.adapt.from_onnx import load_onnx_weights
    from edgeser.export.incremental import export_incremental_net
    from edgeser.runtime import DEFAULT_MODEL, load_model

    source = args.source or DEFAULT_MODEL
    fp32 = tmp / "fp32.onnx"
    export_incremental_net(load_onnx_weights(source), fp32, load_model(source).metadata)
    paths = {
        "fp32": fp32,
        "int8": int8_conv_products(fp32, tmp / "int8.onnx"),
        "fp16-stored": fp16_stored(fp32, tmp / "fp16.onnx"),
        "int8-weights-stored": int8_weights_stored(fp32, tmp / "int8w.onnx"),
        "int8-stored, Cast+Mul (bundled since 0.2)": DEFAULT_MODEL,
    }
    models = {k: IncrementalModel(p) for k, p in paths.items()}
    assert models["fp32"].labels == models["int8-stored, Cast+Mul (bundled since 0.2)"].labels
    print("| form | MB | call, 5 blocks (0.1 s) | call, 25 blocks (0.5 s) |", end="")
    print("".join(f" UA {c} |" for c in TEST_SPEAKERS) + " max abs Δp vs fp32 |")
    rng = np.random.default_rng(0)
    times: dict[str, dict[int, float]] = {k: {} for k in models}
    for k in (5, 25):
        audio = (rng.standard_normal((1, 320 * k)) * 0.1).astype(np.float32)
        cache = rng.standard_normal((1, 128, 95)).astype(np.float32)
        ts: dict[str, list[float]] = {n: [] for n in models}
        for _ in range(args.repeats):
            for n, m in models.items():
                state = m.initial_state(1)
                t = time.process_time()
                for _ in range(20):
                    m.step(audio, state, cache)
                ts[n].append((time.process_time() - t) / 20 * 1e6)
        for n in models:
            times[n][k] = float(np.median(ts[n]))
    probs: dict[str, dict[str, list]] = {n: {} for n in models}
    truth: dict[str, list[str]] = {}
    for name, speakers in TEST_SPEAKERS.items():
        clips = [c for c in corpus(name) if c.speaker in speakers]
        truth[name] = [c.label for c in clips]
        for n, m in models.items():
            out = []
            for c in clips:
                x = load_audio(c.path, 16000)
                x = np.pad(x, (0, max(0, m.receptive_field - len(x))))
                out.append(softmax(m.run(x[None])[0])[0])
            probs[n][name] = out
    labels = models["fp32"].labels
    for n in models:
        uas = [unweighted_accuracy(truth[c], [labels[int(np.argmax(p))] for p in probs[n][c]]) for c in TEST_SPEAKERS]
        dp = max(float(np.abs(np.array(probs[n][c]) - np.array(probs["fp32"][c])).max()) for c in TEST_SPEAKERS)
        print(
            f"| {n} | {paths[n].stat().st_size / 1e6:.2f} | {times[n][5]:.0f} µs | {times[n][25]:.0f} µs |"
            + "".join(f" {u:.3f} |" for u in uas)
            + f" {dp:.3f} |"
        )


if __name__ == "__main__":
    main()
