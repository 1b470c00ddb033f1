"""Evaluation metrics, pure numpy.

Conventions:

* ``probs`` is ``(N, C)``: one probability row per clip (finite, non-negative, rows sum to 1).
* a *reference* is either integer labels ``(N,)`` or soft label rows ``(N, C)``. Where a hard label
  is needed, a soft row's label is its argmax (the first class on ties).
* decision metrics (:func:`confusion_matrix`, :func:`per_class_recall`, UA, WA, macro-F1) take
  ``(y_true, y_pred)``, each integer labels or rows (argmax taken);
  probabilistic metrics (NLL, Brier, ECE, JS) take ``(probs, reference)``.
* UA and macro-F1 average over the classes *present in the reference* (a corpus may lack a class).
* empty input raises ``ValueError``; no metric returns NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .labels import multi_hot

EPS = 1e-12


def _rows(x: np.ndarray, name: str, n_classes: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, C) array, got shape {np.shape(x)}")
    if n_classes is not None and a.shape[1] != n_classes:
        raise ValueError(f"{name} has {a.shape[1]} columns, expected {n_classes}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    if not np.allclose(a.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{name} rows must sum to 1")
    return a


def _hard(y: np.ndarray, name: str, n_classes: int | None = None) -> np.ndarray:
    """Integer labels from labels ``(N,)`` or rows ``(N, C)`` (argmax)."""
    a = np.asarray(y)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if a.ndim == 2:
        return _rows(a, name, n_classes).argmax(axis=1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be labels (N,) or rows (N, C), got shape {a.shape}")
    if a.dtype.kind not in "iu":
        if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name} labels must be integers")
        a = a.astype(np.int64)
    if np.any(a < 0) or (n_classes is not None and np.any(a >= n_classes)):
        raise ValueError(f"{name} labels must be in [0, {n_classes})")
    return a.astype(np.int64)


def _n_classes(*ys: np.ndarray) -> int:
    """Class count from the width of any row array, else from the largest label."""
    for y in ys:
        if np.ndim(y) == 2:
            return int(np.shape(y)[1])
    if any(np.size(y) == 0 for y in ys):
        raise ValueError("empty input: no clips to evaluate")
    return int(max(np.max(y) for y in ys)) + 1


def _pair(y_true, y_pred, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    c = n_classes if n_classes is not None else _n_classes(y_true, y_pred)
    t, p = _hard(y_true, "y_true", c), _hard(y_pred, "y_pred", c)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} clips, y_pred {len(p)}")
    return t, p, c


def _target(reference: np.ndarray, n: int, c: int) -> np.ndarray:
    """Reference as ``(N, C)`` rows (one-hot for integer labels)."""
    ref = np.asarray(reference)
    if ref.ndim == 2:
        q = _rows(ref, "reference", c)
    else:
        q = np.eye(c)[_hard(ref, "reference", c)]
    if len(q) != n:
        raise ValueError(f"reference has {len(q)} clips, probs {n}")
    return q


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(C, C)`` int counts: rows are the reference class, columns the predicted class."""
    t, p, c = _pair(y_true, y_pred, n_classes)
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_recall(y_true, y_pred, n_classes: int | None = None) -> dict[int, float]:
    """Recall of each class present in ``y_true``: ``{class_index: recall}`` (absent classes left out)."""
    t, p, c = _pair(y_true, y_pred, n_classes)
    cm = confusion_matrix(t, p, c)
    support = cm.sum(axis=1)
    return {k: float(cm[k, k] / support[k]) for k in range(c) if support[k] > 0}


def unweighted_accuracy(y_true, y_pred, n_classes: int | None = None) -> float:
    """UA: mean recall over the classes present in ``y_true``."""
    return float(np.mean(list(per_class_recall(y_true, y_pred, n_classes).values())))


def weighted_accuracy(y_true, y_pred, n_classes: int | None = None) -> float:
    """WA: plain accuracy, the fraction of clips whose predicted class is the reference class."""
    t, p, _ = _pair(y_true, y_pred, n_classes)
    return float(np.mean(t == p))


def macro_f1(y_true, y_pred, n_classes: int | None = None) -> float:
    """Mean F1 over the classes present in ``y_true`` (the same class set as UA).

    A class absent from the reference is not averaged; predicting it still counts as a miss
    (false negative) of the clip's true class. ``F1 = 2TP / (2TP + FP + FN)``.
    """
    t, p, c = _pair(y_true, y_pred, n_classes)
    cm = confusion_matrix(t, p, c)
    tp = np.diag(cm).astype(np.float64)
    present = cm.sum(axis=1) > 0
    denom = cm.sum(axis=1) + cm.sum(axis=0)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros(c), where=denom > 0)
    return float(f1[present].mean())


def nll(probs, reference, eps: float = EPS) -> float:
    """Mean negative log-likelihood (cross-entropy with soft rows), natural log, ``p`` clipped at eps."""
    p = _rows(probs, "probs")
    q = _target(reference, len(p), p.shape[1])
    return float(np.mean(-(q * np.log(np.clip(p, eps, 1.0))).sum(axis=1)))


def brier(probs, reference) -> float:
    """Brier score: mean over clips of ``sum_c (p_c - q_c)^2`` (q one-hot or soft); in [0, 2]."""
    p = _rows(probs, "probs")
    q = _target(reference, len(p), p.shape[1])
    return float(np.mean(((p - q) ** 2).sum(axis=1)))


