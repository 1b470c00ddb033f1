"""Store an exported graph's learned weights as int8: a smaller file with unchanged arithmetic.

Each weight matrix of a ``MatMul`` or ``Gemm`` (at least ``min_size`` values) is replaced by an int8
initializer, symmetric per output channel, and a ``Cast`` to float32 times its per-channel scale.
Every ONNX runtime folds these constant subgraphs when the session loads, so inference runs fp32
arithmetic on the dequantized weights: the cost per call is the fp32 graph's, and a stream equals the
whole window exactly as before (unlike dynamic quantization, whose activation scale depends on each
call's audio). ``DequantizeLinear`` would say the same more compactly, but ONNX Runtime keeps it
unfolded for its quantized kernels: 31-50 % slower per call (``benchmarks/runtime/smaller_model.md``).

The weights themselves move by at most half a quantization step (``max |w| / 254`` per channel); the
bundled model's held-out-speaker UA is in ``MODEL_CARD.md``."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

#: suffixes of the initializers a stored weight becomes (``name + INT8``, ``name + SCALE``)
INT8, SCALE = "_int8", "_scale"


def quantize_rows(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a 2-D ``w`` per slice along ``axis`` (the output channels):
    ``(q int8, scale float32)`` with ``q * scale ≈ w``, ``|q| <= 127``, and scale 1 for an all-zero slice.

    >>> q, s = quantize_rows(np.array([[1.0, -0.5], [0.0, 0.0]], np.float32), axis=0)
    >>> q.tolist(), s.ravel().tolist()
    ([[127, -64], [0, 0]], [0.007874015718698502, 1.0])
    """
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {w.shape}")
    scale = np.abs(w).max(axis=1 - axis, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


def _output_axes(graph) -> dict[str, int]:  # noqa: ANN001 (onnx.GraphProto)
    """Initializer name -> its output-channel axis, for the weight inputs of MatMul and Gemm nodes."""
    axes: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "MatMul":
            axes[node.input[1]] = 1  # [in, out]
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axes[node.input[1]] = 0 if trans_b else 1
    return axes


def store_int8(model, skip: Collection[str] = (), min_size: int = 1024):  # noqa: ANN001, ANN201 (onnx.ModelProto)
    """``model`` (changed in place, and returned) with its large MatMul/Gemm weights stored int8 (see the
    module docstring), except the initializers named in ``skip`` (fixed matrices such as a DFT or a mel
    filterbank, whose rounding would act as spectral leakage); its metadata is left as it is."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    axes = _output_axes(graph)
    inits, casts = [], []
    for t in graph.initializer:
        a = numpy_helper.to_array(t)
        if t.name not in axes or t.name in skip or a.dtype != np.float32 or a.ndim != 2 or a.size < min_size:
            inits.append(t)
            continue
        q, scale = quantize_rows(a, axes[t.name])
        inits += [numpy_helper.from_array(q, t.name + INT8), numpy_helper.from_array(scale, t.name + SCALE)]
        casts += [
            helper.make_node("Cast", [t.name + INT8], [t.name + "_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [t.name + "_float", t.name + SCALE], [t.name]),
        ]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    nodes = casts + list(graph.node)  # the graph stays topologically sorted: the casts read initializers only
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def stored_weights(model) -> dict[str, np.ndarray]:  # noqa: ANN001 (onnx.ModelProto)
    """Every initializer as float arrays, int8-stored weights dequantized under their original names
    (what a session computes with): the inverse view of :func:`store_int8` for tools that rebuild a net."""
    from onnx import numpy_helper

    raw = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for name, a in raw.items():
        if name.endswith(INT8) and name[: -len(INT8)] + SCALE in raw:
            base = name[: -len(INT8)]
            out[base] = a.astype(np.float32) * raw[base + SCALE]
        elif not (name.endswith(SCALE) and name[: -len(SCALE)] + INT8 in raw):
            out[name] = a
    return out
