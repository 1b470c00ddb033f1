"""Evaluate a model (.onnx through the runtime, or a .pt checkpoint through torch) on a labelled
manifest and write a report (JSON + plots). Uses the same metric functions as the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ManifestError, ModelError
from .labels import all_inclusive_rule, listener_soft_target, votes_from_manifest
from .manifest import Clip, check_labels, read_manifest
from .metrics import evaluate as compute_metrics
from .report import format_table, write_report


def predict_probs(model: str | Path, clips: Sequence[Clip], threads: int = 1) -> tuple[list[str], np.ndarray]:
    """``(labels, probs [N, C])`` for ``clips`` with an ``.onnx`` (runtime only) or ``.pt`` model."""
    model = Path(model)
    if model.suffix == ".onnx":
        from .runtime import Recognizer

        rec = Recognizer.load(model, threads=threads)
        return rec.labels, np.stack([rec.predict_file(c.path).probs for c in clips])
    if model.suffix == ".pt":
        try:
            from .adapt.checkpoint import load_model
            from .adapt.data import load_clips, pick_device
            from .adapt.data import predict_probs as torch_probs
        except ImportError:
            raise ModelError(
                "evaluating a .pt checkpoint needs the training extra: pip install 'edgeser[adapt]'"
            ) from None
        net = load_model(model)
        device = pick_device()
        wavs = load_clips(clips, net.cfg.sample_rate, "evaluation clips", progress=False)
        return net.labels, torch_probs(net.to(device), wavs, device)
    raise ModelError(f"{model}: expected an .onnx model or a .pt checkpoint")


def reference_for(clips: Sequence[Clip], labels: list[str], kind: str = "labels") -> np.ndarray:
    """Integer labels (``labels``), vote shares (``votes``) or EmoDB's listener soft target (``listener``)."""
    if kind == "votes":
        return all_inclusive_rule(votes_from_manifest(clips, labels))
    if any(c.label is None for c in clips):
        raise ManifestError("evaluation needs a 'label' for every clip")
    check_labels(list(clips), labels, "evaluation manifest")
    y = np.array([labels.index(c.label) for c in clips])  # type: ignore[arg-type]
    if kind == "labels":
        return y
    pct = [c.extra.get("listener_recognition_pct", "").strip() for c in clips]
    if not all(pct):
        raise ManifestError("--reference listener needs listener_recognition_pct for every clip")
    return listener_soft_target(y, np.array(pct, dtype=float), len(labels))


def evaluate_model(
    model: str | Path, manifest: str | Path, out_dir: str | Path, reference: str = "labels", threads: int = 1
) -> dict:
    """Predict, compute every metric, write ``report.json`` (+ PNGs) to ``out_dir``."""
    clips = read_manifest(manifest)
    labels, probs = predict_probs(model, clips, threads)
    ref = reference_for(clips, labels, reference)
    metrics = compute_metrics(probs, labels, ref)
    metrics.update(model=str(model), manifest=str(manifest), reference=reference, labels=labels)
    files = write_report(out_dir, metrics, probs, ref, labels)
    return {
        "metrics": metrics,
        "table": format_table(metrics, labels),
        "report": str(files.json),
        "plots": [str(p) for p in files.plots],
        "note": files.note,
    }
