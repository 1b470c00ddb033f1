"""Uncertainty-weighted fusion of teachers' stochastic predictions (pure numpy).

Each teacher gives ``K`` sampled class distributions per clip, ``(N, K, C)`` (an LALM asked ``K``
times, a classifier under ``K`` MC-dropout passes); a NaN row is a sample that was not obtained.

* :func:`summarize` -> a teacher's mean distribution ``pbar = mean_k p_k`` and its mutual information
  (BALD) ``MI = H(pbar) - mean_k H(p_k)`` per clip, over its valid samples;
* :func:`teacher_weights` -> per-clip weights over teachers, decreasing in their uncertainty;
* :func:`fuse` -> the fused soft label ``sum_t w_t pbar_t``; a teacher without a valid sample for a clip
  gets weight 0 there, a clip no teacher covers gets a NaN target (the trainer skips it).

Default: ``w_t ~ exp(-(H(pbar_t) - mean_clips H(pbar_t)) / 0.3)`` -- each teacher's predictive entropy,
centred per teacher -- because an LALM's vote MI and a classifier's MC-dropout MI are an order of
magnitude apart for reasons unrelated to which teacher is right. The measurements behind this are in
``docs/ADAPTATION.md`` ("Fusion defaults").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("softmax", "inverse", "equal")
DEFAULT_METHOD = "softmax"
DEFAULT_TAU = 0.3
DEFAULT_EPS = 0.05
UNCERTAINTIES = ("entropy", "mi")
DEFAULT_UNCERTAINTY = "entropy"
DEFAULT_RELATIVE = True
#: share of the uniform distribution mixed into a class prior estimated from teachers' labels
DEFAULT_PRIOR_FLOOR = 0.1


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (``0 log 0 = 0``); NaN where ``p`` has a NaN."""
    p = np.asarray(p, dtype=np.float64)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=axis)


def _check_samples(samples: np.ndarray) -> np.ndarray:
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 3 or s.shape[1] == 0 or s.shape[2] == 0:
        raise ValueError(f"samples must be (N, K, C) with K, C >= 1, got shape {np.shape(samples)}")
    return s


def valid_rows(samples: np.ndarray) -> np.ndarray:
    """``(N, K)`` bool: the sample rows that are usable distributions (all entries finite)."""
    return np.all(np.isfinite(_check_samples(samples)), axis=2)


