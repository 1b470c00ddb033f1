"""The teacher contract: K stochastic class distributions per clip, ``(N, K, C)``, NaN rows for
samples that could not be obtained (fusion excludes them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from ...manifest import Clip


class Teacher(ABC):
    """A source of soft labels. ``sample(clips, k)`` returns float64 ``(len(clips), k, len(labels))``;
    each row is a probability distribution in ``labels`` order, or all NaN (no usable sample)."""

    name: str
    labels: list[str]

    @abstractmethod
    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        """``(N, K, C)`` distributions for ``clips``; a missing/unparseable sample is a NaN row."""


def check_k(k: int) -> int:
    """``k`` must be a positive int (bools refused)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (samples per clip) must be a positive integer, got {k!r}")
    return int(k)


def check_labels(labels: Sequence[str]) -> list[str]:
    """Non-empty, unique label names."""
    out = [str(x) for x in labels]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"labels must be non-empty and unique, got {out}")
    return out


def nan_samples(n: int, k: int, c: int) -> np.ndarray:
    """``(n, k, c)`` of NaN: nothing obtained yet."""
    return np.full((n, k, c), np.nan, dtype=np.float64)
