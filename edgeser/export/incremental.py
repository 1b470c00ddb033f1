"""Export the incremental streaming graph (``IncrementalGraph``: convolutions carry their own left
context as state inputs/outputs) to ONNX with the dynamo exporter, opset 18, then prove it before the
file is written: the saved state dims are static and the batch/length dims symbolic, and ONNX Runtime
matches torch on real clips, whole-clip (the warmup call, then the rest) and streamed (state carried)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..adapt.data import softmax
from ..adapt.incremental import IncrementalGraph
from ..adapt.model import EmotionNet, incremental_sizes
from .onnx_export import ParityError, _check_writable, dynamo_export, metadata_for, save_checked
from .storage import store_int8

INPUTS = ("audio", "audio_state", "mel_state", "conv_state", "cache")
OUTPUTS = ("logits", "embeddings", "audio_state_out", "mel_state_out", "conv_state_out")
STATES = ("audio_state", "mel_state", "conv_state")


def incremental_metadata(net: EmotionNet) -> dict:
    """The ``incremental`` entry of the metadata: block, warmup, tail and the states' shapes (without batch)."""
    cfg, z = net.cfg, incremental_sizes(net.cfg)
    return {
        "config": cfg.to_dict(),  # what a tool needs to rebuild the network (edgeser.adapt.from_onnx)
        "block": z.block,
        "warmup": z.warmup,
        "tail": z.tail,
        "states": {"audio_state": [z.audio], "mel_state": [z.mel, cfg.n_mels], "conv_state": [z.conv, cfg.channels]},
    }


def expected_dims(net: EmotionNet) -> dict[str, list]:
    """Saved dims of every input/output: ``None`` for a symbolic axis, an int for a static one."""
    cfg, z = net.cfg, incremental_sizes(net.cfg)
    c = cfg.channels
    states = {"audio_state": [None, z.audio], "mel_state": [None, z.mel, cfg.n_mels], "conv_state": [None, z.conv, c]}
    return {
        "audio": [None, None],
        **states,
        "cache": [None, c, None],
        "logits": [None, len(cfg.labels)],
        "embeddings": [None, c, None],
        **{k + "_out": v for k, v in states.items()},
    }


def _check_dims(path: Path, net: EmotionNet) -> None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    got = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in list(m.graph.input) + list(m.graph.output)
    }
    want = expected_dims(net)
    if got != want:
        raise ParityError(f"exported graph has dims {got}, expected {want} (None = symbolic)")


def zero_state(net: EmotionNet, batch: int = 1) -> dict[str, np.ndarray]:
    """Zero states for a stream's (or a whole clip's) start, as ONNX Runtime feeds."""
    return {k: np.zeros([batch, *s], np.float32) for k, s in incremental_metadata(net)["states"].items()}


