"""Manifests: CSV files (``path`` relative to the CSV's folder or absolute, optional ``label``,
``speaker`` and any other columns) or a plain folder of audio files (unlabelled)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ManifestError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")


@dataclass(frozen=True)
class Clip:
    """One audio file with what is known about it."""

    path: Path
    label: str | None = None
    speaker: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    #: the path exactly as written in the manifest (used to match prediction files)
    key: str = ""


def read_manifest(source: str | Path) -> list[Clip]:
    """Read a manifest CSV or list the audio files of a folder (sorted, recursive)."""
    src = Path(source)
    if not src.exists():
        raise ManifestError(f"{src}: no such manifest or folder")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise ManifestError(f"{src}: folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
        return [Clip(path=p.resolve(), key=str(p.relative_to(src))) for p in files]
    try:
        with open(src, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{src}: not a readable CSV ({e})") from None
    if not rows:
        raise ManifestError(f"{src}: manifest has no rows")
    if "path" not in rows[0]:
        raise ManifestError(f"{src}: manifest needs a 'path' column (has: {', '.join(rows[0])})")
    clips = []
    for i, row in enumerate(rows, start=2):
        raw = (row.pop("path") or "").strip()
        if not raw:
            raise ManifestError(f"{src}:{i}: empty path")
        p = Path(raw)
        p = p if p.is_absolute() else (src.parent / p)
        label = (row.pop("label", None) or "").strip() or None
        speaker = (row.pop("speaker", None) or "").strip() or None
        clips.append(
            Clip(
                path=p.resolve(),
                label=label,
                speaker=speaker,
                extra={k: v for k, v in row.items() if k is not None},
                key=raw,
            )
        )
    return clips


def check_labels(clips: list[Clip], labels: list[str], source: str = "manifest") -> None:
    """Every labelled clip must use the model's label set."""
    unknown = sorted({c.label for c in clips if c.label is not None and c.label not in labels})
    if unknown:
        raise ManifestError(f"{source}: labels {unknown} are not in the label set {labels}")
