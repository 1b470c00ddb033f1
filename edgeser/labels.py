"""Vote aggregation, pure numpy (after Chou & Lee, arXiv 2510.05934).

A vote table ``votes`` is an ``(N, C)`` array of non-negative counts: how many raters picked each of
the ``C`` emotions for each of the ``N`` clips. Fractional counts are allowed (e.g. ties split by
:func:`votes_from_samples`). A clip's *shares* are its votes divided by its total.

The three rules of the dissertation:

* majority rule: keep a clip only if one class has more than half of its votes (hard label);
* plurality rule: the class(es) with the most votes, ties kept (multi-hot);
* all-inclusive rule: keep every clip and every vote, as a distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ManifestError
from .manifest import Clip


def _votes(votes: np.ndarray, *, allow_empty_rows: bool = False) -> np.ndarray:
    v = np.asarray(votes, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"votes must be a non-empty (N, C) table, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("votes must be finite")
    if np.any(v < 0):
        raise ValueError("votes must be non-negative")
    if not allow_empty_rows:
        empty = np.flatnonzero(v.sum(axis=1) <= 0)
        if empty.size:
            raise ValueError(f"{empty.size} clip(s) have no votes (first: row {int(empty[0])})")
    return v


def _shares(v: np.ndarray) -> np.ndarray:
    return v / v.sum(axis=1, keepdims=True)


def majority_rule(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority rule: ``(keep_mask (N,), hard_labels (N,))``.

    A clip is kept when one class has strictly more than half of its votes; ``hard_labels`` is that
    class, and -1 for clips that are not kept (no majority, or no votes at all).
    """
    v = _votes(votes, allow_empty_rows=True)
    top = v.argmax(axis=1)
    keep = v.max(axis=1) > v.sum(axis=1) / 2.0
    return keep, np.where(keep, top, -1).astype(np.int64)


def plurality_rule(votes: np.ndarray) -> np.ndarray:
    """Plurality rule: ``(N, C)`` multi-hot (int) of the classes with the most votes, ties all kept."""
    v = _votes(votes)
    return (v == v.max(axis=1, keepdims=True)).astype(np.int64)


def all_inclusive_rule(votes: np.ndarray) -> np.ndarray:
    """All-inclusive rule: every clip kept, target = its vote shares ``(N, C)``, rows sum to 1.

    Raises ``ValueError`` for a clip with zero votes.
    """
    return _shares(_votes(votes))


def soft_targets(votes: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """Vote shares with label smoothing: ``(1 - smoothing) * share + smoothing / C``."""
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    s = _shares(_votes(votes))
    return (1.0 - smoothing) * s + smoothing / s.shape[1]


def multi_hot(votes: np.ndarray, min_share: float | None = None) -> np.ndarray:
    """``(N, C)`` multi-hot (int): classes whose share is ``>= min_share``, plus the top class(es).

    ``votes`` may be counts or distributions (rows are normalised first). ``min_share`` defaults
    to ``1 / C``. The class(es) with the largest share are always included, so no row is empty.
    This is the rule :func:`edgeser.metrics.evaluate` uses for its multi-label F1.
    """
    s = _shares(_votes(votes))
    t = 1.0 / s.shape[1] if min_share is None else float(min_share)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"min_share must be in [0, 1], got {min_share}")
    tol = 1e-9  # shares are computed in floating point: 1/4 of 8 votes must count as 1/4
    top = s >= s.max(axis=1, keepdims=True) - tol
    return ((s >= t - tol) | top).astype(np.int64)


def cooccurrence_penalty(votes: np.ndarray) -> np.ndarray:
    """``(C, C)`` penalty matrix for predicting emotions together; emotions that co-occur cost less.

    With ``s_n`` the shares of clip ``n`` (counts or distributions, rows normalised):

    * co-occurrence ``A_ij = sum_n s_ni * s_nj`` (the chance that two votes drawn with replacement
      from the same clip are ``i`` and ``j``, summed over clips), mass ``D_i = sum_n s_ni``;
    * conditional co-occurrence ``Q_ij = A_ij / D_i`` (a vote for ``i`` is "accompanied" by ``j``;
      ``Q_ij = 0`` if ``D_i = 0``); row ``i`` of ``Q`` sums to 1 and ``Q_ii > 0``, so ``Q_ij < 1``;
    * ``P_ij = 1 - (Q_ij + Q_ji) / 2`` for ``i != j`` and ``P_ii = 0``.

    ``P`` is symmetric, off-diagonal entries lie in (0, 1]; 1 means never seen together.
    """
    s = _shares(_votes(votes))
    a = s.T @ s
    d = s.sum(axis=0)
    q = np.divide(a, d[:, None], out=np.zeros_like(a), where=d[:, None] > 0)
    p = 1.0 - (q + q.T) / 2.0
    np.fill_diagonal(p, 0.0)
    return p


