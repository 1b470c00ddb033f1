"""The edgeser ONNX model contract, defined once: the metadata key and fields, the graph's input and
output names, hop rounding, and validation. ``edgeser.export`` writes what this module checks;
docs/ONNX_CONTRACT.md describes it for apps in other languages."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelError

METADATA_KEY = "edgeser"
FORMAT = 1
INPUTS = ("audio", "cache")
OUTPUTS = ("logits", "embeddings")
REQUIRED = ("labels", "sample_rate", "window_s", "hop_s", "receptive_field", "embedding_stride", "embedding_dim")


def hop_samples(hop_s: float, sample_rate: int, stride: int) -> int:
    """A hop in samples: ``hop_s`` rounded to a whole number of embedding strides, at least one.

    >>> hop_samples(0.5, 16000, 320), hop_samples(0.01, 16000, 320), hop_samples(0.11, 16000, 320)
    (8000, 320, 1920)
    """
    return max(1, int(round(hop_s * sample_rate / stride))) * stride


def _positive_int(meta: dict, key: str, where: str) -> int:
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or v != int(v):
        raise ModelError(f"{where}: metadata '{key}' must be a positive integer, got {v!r}")
    return int(v)


def _positive_float(meta: dict, key: str, where: str) -> float:
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ModelError(f"{where}: metadata '{key}' must be a positive number, got {v!r}")
    return float(v)


def validate_metadata(meta: Any, where: str, n_outputs: int | None = None, channels: int | None = None) -> dict:
    """Check an edgeser metadata object (and, when known, the graph's logits width ``n_outputs`` and
    cache channels ``channels``); a one-line :class:`ModelError` names the first problem."""
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: edgeser metadata must be a JSON object")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ModelError(f"{where}: edgeser metadata lacks {missing}")
    labels = meta["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ModelError(f"{where}: metadata 'labels' must be a non-empty list of names, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ModelError(f"{where}: metadata 'labels' has duplicates: {labels}")
    if n_outputs is not None and n_outputs != len(labels):
        raise ModelError(f"{where}: {len(labels)} labels in the metadata but the model outputs {n_outputs} scores")
    sr = _positive_int(meta, "sample_rate", where)
    rf = _positive_int(meta, "receptive_field", where)
    stride = _positive_int(meta, "embedding_stride", where)
    dim = _positive_int(meta, "embedding_dim", where)
    window, hop = _positive_float(meta, "window_s", where), _positive_float(meta, "hop_s", where)
    if stride > rf:
        raise ModelError(f"{where}: embedding_stride {stride} exceeds the receptive field {rf}")
    if channels is not None and channels != dim:
        raise ModelError(f"{where}: embedding_dim {dim} in the metadata but the graph's cache has {channels} channels")
    if window * sr < rf:
        raise ModelError(f"{where}: window_s {window} is shorter than the receptive field ({rf / sr:.3f} s)")
    return {
        **meta,
        "labels": list(labels),
        "sample_rate": sr,
        "receptive_field": rf,
        "embedding_stride": stride,
        "embedding_dim": dim,
        "window_s": window,
        "hop_s": hop,
    }
