"""An LALM call budget (issue 8, item 4): which clips to ask the LALM about when it may hear only some.

Real LALM calls cost money and time. With a budget of ``n`` clips the LALM hears ``n``, the other teachers
(the EMA classifier) cover the rest, and every clip still trains the student. The clips are chosen from
the source classifier's predictions alone (pure numpy, no labels):

* **stratified** over the classifier's predicted classes, in proportion to how often it predicts each (at
  least one per predicted class while the budget lasts), so no class the classifier sees goes without LALM
  labels;
* within a class, the clips the classifier is **least sure** of first (highest entropy of its mean
  prediction): where it is sure, the LALM's answer changes the fused label least.

Ties are broken by a seeded random order, so a selection is reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import EdgeserError


def parse_budget(budget: int | str | None, n_clips: int) -> int | None:
    """Clips the LALM may hear: ``None`` (all), an integer count, or ``"25%"`` of ``n_clips`` (rounded
    up); at most ``n_clips``. A malformed or non-positive budget is an :class:`EdgeserError`."""
    if budget is None:
        return None
    text = str(budget).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            n = math.ceil(share / 100 * n_clips)
        else:
            n = int(text)
            if n < 1:
                raise ValueError
    except ValueError:
        raise EdgeserError(
            f"LALM budget must be a positive number of clips or a percentage in (0, 100] like 25%, got {budget!r}"
        ) from None
    return min(n, n_clips)


def entropy_rows(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``p`` (``0 log 0 = 0``)."""
    p = np.asarray(p, np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


def quotas(counts: np.ndarray, budget: int) -> np.ndarray:
    """Per class, how many of ``budget`` clips to take given ``counts`` clips predicted per class: one for
    each non-empty class first (largest classes first while the budget lasts), the rest in proportion to
    the counts by largest remainder, never more than a class has."""
    counts = np.asarray(counts, np.int64)
    budget = int(min(budget, counts.sum()))
    take = np.zeros_like(counts)
    for c in np.argsort(-counts, kind="stable"):
        if take.sum() < budget and counts[c] > 0:
            take[c] = 1
    while take.sum() < budget:
        room = counts - take
        left = budget - take.sum()
        ideal = counts / counts.sum() * budget - take
        ideal = np.where(room > 0, ideal, -np.inf)
        add = np.minimum(room, np.floor(np.clip(ideal, 0, None)).astype(np.int64))
        if add.sum() == 0:
            add = np.zeros_like(take)
            add[int(np.argmax(ideal))] = 1
        add = np.minimum(add, left) if add.sum() > left else add
        while add.sum() > left:
            add[int(np.argmax(add))] -= 1
        take += add
    return take


#: how :func:`select_clips` orders the clips (the first is the default), each with what it does
RULES = {
    "least-sure": "stratified over the source model's predicted classes, least sure first",
    "stratified": "stratified over the source model's predicted classes, in a random order",
    "random": "a random sample",
}


def select_clips(probs: np.ndarray, budget: int, seed: int = 0, rule: str = "least-sure") -> np.ndarray:
    """Sorted indices of the ``budget`` clips to ask the LALM about, from the source classifier's class
    probabilities ``[N, C]`` (see the module docstring and :data:`RULES`).

    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8], [0.45, 0.55]])
    >>> select_clips(p, 2).tolist()  # one per predicted class, the least sure of each
    [2, 4]
    """
    if rule not in RULES:
        raise ValueError(f"budget rule must be one of {', '.join(RULES)}, got {rule!r}")
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    if budget >= n:
        return np.arange(n)
    tiebreak = np.random.default_rng([seed, 4]).random(n)
    if rule == "random":
        return np.sort(np.argsort(tiebreak, kind="stable")[:budget])
    pred = probs.argmax(axis=1)
    h = entropy_rows(probs) if rule == "least-sure" else np.zeros(n)
    take = quotas(np.bincount(pred, minlength=probs.shape[1]), budget)
    chosen = []
    for c, k in enumerate(take):
        members = np.flatnonzero(pred == c)
        order = members[np.lexsort((tiebreak[members], -h[members]))]
        chosen.extend(order[:k].tolist())
    return np.sort(np.asarray(chosen, np.int64))
