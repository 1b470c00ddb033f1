"""Export an edgeser checkpoint to ONNX (dynamo exporter, opset 18) with its description in the
metadata, then prove it: dynamic batch/length axes are checked in the saved graph, and probabilities
from ONNX Runtime must match torch on real clips, whole-clip and streamed, before the file is written."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..adapt.checkpoint import load_model, read_checkpoint
from ..adapt.model import EmotionNet, StreamingGraph
from ..audio import load_audio
from ..errors import EdgeserError, ModelError
from ..runtime.contract import FORMAT, INPUTS, METADATA_KEY, OUTPUTS, hop_samples, validate_metadata


class ParityError(EdgeserError):
    """The exported graph does not reproduce the torch model."""


def metadata_for(net: EmotionNet, summary: dict) -> dict:
    """The JSON description stored in the ONNX file (see ``edgeser.runtime.model_file``)."""
    cfg = net.cfg
    stride = cfg.embedding_stride
    hop = hop_samples(cfg.hop_s, cfg.sample_rate, stride)
    train = {
        k: summary[k]
        for k in (
            "train_clips",
            "val_clips",
            "best_epoch",
            "best_val_ua",
            "epochs",
            "device",
            "method",
            "source",
            "target",
            "data",
        )
        if k in summary
    }
    return {
        "format": FORMAT,
        "labels": cfg.labels,
        "sample_rate": cfg.sample_rate,
        "window_s": cfg.window_s,
        "hop_s": hop / cfg.sample_rate,
        "receptive_field": cfg.receptive_field,
        "embedding_stride": stride,
        "embedding_dim": cfg.channels,
        "edgeser_version": __version__,
        "training": train,
        "model_card": summary.get("model_card", ""),
    }


def _dims(model_path: Path) -> dict[str, list]:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    out = {}
    for v in list(m.graph.input) + list(m.graph.output):
        out[v.name] = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return out


def _check_dims(path: Path, n_classes: int, channels: int) -> None:
    dims = _dims(path)
    expect_symbolic = {"audio": (0, 1), "cache": (0, 2), "logits": (0,), "embeddings": (0, 2)}
    for name, axes in expect_symbolic.items():
        if name not in dims:
            raise ParityError(f"exported graph lacks '{name}' (has {sorted(dims)})")
        for a in axes:
            if not isinstance(dims[name][a], str):
                raise ParityError(f"axis {a} of '{name}' was fixed to {dims[name][a]} by the exporter")
    if dims["logits"][1] != n_classes or dims["cache"][1] != channels:
        raise ParityError(f"unexpected fixed dims {dims}")


def check_parity(onnx_path: str | Path, net: EmotionNet, wavs: Sequence[np.ndarray], tol: float = 1e-4) -> dict:
    """Max abs probability difference between torch and the real runtime: ``Recognizer.predict`` on
    whole clips, and every window an ``EmotionStream`` emits (hop 0.5 s, 2 s windows, chunks of 0.1 s)
    against torch on exactly that window's samples."""
    from ..runtime import EmotionStream, OnnxModel, Recognizer

    model = OnnxModel(onnx_path, threads=1)
    rec, cfg, net = Recognizer(model), net.cfg, net.eval()
    sr = cfg.sample_rate

    def torch_probs(x: np.ndarray) -> np.ndarray:
        x = np.pad(x, (0, max(0, cfg.receptive_field - len(x))))
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None]), dim=1).numpy()[0]

    whole, streamed, windows = 0.0, 0.0, 0
    for w in wavs:
        whole = max(whole, float(np.abs(rec.predict(w, sr).probs - torch_probs(w)).max()))
        stream = EmotionStream(model, sample_rate=sr, window_s=2.0, hop_s=0.5, smoothing=0.0, gate=False)
        chunk = sr // 10
        events = [ev for i in range(0, len(w), chunk) for ev in stream.feed(w[i : i + chunk])] + stream.flush()
        for ev in events:
            a = int(round(ev.start_s * sr))
            ref = torch_probs(w[a : a + int(round(ev.window_s * sr))])
            streamed = max(streamed, float(np.abs(ev.raw.probs - ref).max()))
            windows += 1
    result = {
        "clips": len(wavs),
        "windows": windows,
        "max_abs_prob_diff": whole,
        "max_abs_prob_diff_streamed": streamed,
        "tolerance": tol,
    }
    if whole > tol or streamed > tol:
        raise ParityError(f"ONNX differs from torch by {max(whole, streamed):.2e} (> {tol:g}) on real clips")
    return result


