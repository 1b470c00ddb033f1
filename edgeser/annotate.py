"""LALM annotation: an LALM teacher's K samples per clip written as synthetic rater votes."""

from __future__ import annotations

import csv
from pathlib import Path

from .adapt.data import DEFAULT_MAX_CLIP_S, load_target_audio, teacher_clips
from .labels import votes_from_samples
from .manifest import read_manifest


def annotate(
    target: str | Path,
    teacher,
    k: int,
    out: str | Path,
    max_clip_s: float | None = DEFAULT_MAX_CLIP_S,
    progress: bool = True,
) -> dict:
    """Write ``out`` (CSV): the target manifest's columns plus ``votes_<label>`` per label, the argmax
    counts of the teacher's ``k`` samples (unparsable answers are not votes; the teacher caches).

    A teacher that decodes audio hears at most the first ``max_clip_s`` seconds of each clip (as MI-Fuse's
    student and teachers do); target files it cannot read are left out of ``out`` and listed in the message
    (an error only when none is readable)."""
    clips = read_manifest(target)
    audio = None
    if getattr(teacher, "reads_audio", True):
        audio = load_target_audio(
            clips, getattr(teacher, "sample_rate", 16000), max_clip_s, "target clips", progress, keep=False
        )
        clips = audio.clips
    if audio is None:
        samples = teacher.sample(clips, k)
    else:
        with teacher_clips(audio) as asked:
            samples = teacher.sample(asked, k)
    votes = votes_from_samples(samples)
    labels = list(teacher.labels)
    extra_cols = [c for c in (clips[0].extra.keys() if clips else []) if not c.startswith("votes_")]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", *extra_cols, *[f"votes_{lab}" for lab in labels]])
        for c, v in zip(clips, votes):
            w.writerow(
                [
                    str(c.path),
                    c.label or "",
                    c.speaker or "",
                    *[c.extra.get(x, "") for x in extra_cols],
                    *[f"{x:g}" for x in v],
                ]
            )
    no_votes = int((votes.sum(axis=1) == 0).sum())
    msg = f"wrote {out}: {len(clips)} clips, {k} samples each"
    msg += f"; {no_votes} clips got no usable answer" if no_votes else ""
    usage = getattr(teacher, "usage", None)
    if usage is not None and hasattr(usage, "summary"):
        msg += f"\n{usage.summary()}"
    if no_votes == len(clips):
        msg += f"\nwarning: the teacher gave no usable answer for any clip: every vote in {out} is 0"
    skipped = [] if audio is None else [str(c.path) for c, _ in audio.skipped]
    if skipped:
        msg += f"\nwarning: {audio.skipped_report(limit=len(skipped))}"
    return {"message": msg, "clips": len(clips), "no_votes": no_votes, "skipped": skipped}
