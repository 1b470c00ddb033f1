"""Strict parsing of a model's answer into a distribution over a label set. Never raises.

Accepted answers (after stripping whitespace, ```code fences```, markdown ``*_`#>``, quotes and
punctuation):

* one label word, case-insensitive, through the synonym table: ``"Angry."``, ``"**sad**"``;
* short free text that names exactly one label (``"The speaker sounds angry."``). Text naming two
  different labels (``"angry or sad"``) or containing a negation (``not``, ``no``, ``never``,
  ``n't``...) is ambiguous and rejected;
* a JSON object distribution ``{"angry": 0.7, "sad": 0.3}``: keys through the synonym table,
  values finite and >= 0, normalised to sum 1; a key outside the label set with mass > 0, or a
  negative/NaN/non-numeric value, rejects the whole answer;
* a JSON object ``{"label": "sad"}`` (also ``"emotion"`` / ``"answer"``), other keys ignored.

Synonym table (:data:`DEFAULT_SYNONYMS`): groups of words that name one emotion. A group applies
to a label set when exactly one of the set's labels is a member of the group; then every word of
the group maps to that label (``"anger"`` maps to a label named ``angry`` and, equally, ``"angry"``
to a label named ``anger``). A label's own name always maps to itself first. ``calm`` is its own
group, never ``neutral`` (one corpus' "calm" class is not neutral), and ``none`` maps to nothing
(it means "none of these" as often as "no emotion"). Callers extend or override the table with
``synonyms={"calm": "neutral", "no emotion": "neutral"}`` (word -> label of the set).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping

import numpy as np

#: emotion -> words that name it; see the module docstring for how groups meet a label set.
DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "angry": ("angry", "anger", "mad", "furious", "rage", "enraged", "irate"),
    "happy": (
        "happy",
        "happiness",
        "joy",
        "joyful",
        "joyous",
        "excited",
        "excitement",
        "glad",
        "cheerful",
        "delighted",
    ),
    "sad": ("sad", "sadness", "sorrow", "sorrowful", "unhappy", "melancholy", "melancholic", "grief"),
    "neutral": ("neutral", "neutrality"),
    "calm": ("calm", "calmness"),
    "fear": ("fear", "fearful", "afraid", "scared", "frightened"),
    "disgust": ("disgust", "disgusted"),
    "surprise": ("surprise", "surprised"),
    "boredom": ("boredom", "bored"),
    "contempt": ("contempt", "contemptuous"),
    "frustration": ("frustration", "frustrated"),
}

_NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "without", "cannot"})
_STRIP = " \t\r\n.,;:!?\"'`*_#>()[]{}<>“”‘’«»„-–—"
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.S)
_LABEL_KEYS = ("label", "emotion", "answer")


def _norm(text: str) -> str:
    """Lower case, markdown and surrounding punctuation removed, inner whitespace collapsed."""
    t = re.sub(r"[*_`#>]", "", text.lower())
    return " ".join(t.strip(_STRIP).split())


class LabelParser:
    """Maps answers to distributions over ``labels``; build once, call :meth:`parse` many times."""

    def __init__(
        self,
        labels: Iterable[str],
        synonyms: Mapping[str, str] | None = None,
        groups: Mapping[str, Iterable[str]] | None = None,
    ):
        self.labels = [str(x) for x in labels]
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be non-empty and unique, got {self.labels}")
        names = {_norm(x): i for i, x in enumerate(self.labels)}
        lookup: dict[str, int] = {}
        for words in (DEFAULT_SYNONYMS if groups is None else groups).values():
            group = {_norm(w) for w in words}
            hits = {names[w] for w in group if w in names}
            if len(hits) == 1:
                (idx,) = hits
                lookup.update({w: idx for w in group})
        for word, label in (synonyms or {}).items():
            if _norm(label) not in names:
                raise ValueError(f"synonym {word!r} -> {label!r}: {label!r} is not in the label set {self.labels}")
            lookup[_norm(word)] = names[_norm(label)]
        lookup.update(names)  # a label's own name wins over any synonym
        self._lookup = lookup

    def index(self, word: str) -> int | None:
        """Label index of one word or phrase (normalised), None when unknown."""
        return self._lookup.get(_norm(word))

    def one_hot(self, idx: int) -> np.ndarray:
        v = np.zeros(len(self.labels))
        v[idx] = 1.0
        return v

    def parse(self, text: object) -> np.ndarray | None:
        """Distribution (float64, sums to 1) in label order, or None. Never raises."""
        try:
            return self._parse(text)
        except Exception:  # strictness means "no answer", never a crash
            return None

    def _parse(self, text: object) -> np.ndarray | None:
        if not isinstance(text, str) or not text.strip():
            return None
        s = text.strip()
        m = _FENCE.match(s)
        if m:
            s = m.group(1).strip()
        if s.startswith(("{", '"')):
            try:
                obj = json.loads(s)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                return self._from_dict(obj)
            if isinstance(obj, str):
                s = obj
        idx = self.index(s)
        if idx is not None:
            return self.one_hot(idx)
        return self._from_free_text(s)

    def _from_free_text(self, s: str) -> np.ndarray | None:
        words = [w.replace("’", "'") for w in _WORD.findall(s.lower())]
        if any(w in _NEGATIONS or w.endswith("n't") for w in words):
            return None
        found = {self._lookup[w] for w in words if w in self._lookup}
        return self.one_hot(found.pop()) if len(found) == 1 else None

    def _from_dict(self, obj: dict, depth: int = 0) -> np.ndarray | None:
        for key, value in obj.items():
            if str(key).lower() in _LABEL_KEYS and isinstance(value, str):
                idx = self.index(value)
                return None if idx is None else self.one_hot(idx)
        if len(obj) == 1 and depth == 0:  # {"probabilities": {...}}
            (inner,) = obj.values()
            if isinstance(inner, dict):
                return self._from_dict(inner, depth + 1)
        dist = np.zeros(len(self.labels))
        for key, value in obj.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            v = float(value)
            if not math.isfinite(v) or v < 0:
                return None
            idx = self.index(str(key))
            if idx is None:
                if v > 0:
                    return None
                continue
            dist[idx] += v
        total = dist.sum()
        return dist / total if total > 0 else None


def parse_answer(text: object, labels: Iterable[str], synonyms: Mapping[str, str] | None = None) -> np.ndarray | None:
    """One-shot :meth:`LabelParser.parse`; returns None (never raises) for anything unusable,
    including a bad label set or synonym extension."""
    try:
        parser = LabelParser(labels, synonyms)
    except Exception:
        return None
    return parser.parse(text)