def summarize(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K, C)`` samples -> ``(mean (N, C), mi (N,))``.

    Per clip only the valid rows (all finite) count; rows are clipped at 0 and renormalised. A clip
    with no valid row gets a NaN mean and a NaN MI. MI = ``H(mean_k p_k) - mean_k H(p_k)`` (BALD),
    nats, clipped at 0 against rounding; with one valid sample it is 0."""
    s = _check_samples(samples)
    ok = valid_rows(s)
    s = np.where(ok[:, :, None], np.clip(s, 0.0, None), 0.0)
    tot = s.sum(axis=2, keepdims=True)
    s = np.divide(s, tot, out=np.zeros_like(s), where=tot > 0)
    ok &= tot[:, :, 0] > 0
    n = ok.sum(axis=1)
    has = n > 0
    mean = np.full((s.shape[0], s.shape[2]), np.nan)
    mi = np.full(s.shape[0], np.nan)
    if has.any():
        m = (s[has] * ok[has][:, :, None]).sum(axis=1) / n[has][:, None]
        h_each = np.where(ok[has], entropy(s[has]), 0.0).sum(axis=1) / n[has]
        mean[has] = m
        mi[has] = np.clip(entropy(m) - h_each, 0.0, None)
    return mean, mi


def teacher_weights(
    mi: np.ndarray,
    method: str = DEFAULT_METHOD,
    tau: float = DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """``(N, T)`` uncertainty (MI or entropy, nats) per clip and teacher -> ``(N, T)`` weights summing
    to 1 over the teachers that cover the clip (NaN -> weight 0; a clip no teacher covers -> all 0).

    ``"softmax"``: ``w ∝ exp(-u / tau)``; ``"inverse"``: ``w ∝ 1 / (u + eps)``; ``"equal"``. ``prior``
    ``(T,)`` (e.g. :func:`edgeser.adapt.reliability.reliability_prior`) multiplies every clip's weights
    before they are normalised; where the covering teachers' priors are all 0 the clip keeps its
    uncertainty weights."""
    mi = np.asarray(mi, dtype=np.float64)
    if mi.ndim != 2:
        raise ValueError(f"mi must be (N, T), got shape {mi.shape}")
    ok = np.isfinite(mi)
    x = np.where(ok, mi, 0.0)
    if method == "softmax":
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        low = np.min(np.where(ok, x, np.inf), axis=1, keepdims=True)
        low = np.where(np.isfinite(low), low, 0.0)
        raw = np.exp(-(x - low) / tau)
    elif method == "inverse":
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        raw = 1.0 / (x + eps)
    elif method == "equal":
        raw = np.ones_like(x)
    else:
        raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, got {method!r}")
    raw = np.where(ok, raw, 0.0)
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (mi.shape[1],) or not np.all(np.isfinite(prior)) or np.any(prior < 0):
            raise ValueError(f"prior must be {mi.shape[1]} non-negative numbers, got {prior!r}")
        scaled = raw * prior[None, :]
        raw = np.where(scaled.sum(axis=1, keepdims=True) > 0, scaled, raw)
    tot = raw.sum(axis=1, keepdims=True)
    return np.divide(raw, tot, out=np.zeros_like(raw), where=tot > 0)


@dataclass
class Fused:
    """Result of :func:`fuse`: ``target`` ``(N, C)`` (NaN rows: no teacher), ``weights`` ``(N, T)``,
    ``mi`` ``(N, T)`` BALD MI (NaN: teacher lacks the clip), ``means`` ``(N, T, C)``, and
    ``uncertainty`` ``(N, T)``: what the weights were computed from (MI or ``H(mean)``, centred per
    teacher when relative)."""

    target: np.ndarray
    weights: np.ndarray
    mi: np.ndarray
    means: np.ndarray
    uncertainty: np.ndarray | None = None

    @property
    def covered(self) -> np.ndarray:
        """``(N,)`` bool: clips with a fused target."""
        return np.all(np.isfinite(self.target), axis=1)


def fuse(
    samples_per_teacher: Sequence[np.ndarray],
    method: str = DEFAULT_METHOD,
    tau: float = DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
    uncertainty: str = DEFAULT_UNCERTAINTY,
    relative: bool = DEFAULT_RELATIVE,
    prior: np.ndarray | None = None,
) -> Fused:
    """Fuse teachers' ``(N, K_t, C)`` samples (``K_t`` may differ) into per-clip soft labels
    ``sum_t w_t mean_t``, weights from each teacher's ``uncertainty`` per clip: ``"entropy"``
    (``H(mean_t)``, default) or ``"mi"`` (BALD MI), minus that teacher's mean over the clips it
    covers when ``relative`` (default; needs the whole clip set in one call); ``prior`` ``(T,)`` scales
    each teacher's weights (:func:`teacher_weights`). See the module docstring for the defaults."""
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {uncertainty!r}")
    if len(samples_per_teacher) == 0:
        raise ValueError("fuse needs at least one teacher")
    arrs = [_check_samples(s) for s in samples_per_teacher]
    n, c = arrs[0].shape[0], arrs[0].shape[2]
    for a in arrs[1:]:
        if a.shape[0] != n or a.shape[2] != c:
            raise ValueError(f"teachers disagree on (N, C): {[a.shape for a in arrs]}")
    stats = [summarize(a) for a in arrs]
    means = np.stack([m for m, _ in stats], axis=1)
    mi = np.stack([x for _, x in stats], axis=1)
    u = mi if uncertainty == "mi" else entropy(means)
    if relative:
        if method == "inverse":
            raise ValueError("inverse weighting needs absolute uncertainties (relative=False)")
        level = np.array([np.nanmean(col) if np.isfinite(col).any() else 0.0 for col in u.T])
        u = u - level[None, :]
    w = teacher_weights(u, method, tau, eps, prior)
    target = (w[:, :, None] * np.nan_to_num(means)).sum(axis=1)
    target[w.sum(axis=1) == 0] = np.nan
    return Fused(target=target, weights=w, mi=mi, means=means, uncertainty=u)