def _check_writable(out: Path) -> None:
    """The output folder exists and is writable, and ``out`` is not a folder (one-line errors)."""
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ModelError(f"{out}: is a folder; give the .onnx file to write")
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such folder for the exported model")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelError(f"{folder}: not writable")


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    parity_audio: Sequence[str | Path] = (),
    tol: float = 1e-4,
    extra_metadata: dict | None = None,
) -> dict:
    """Export ``checkpoint`` to ``out``; returns the metadata plus the parity result.
    Nothing is written at ``out`` unless the dims and parity checks pass."""
    out = Path(out)
    _check_writable(out)  # before ~20 s of work, not after
    ckpt = read_checkpoint(checkpoint)
    net = load_model(checkpoint)
    cfg = net.cfg
    meta = metadata_for(net, {**ckpt.get("summary", {}), **(extra_metadata or {})})
    validate_metadata(meta, str(checkpoint), n_outputs=net.classifier.out_features, channels=cfg.channels)
    # batch >= 2 and F0 >= 2 in the example: size-1 (and 0) dims get specialised by the exporter
    audio = torch.randn(2, cfg.receptive_field + 7 * cfg.embedding_stride) * 0.1
    cache = torch.randn(2, cfg.channels, 3)
    b, t, f = (
        torch.export.Dim("batch"),
        torch.export.Dim("samples", min=cfg.receptive_field),
        torch.export.Dim("frames"),
    )
    model = dynamo_export(
        StreamingGraph(net).eval(),
        (audio, cache),
        list(INPUTS),
        list(OUTPUTS),
        {"audio": {0: b, 1: t}, "cache": {0: b, 2: f}},
    )

    def check(tmp: Path, wavs: list[np.ndarray]) -> dict:
        _check_dims(tmp, len(cfg.labels), cfg.channels)
        return check_parity(tmp, net, wavs, tol)

    return save_checked(model, meta, out, parity_audio, cfg.sample_rate, check)


def dynamo_export(module: torch.nn.Module, example: tuple, inputs: list[str], outputs: list[str], shapes: dict):
    """``torch.onnx.export`` (dynamo, opset 18) of ``module`` -> the ModelProto, without the exporter's
    known noise; any other warning still shows."""
    # the exporter's op registry warns once per torchvision op when torchvision is absent (we never use them)
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # two known, harmless messages of the exporter
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
            warnings.filterwarnings("ignore", r"# The axis name: \w+ will not be used", UserWarning)  # shared batch Dim
            prog = torch.onnx.export(
                module,
                example,
                dynamo=True,
                opset_version=18,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=shapes,
                verbose=False,
            )
    finally:
        registry_log.setLevel(level)
    return prog.model_proto


def save_checked(model, meta: dict, out: Path, parity_audio: Sequence[str | Path], sample_rate: int, check) -> dict:
    """Write ``model`` with ``meta`` under the edgeser key to ``out.partial``, run ``check(path, wavs)``
    (dims and parity; the bundled demo clips when no ``parity_audio`` is given) and move it to ``out`` only
    when the check passes. Returns ``meta`` plus the parity result, the path and the size."""
    import onnx

    tmp = out.with_name(out.name + ".partial")
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    model.producer_name = "edgeser"
    for node in model.graph.node:  # the exporter's debug notes (they hold memory addresses): same weights, same bytes
        del node.metadata_props[:]
    onnx.save(model, str(tmp))
    try:
        wavs = [load_audio(p, sample_rate) for p in parity_audio]
        if not wavs:  # no clips given: the bundled demo clips are real speech
            from ..demo import demo_clips

            wavs = [load_audio(p, sample_rate) for p in demo_clips()]
        parity = check(tmp, wavs)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return {**meta, "parity": parity, "path": str(out), "bytes": out.stat().st_size}
