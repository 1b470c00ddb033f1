"""Global teacher reliability from unlabelled data (pure numpy; issue 8, item 2).

Per-clip uncertainty weighting cannot tell that one teacher is better *overall*: an LALM that is
confidently wrong looks as sure as one that is right. The estimator here asks instead how well each
teacher agrees with a **referee**: a ridge classifier on clip-level log-mel statistics
(:func:`logmel_stats`), trained on the fixed teachers' (LALM) labels and evaluated only on clips it was
not trained on (cross-fitting). The referee learns the part of the LALM's labelling that the audio
predicts -- the emotion, as far as these statistics carry it -- and not its per-clip mistakes, which a clip
it never saw cannot teach it. A teacher's reliability is Cohen's kappa of its top class against the
referee's. The statistics, not the classifier's own embeddings, because a referee that is a linear
function of the classifier's embeddings agrees with the classifier for that reason alone (measured in
docs/ADAPTATION.md, "Teacher reliability").

Assumption: the LALM's mistakes are not predictable from the audio statistics. Mistakes that are (a class
bias, a misread voice) are learnt by the referee and count for the LALM.

* :func:`logmel_stats` -- the referee's features;
* :func:`ridge_fit` / :func:`crossfit_predict` -- the referee;
* :func:`cohen_kappa` -- chance-corrected agreement of two label vectors;
* :func:`reliability_prior` -- kappas -> a prior over teachers that multiplies the per-clip weights
  (``max(kappa, 0) ** power``, normalised).
"""

from __future__ import annotations

import numpy as np

DEFAULT_POWER = 2.0
DEFAULT_FOLDS = 5
DEFAULT_RIDGE = 10.0


def logmel_stats(logmel: np.ndarray) -> np.ndarray:
    """``[n_mels, frames]`` log-mel of one clip -> ``[3 * n_mels]``: per band the mean and standard deviation
    over time and the standard deviation of the frame-to-frame difference (level, spread and movement)."""
    m = np.asarray(logmel, np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"need a [n_mels, frames >= 2] log-mel, got shape {m.shape}")
    return np.concatenate([m.mean(axis=1), m.std(axis=1), np.diff(m, axis=1).std(axis=1)])


def cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa of two integer label vectors (``(p_o - p_e) / (1 - p_e)``); NaN for no pair, 0 when
    chance agreement is already 1 (both constant on the same class)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if a.shape != b.shape:
        raise ValueError(f"label vectors differ in shape: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return float("nan")
    po = float(np.mean(a == b))
    pa = np.bincount(a, minlength=n_classes) / len(a)
    pb = np.bincount(b, minlength=n_classes) / len(b)
    pe = float(pa @ pb)
    return 0.0 if pe >= 1.0 else (po - pe) / (1.0 - pe)


def ridge_fit(x: np.ndarray, y: np.ndarray, n_classes: int, ridge: float = DEFAULT_RIDGE) -> tuple:
    """Ridge regression of one-hot ``y`` on standardised ``x`` (with a bias): ``(mean, scale, W)``."""
    x = np.asarray(x, np.float64)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    t = np.eye(n_classes)[np.asarray(y, np.int64)]
    reg = ridge * np.eye(z.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    w = np.linalg.solve(z.T @ z + reg, z.T @ t)
    return mu, sd, w


def ridge_predict(model: tuple, x: np.ndarray) -> np.ndarray:
    """Class scores ``[N, C]`` of :func:`ridge_fit`'s model."""
    mu, sd, w = model
    z = np.hstack([(np.asarray(x, np.float64) - mu) / sd, np.ones((len(x), 1))])
    return z @ w


def crossfit_predict(
    x: np.ndarray,
    y: np.ndarray,
    labelled: np.ndarray,
    n_classes: int,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    ridge: float = DEFAULT_RIDGE,
) -> np.ndarray:
    """Top class ``[N]`` for every clip from a ridge classifier that never saw that clip's label: the
    labelled clips are split into ``folds`` (seeded), each fold predicted by a model fitted on the others;
    unlabelled clips are predicted by a model fitted on all labelled clips. Needs >= 2 labelled clips."""
    x = np.asarray(x, np.float64)
    labelled = np.asarray(labelled, bool)
    idx = np.flatnonzero(labelled)
    if len(idx) < 2:
        raise ValueError(f"the referee needs at least 2 labelled clips, got {len(idx)}")
    y = np.asarray(y, np.int64)
    out = np.empty(len(x), np.int64)
    k = max(2, min(folds, len(idx)))
    fold = np.empty(len(idx), np.int64)
    fold[np.random.default_rng([seed, 11]).permutation(len(idx))] = np.arange(len(idx)) % k
    for f in range(k):
        train, test = idx[fold != f], idx[fold == f]
        out[test] = ridge_predict(ridge_fit(x[train], y[train], n_classes, ridge), x[test]).argmax(axis=1)
    rest = np.flatnonzero(~labelled)
    if len(rest):
        out[rest] = ridge_predict(ridge_fit(x[idx], y[idx], n_classes, ridge), x[rest]).argmax(axis=1)
    return out


def teacher_kappas(referee: np.ndarray, means: np.ndarray, n_classes: int) -> np.ndarray:
    """``[T]`` kappa of each teacher's top class (``means`` ``[N, T, C]``, NaN rows: no answer) against the
    referee's ``[N]``, over the clips that teacher answered (NaN: none)."""
    means = np.asarray(means, np.float64)
    out = np.full(means.shape[1], np.nan)
    for t in range(means.shape[1]):
        ok = np.all(np.isfinite(means[:, t]), axis=1)
        if ok.any():
            out[t] = cohen_kappa(referee[ok], means[ok, t].argmax(axis=1), n_classes)
    return out


def reliability_prior(kappas: np.ndarray, power: float = DEFAULT_POWER) -> np.ndarray:
    """``[T]`` prior over teachers: ``max(kappa, 0) ** power`` normalised to sum 1 (NaN kappa -> 0). When
    no teacher agrees with the referee above chance, all get the same prior (no evidence either way)."""
    if not power > 0:
        raise ValueError(f"power must be positive, got {power}")
    k = np.nan_to_num(np.asarray(kappas, np.float64), nan=0.0)
    raw = np.clip(k, 0.0, None) ** power
    if raw.sum() <= 0:
        return np.full(len(k), 1.0 / len(k))
    return raw / raw.sum()