def reliability_bins(probs, reference, n_bins: int = 15) -> dict[str, list[float] | list[int]]:
    """Top-label reliability: confidence = max prob, correct = argmax equals the reference label.

    Equal-width bins over [0, 1]; bin ``b`` holds confidences in ``(b/B, (b+1)/B]`` (0 goes to the
    first bin). Returns ``edges`` (B+1), ``count``, ``confidence`` (mean) and ``accuracy`` (B each);
    the means are 0 in empty bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    p = _rows(probs, "probs")
    y = _hard(reference, "reference", p.shape[1])
    if len(y) != len(p):
        raise ValueError(f"reference has {len(y)} clips, probs {len(p)}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    safe = np.maximum(count, 1)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "confidence": (np.bincount(b, conf, n_bins) / safe).tolist(),
        "accuracy": (np.bincount(b, correct, n_bins) / safe).tolist(),
    }


def ece(probs, reference, n_bins: int = 15) -> float:
    """Expected calibration error (top-label): ``sum_b n_b / N * |accuracy_b - confidence_b|``."""
    r = reliability_bins(probs, reference, n_bins)
    n = np.asarray(r["count"], dtype=np.float64)
    gap = np.abs(np.asarray(r["accuracy"]) - np.asarray(r["confidence"]))
    return float((n * gap).sum() / n.sum())


def js_divergence(p, q, per_row: bool = False) -> float | np.ndarray:
    """Jensen-Shannon divergence in bits (base 2, so in [0, 1]) between rows of ``p`` and ``q``.

    Returns the mean over rows, or the ``(N,)`` per-row values with ``per_row=True``.
    ``0 log 0`` is taken as 0.
    """
    a, b = _rows(p, "p"), _rows(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p has shape {a.shape}, q {b.shape}")
    m = (a + b) / 2.0

    def kl(x: np.ndarray) -> np.ndarray:
        ratio = np.divide(x, m, out=np.ones_like(x), where=x > 0)
        return (x * np.log2(ratio)).sum(axis=1)

    js = np.clip((kl(a) + kl(b)) / 2.0, 0.0, 1.0)
    return js if per_row else float(js.mean())


def multilabel_f1(pred_multi_hot, ref_multi_hot, average: str = "macro") -> float:
    """F1 between ``(N, C)`` multi-hot predictions and references.

    ``average="macro"`` (default): mean of per-class F1 over the classes that are positive in at
    least one reference row (as for :func:`macro_f1`); ``"micro"``: F1 of the pooled TP/FP/FN.
    An F1 with a zero denominator is 0.
    """
    pr = np.asarray(pred_multi_hot).astype(bool)
    rf = np.asarray(ref_multi_hot).astype(bool)
    if pr.ndim != 2 or pr.size == 0:
        raise ValueError(f"pred_multi_hot must be a non-empty (N, C) array, got shape {pr.shape}")
    if pr.shape != rf.shape:
        raise ValueError(f"pred_multi_hot has shape {pr.shape}, ref_multi_hot {rf.shape}")
    tp = (pr & rf).sum(axis=0).astype(np.float64)
    fp = (pr & ~rf).sum(axis=0)
    fn = (~pr & rf).sum(axis=0)
    if average == "micro":
        d = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / d) if d > 0 else 0.0
    if average != "macro":
        raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
    present = rf.any(axis=0)
    if not present.any():
        raise ValueError("ref_multi_hot has no positive entries")
    d = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, d, out=np.zeros_like(tp), where=d > 0)
    return float(f1[present].mean())


def evaluate(
    probs,
    labels: Sequence[str],
    reference,
    *,
    n_bins: int = 15,
    multilabel_threshold: float | None = None,
    eps: float = EPS,
) -> dict:
    """All metrics as a JSON-serialisable dict.

    ``reference``: integer labels ``(N,)`` or soft rows ``(N, C)`` (hard label = argmax). Keys:
    ``n, ua, wa, macro_f1, per_class_recall`` (label -> recall, present classes only),
    ``confusion_matrix`` (rows = reference), ``nll, brier, ece``; with a soft reference also ``js``
    (mean JS divergence, bits) and ``multilabel_f1`` (macro). For the latter, both the reference and
    the prediction become multi-hot with :func:`edgeser.labels.multi_hot`: a class is on when its
    probability is ``>= multilabel_threshold`` (default ``1 / C``) or equal to the row's maximum.
    """
    p = _rows(probs, "probs")
    c = p.shape[1]
    if len(labels) != c:
        raise ValueError(f"{len(labels)} labels for {c} probability columns")
    soft = np.ndim(reference) == 2
    q = _target(reference, len(p), c)
    y = q.argmax(axis=1) if soft else _hard(reference, "reference", c)
    pred = p.argmax(axis=1)
    out = {
        "n": int(len(p)),
        "ua": unweighted_accuracy(y, pred, c),
        "wa": weighted_accuracy(y, pred, c),
        "macro_f1": macro_f1(y, pred, c),
        "per_class_recall": {labels[k]: v for k, v in per_class_recall(y, pred, c).items()},
        "confusion_matrix": confusion_matrix(y, pred, c).tolist(),
        "nll": nll(p, q, eps),
        "brier": brier(p, q),
        "ece": ece(p, y, n_bins),
    }
    if soft:
        out["js"] = float(js_divergence(p, q))
        out["multilabel_f1"] = multilabel_f1(multi_hot(p, multilabel_threshold), multi_hot(q, multilabel_threshold))
    return out