def coverage_weights(covers: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """``(N,)`` how much of the teachers' trust each clip's label carries: the sum, over the teachers that
    answered the clip (``covers`` ``(N, T)`` bool), of their ``prior`` ``(T,)`` normalised to sum 1 (None:
    equal). 1 where every teacher answered; a clip only a distrusted teacher answered counts little."""
    covers = np.asarray(covers, bool)
    if covers.ndim != 2:
        raise ValueError(f"covers must be (N, T), got shape {covers.shape}")
    t = covers.shape[1]
    p = np.full(t, 1.0 / t) if prior is None else np.asarray(prior, np.float64)
    if p.shape != (t,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"prior must be {t} non-negative numbers with a positive sum, got {prior!r}")
    return covers @ (p / p.sum())


def class_prior(targets: np.ndarray, floor: float = DEFAULT_PRIOR_FLOOR) -> np.ndarray:
    """``(C,)`` class prior from soft targets ``(N, C)`` (NaN rows, clips no teacher labelled, are left out):
    their mean, mixed with the uniform distribution by ``floor`` so that every class keeps at least
    ``floor / C``; uniform when no row is finite.

    >>> class_prior(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [np.nan, np.nan, np.nan]]), floor=0.3).round(3)
    array([0.45, 0.45, 0.1 ])
    """
    t = np.asarray(targets, np.float64)
    if t.ndim != 2 or t.shape[1] == 0:
        raise ValueError(f"targets must be (N, C) with C >= 1, got shape {t.shape}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    c = t.shape[1]
    rows = t[np.all(np.isfinite(t), axis=1)]
    if len(rows) == 0:
        return np.full(c, 1.0 / c)
    mean = np.clip(rows, 0.0, None).mean(axis=0)
    mean = mean / mean.sum() if mean.sum() > 0 else np.full(c, 1.0 / c)
    return (1.0 - floor) * mean + floor / c


def sharpen(target: np.ndarray, temperature: float) -> np.ndarray:
    """Rows ``p^(1/T)`` renormalised (``T < 1`` sharpens, 1 is the identity); NaN rows stay NaN."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = np.asarray(target, dtype=np.float64)
    if temperature == 1.0:
        return t.copy()
    logp = np.log(np.clip(t, 1e-12, None)) / temperature
    logp -= np.max(logp, axis=-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=-1, keepdims=True)


def fusion_stats(fused: Fused, names: Sequence[str]) -> dict:
    """JSON-able summary: per teacher the mean weight, mean MI and coverage over covered clips,
    how often the teachers' top classes agree, and how often the fused label follows each."""
    cov = fused.covered
    top = np.where(np.isfinite(fused.means).all(axis=2), np.nan_to_num(fused.means).argmax(axis=2), -1)
    fused_top = np.nan_to_num(fused.target).argmax(axis=1)
    out: dict = {"clips": int(len(cov)), "covered": int(cov.sum()), "teachers": {}}
    for t, name in enumerate(names):
        has = np.isfinite(fused.mi[:, t])
        out["teachers"][name] = {
            "coverage": float(has.mean()) if len(has) else 0.0,
            "mean_weight": float(fused.weights[cov, t].mean()) if cov.any() else 0.0,
            "mean_mi": float(np.nanmean(fused.mi[has, t])) if has.any() else None,
            "mean_entropy": float(np.nanmean(entropy(fused.means[has, t]))) if has.any() else None,
            "fused_follows": float((top[cov & has, t] == fused_top[cov & has]).mean()) if (cov & has).any() else None,
        }
    if len(names) > 1:
        both = np.all(top >= 0, axis=1)
        out["agreement"] = float(np.all(top[both] == top[both][:, :1], axis=1).mean()) if both.any() else None
    return out