def listener_soft_target(
    label_index: int | np.ndarray, recognition_pct: float | np.ndarray, n_classes: int
) -> np.ndarray:
    """Soft target from a listening test that only reports the recognition rate (EmoDB).

    The intended class gets ``r = pct / 100``; the remaining ``1 - r`` is spread uniformly over the
    other ``C - 1`` classes. The uniform spread is an assumption: EmoDB does not publish which
    emotions the other listeners chose. Scalars give ``(C,)``, arrays of length N give ``(N, C)``.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    idx = np.asarray(label_index)
    pct = np.asarray(recognition_pct, dtype=np.float64)
    scalar = idx.ndim == 0 and pct.ndim == 0
    idx, pct = np.broadcast_arrays(np.atleast_1d(idx), np.atleast_1d(pct))
    if not np.issubdtype(idx.dtype, np.integer) or np.any((idx < 0) | (idx >= n_classes)):
        raise ValueError(f"label_index must be integers in [0, {n_classes})")
    if not np.all(np.isfinite(pct)) or np.any((pct < 0) | (pct > 100)):
        raise ValueError("recognition_pct must be in [0, 100]")
    r = pct / 100.0
    out = np.repeat(((1.0 - r) / (n_classes - 1))[:, None], n_classes, axis=1)
    out[np.arange(len(idx)), idx] = r
    return out[0] if scalar else out


def votes_from_manifest(clips: Sequence[Clip], labels: Sequence[str]) -> np.ndarray:
    """Read the ``votes_<label>`` columns of each clip's ``extra`` into an ``(N, C)`` float table.

    Raises :class:`ManifestError` if a column is missing or a cell is not a non-negative number.
    """
    if not clips:
        raise ManifestError("no clips to read votes from")
    cols = [f"votes_{lab}" for lab in labels]
    out = np.zeros((len(clips), len(cols)), dtype=np.float64)
    for n, clip in enumerate(clips):
        name = clip.key or str(clip.path)
        missing = [c for c in cols if c not in clip.extra]
        if missing:
            raise ManifestError(
                f"{name}: manifest has no vote column(s) {', '.join(missing)} "
                f"(expected one 'votes_<label>' column per label: {', '.join(cols)})"
            )
        for c, col in enumerate(cols):
            raw = (clip.extra[col] or "").strip()
            try:
                val = float(raw)
            except ValueError:
                raise ManifestError(f"{name}: {col} is {raw!r}, not a number") from None
            if not np.isfinite(val) or val < 0:
                raise ManifestError(f"{name}: {col} is {raw!r}, not a non-negative number")
            out[n, c] = val
    return out


def votes_from_samples(samples: np.ndarray) -> np.ndarray:
    """Turn K sampled answers per clip ``(N, K, C)`` into vote counts ``(N, C)``.

    Each sample votes for its argmax class; a tie splits the vote equally between the tied classes
    (so counts may be fractional). Samples containing a NaN (unparsable LALM answers) are skipped;
    a clip whose samples are all NaN gets a row of zeros.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"samples must be a non-empty (N, K, C) array, got shape {x.shape}")
    valid = ~np.isnan(x).any(axis=2)
    if np.any(np.isinf(x[valid])):
        raise ValueError("samples must be finite (NaN rows are skipped, inf is an error)")
    filled = np.where(valid[..., None], x, -np.inf)
    top = (filled == filled.max(axis=2, keepdims=True)) & valid[..., None]
    per_sample = top / np.maximum(top.sum(axis=2, keepdims=True), 1)
    return per_sample.sum(axis=1)