def _call(sess, audio: np.ndarray, state: dict, cache: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    out = sess.run(None, {"audio": audio, **state, "cache": cache})
    return out[0], out[1], dict(zip(STATES, out[2:]))


def check_parity(
    onnx_path: str | Path,
    net: EmotionNet,
    wavs: Sequence[np.ndarray],
    tol: float = 1e-4,
    blocks: Sequence[int] = (1, 5, 3, 25),
) -> dict:
    """Max abs probability difference torch vs ONNX Runtime, whole clips (the warmup call, then the
    rest) and streamed (calls of ``blocks[i] * block`` samples, state carried, the embeddings after the
    warmup kept as the cache), and the largest difference of the streamed embeddings from torch's
    whole-clip ``embed`` (relative to their scale when it exceeds 1)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    cfg, net, z = net.cfg, net.eval(), incremental_sizes(net.cfg)
    empty = np.zeros((1, cfg.channels, 0), np.float32)
    whole = streamed = emb_diff = 0.0
    for w in wavs:
        x = np.zeros(max(len(w), cfg.receptive_field), np.float32)
        x[: len(w)] = w
        with torch.no_grad():
            ref = torch.softmax(net(torch.from_numpy(x)[None]), dim=1).numpy()
            ref_emb = net.embed(torch.from_numpy(x)[None]).numpy()
        split = z.warmup * z.block
        _, _, state = _call(sess, x[None, :split], zero_state(net), empty)
        logits, _, _ = _call(sess, x[None, split:], state, empty)
        whole = max(whole, float(np.abs(softmax(logits) - ref).max()))
        # streamed: the warmup blocks first (their outputs dropped), then calls of `blocks` blocks
        _, _, state = _call(sess, x[None, :split], zero_state(net), empty)
        cache, i, j, n_blocks = empty, z.warmup, 0, len(x) // z.block
        while i < n_blocks:
            k = min(blocks[j % len(blocks)], n_blocks - i)
            logits, emb, state = _call(sess, x[None, i * z.block : (i + k) * z.block], state, cache)
            cache, i, j = np.concatenate([cache, emb], axis=2), i + k, j + 1
        n = cache.shape[2]
        if n:
            scale = max(1.0, float(np.abs(ref_emb).max()))  # relative to the embeddings' scale (above 1)
            emb_diff = max(emb_diff, float(np.abs(cache - ref_emb[:, :, :n]).max()) / scale)
            with torch.no_grad():
                ref_n = torch.softmax(net.classify_embeddings(torch.from_numpy(ref_emb[:, :, :n])), dim=1).numpy()
            streamed = max(streamed, float(np.abs(softmax(logits) - ref_n).max()))
    result = {
        "clips": len(wavs),
        "max_abs_prob_diff": whole,
        "max_abs_prob_diff_streamed": streamed,
        "max_embedding_diff_streamed": emb_diff,
        "tolerance": tol,
    }
    if max(whole, streamed, emb_diff) > tol:
        raise ParityError(f"ONNX differs from torch by {max(whole, streamed, emb_diff):.2e} (> {tol:g}) on real clips")
    return result


#: the frontend's fixed matrices (``IncrementalGraph``'s buffers): kept fp32 when the learned weights are stored int8
FRONTEND_BUFFERS = ("dft", "window", "stage1", "twiddle_cos", "twiddle_sin", "stage2", "mel")
#: parity tolerance of int8-stored weights (``weights="int8"``): the largest probability difference from
#: the fp32 torch model on the parity clips; the bundled model's is in MODEL_CARD.md
INT8_TOL = 0.02


def export_incremental_net(
    net: EmotionNet,
    out: str | Path,
    metadata: dict,
    parity_audio: Sequence[str | Path] = (),
    tol: float = 1e-4,
    weights: str = "fp32",
) -> dict:
    """Export ``net`` as the incremental graph to ``out`` with ``metadata`` (plus its ``incremental``
    entry); returns the metadata plus the parity result. ``weights="int8"`` stores the learned weights
    int8 (:mod:`edgeser.export.storage`: a file about a third the size, fp32 arithmetic), checked against
    the fp32 torch model with ``max(tol, INT8_TOL)``. Nothing is written at ``out`` unless the dims and
    parity checks pass."""
    if weights not in ("fp32", "int8"):
        raise ValueError(f"weights must be 'fp32' or 'int8', got {weights!r}")
    net = net.eval()
    cfg, z = net.cfg, incremental_sizes(net.cfg)
    out = Path(out)
    _check_writable(out)
    graph = IncrementalGraph(net).eval()
    # batch 2 and sizes >= 2 in the example: size-1 (and 0) dims get specialised by the exporter
    audio = torch.randn(2, 7 * z.block) * 0.1
    states = tuple(s + 0.1 * torch.randn_like(s) for s in graph.initial_state(2))
    example = (audio, *states, torch.randn(2, cfg.channels, 3))
    b = torch.export.Dim("batch")
    t, f = torch.export.Dim("samples", min=z.block), torch.export.Dim("frames")
    shapes = {
        "audio": {0: b, 1: t},
        "audio_state": {0: b},
        "mel_state": {0: b},
        "conv_state": {0: b},
        "cache": {0: b, 2: f},
    }
    model = dynamo_export(graph, example, list(INPUTS), list(OUTPUTS), shapes)
    meta = {**metadata, "incremental": incremental_metadata(net)}
    if weights == "int8":
        store_int8(model, skip=FRONTEND_BUFFERS)
        meta["weights"], tol = "int8", max(tol, INT8_TOL)

    def check(tmp: Path, wavs: list[np.ndarray]) -> dict:
        _check_dims(tmp, net)
        return check_parity(tmp, net, wavs, tol)

    return save_checked(model, meta, out, parity_audio, cfg.sample_rate, check)


def export_incremental(
    checkpoint: str | Path,
    out: str | Path,
    parity_audio: Sequence[str | Path] = (),
    tol: float = 1e-4,
    extra_metadata: dict | None = None,
    weights: str = "fp32",
) -> dict:
    """``export_onnx``'s counterpart for the incremental graph: checkpoint -> checked ONNX file
    (``weights="int8"``: int8-stored weights, see :func:`export_incremental_net`)."""
    from ..adapt.checkpoint import load_model, read_checkpoint

    _check_writable(Path(out))  # before reading the checkpoint: a bad output path is reported first
    ckpt = read_checkpoint(checkpoint)
    net = load_model(checkpoint)
    meta = metadata_for(net, {**ckpt.get("summary", {}), **(extra_metadata or {})})
    return export_incremental_net(net, out, meta, parity_audio, tol, weights)
