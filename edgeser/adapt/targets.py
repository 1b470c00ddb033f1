"""Training targets from a manifest: hard labels, EmoDB's listener soft target, or rater votes
aggregated by the majority, plurality or all-inclusive rule (see :mod:`edgeser.labels`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ManifestError
from ..labels import (
    all_inclusive_rule,
    cooccurrence_penalty,
    listener_soft_target,
    majority_rule,
    plurality_rule,
    votes_from_manifest,
)
from ..manifest import Clip

KINDS = ("hard", "listener", "votes-all", "votes-plurality", "votes-majority")


def _smooth(t: np.ndarray, s: float) -> np.ndarray:
    return ((1.0 - s) * t + s / t.shape[1]).astype(np.float32)


def build_targets(
    clips: Sequence[Clip], labels: list[str], kind: str = "hard", smoothing: float = 0.0, with_penalty: bool = False
) -> tuple[list[Clip], np.ndarray, np.ndarray | None]:
    """-> ``(clips kept, targets [N, C], penalty [C, C] or None)``.

    - ``hard``: one-hot of ``label``;
    - ``listener``: EmoDB's ``listener_recognition_pct`` r: the labelled class gets r/100, the rest is
      spread evenly over the other classes (the corpus does not publish the other listeners' choices);
      clips without the column fall back to one-hot;
    - ``votes-all``: all-inclusive rule (vote shares of ``votes_<label>`` columns, every clip kept);
    - ``votes-plurality``: the most-voted classes, ties shared equally;
    - ``votes-majority``: one-hot of the class with more than half the votes, other clips dropped.

    ``smoothing`` is applied on top in every case. The co-occurrence penalty needs vote columns."""
    if kind not in KINDS:
        raise ValueError(f"unknown target kind {kind!r} (one of {KINDS})")
    clips = list(clips)
    votes = votes_from_manifest(clips, labels) if (kind.startswith("votes") or with_penalty) else None
    if kind == "hard" or kind == "listener":
        idx = np.array([labels.index(c.label) for c in clips])  # type: ignore[arg-type]
        t = np.eye(len(labels), dtype=np.float64)[idx]
        if kind == "listener":
            for n, c in enumerate(clips):
                raw = c.extra.get("listener_recognition_pct", "").strip()
                if raw:
                    t[n] = listener_soft_target(int(idx[n]), float(raw), len(labels))
            if not any(c.extra.get("listener_recognition_pct", "").strip() for c in clips):
                raise ManifestError(
                    "--targets listener needs a listener_recognition_pct column (EmoDB's manifest has one)"
                )
    elif kind == "votes-all":
        t = all_inclusive_rule(votes)
    elif kind == "votes-plurality":
        m = plurality_rule(votes).astype(np.float64)
        t = m / m.sum(axis=1, keepdims=True)
    else:
        keep, hard = majority_rule(votes)
        if not keep.any():
            raise ManifestError("no clip has a majority of votes")
        clips = [c for c, k in zip(clips, keep) if k]
        t = np.eye(len(labels))[hard[keep]]
        votes = votes[keep]
    penalty = cooccurrence_penalty(votes).astype(np.float32) if with_penalty else None
    return clips, _smooth(t, smoothing), penalty
