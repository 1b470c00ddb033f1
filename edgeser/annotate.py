"""LALM annotation: an LALM teacher's K samples per clip written as synthetic rater votes."""

from __future__ import annotations

import csv
from pathlib import Path

from .labels import votes_from_samples
from .manifest import read_manifest


def annotate(target: str | Path, teacher, k: int, out: str | Path) -> dict:
    """Write ``out`` (CSV): the target manifest's columns plus ``votes_<label>`` per label, the argmax
    counts of the teacher's ``k`` samples (unparsable answers are not votes; the teacher caches)."""
    clips = read_manifest(target)
    samples = teacher.sample(clips, k)
    votes = votes_from_samples(samples)
    labels = list(teacher.labels)
    extra_cols = [c for c in (clips[0].extra.keys() if clips else []) if not c.startswith("votes_")]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", *extra_cols, *[f"votes_{lab}" for lab in labels]])
        for c, v in zip(clips, votes):
            w.writerow([str(c.path), c.label or "", c.speaker or "", *[c.extra.get(x, "") for x in extra_cols],
                        *[f"{x:g}" for x in v]])
    no_votes = int((votes.sum(axis=1) == 0).sum())
    msg = f"wrote {out}: {len(clips)} clips, {k} samples each" + (f"; {no_votes} clips got no usable answer" if no_votes else "")
    usage = getattr(teacher, "usage", None)
    if usage is not None and hasattr(usage, "summary"):
        msg += f"\n{usage.summary()}"
    return {"message": msg, "clips": len(clips), "no_votes": no_votes}
