"""A teacher read from a JSON-lines file of precomputed samples (e.g. an LALM run elsewhere).

One object per line, either ``{"path": "...", "samples": [[p_1, ..., p_C], ...]}`` (K
distributions in the model's label order; a row may be ``null`` or all-NaN for a missing sample)
or ``{"path": "...", "labels": ["angry", "sad", ...]}`` (K sampled labels through the synonym
table; unknown -> NaN row). ``path`` matches ``Clip.key`` (the path as written in the target
manifest) or, failing that, the clip's resolved absolute path (a relative ``path`` in the file is
taken relative to the file's folder for that second match).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...errors import ManifestError
from ...manifest import Clip
from .base import Teacher, check_k, check_labels, nan_samples
from .parsing import LabelParser

ROW_SUM_TOLERANCE = 1e-3


class PredictionsTeacher(Teacher):
    """Samples read (and validated) once from ``path``; ``unknown_labels`` counts label answers outside
    the set."""

    reads_audio = False  # answers come from the file: the audio is never decoded

    def __init__(self, path: str | Path, labels: Sequence[str], synonyms: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.labels = check_labels(labels)
        self.name = f"predictions:{self.path.name}"
        self.parser = LabelParser(self.labels, synonyms)
        self.unknown_labels = 0
        self._by_key: dict[str, np.ndarray] = {}
        self._by_abs: dict[str, np.ndarray] = {}
        self._warned_short = False
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            raise ManifestError(f"{self.path}: no such predictions file")
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(f"{self.path}: cannot read predictions ({e})") from None
        where_seen: dict[str, int] = {}
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{self.path}:{no}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ManifestError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("path"), str) or not obj["path"].strip():
                raise ManifestError(f"{where}: expected an object with a non-empty string 'path'")
            key = obj["path"].strip()
            if key in where_seen:
                raise ManifestError(f"{where}: duplicate path {key!r} (first on line {where_seen[key]})")
            where_seen[key] = no
            has_s, has_l = "samples" in obj, "labels" in obj
            if has_s == has_l:
                raise ManifestError(f"{where}: needs exactly one of 'samples' (distributions) or 'labels'")
            rows = self._samples(obj["samples"], where) if has_s else self._labels(obj["labels"], where)
            self._by_key[key] = rows
            p = Path(key)
            self._by_abs[str((p if p.is_absolute() else self.path.parent / p).resolve())] = rows
        if not self._by_key:
            raise ManifestError(f"{self.path}: predictions file has no entries")

    def _samples(self, value: object, where: str) -> np.ndarray:
        c = len(self.labels)
        if not isinstance(value, list) or not value:
            raise ManifestError(f"{where}: 'samples' must be a non-empty list of rows of {c} probabilities")
        out = nan_samples(1, len(value), c)[0]
        for j, row in enumerate(value):
            if row is None:
                continue
            if not isinstance(row, list) or len(row) != c:
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise ManifestError(
                    f"{where}: sample {j} must be a list of {c} probabilities ({', '.join(self.labels)}), got {got}"
                )
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in row):
                raise ManifestError(f"{where}: sample {j} has a non-numeric value")
            arr = np.asarray(row, dtype=np.float64)
            if np.all(np.isnan(arr)):
                continue
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ManifestError(f"{where}: sample {j} has negative, NaN or infinite values")
            total = float(arr.sum())
            if not math.isclose(total, 1.0, abs_tol=ROW_SUM_TOLERANCE):
                raise ManifestError(f"{where}: sample {j} sums to {total:.4g}, expected 1 (probabilities, not logits)")
            out[j] = arr / total
        return out

    def _labels(self, value: object, where: str) -> np.ndarray:
        if not isinstance(value, list) or not value:
            raise ManifestError(f"{where}: 'labels' must be a non-empty list of label strings")
        out = nan_samples(1, len(value), len(self.labels))[0]
        for j, label in enumerate(value):
            if label is not None and not isinstance(label, str):
                raise ManifestError(f"{where}: label {j} must be a string or null, got {type(label).__name__}")
            dist = self.parser.parse(label) if label is not None else None
            if dist is None:
                self.unknown_labels += label is not None
                continue
            out[j] = dist
        return out

    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        """``(N, k, C)``: the first ``k`` samples of each clip, NaN-padded (with one warning) when fewer."""
        k = check_k(k)
        clips = list(clips)
        out = nan_samples(len(clips), k, len(self.labels))
        missing: list[str] = []
        short = 0
        for i, clip in enumerate(clips):
            rows = self._by_key.get(clip.key) if clip.key else None
            if rows is None:
                rows = self._by_abs.get(str(Path(clip.path).resolve()))
            if rows is None:
                missing.append(clip.key or str(clip.path))
                continue
            m = min(k, len(rows))
            out[i, :m] = rows[:m]
            short += m < k
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise ManifestError(f"{self.path}: no predictions for {', '.join(missing[:3])}{more}")
        if short and not self._warned_short:
            self._warned_short = True
            warnings.warn(
                f"{self.path}: {short} clip(s) have fewer than k={k} samples; padded with NaN rows", stacklevel=2
            )
        return out
