"""The teacher contract: K stochastic class distributions per clip, ``(N, K, C)``, NaN rows for samples
that could not be obtained (fusion excludes them).

Two kinds, so that the adaptation loop knows what to ask when:

* a **fixed** teacher (:class:`Teacher`: an LALM endpoint, a predictions file, precomputed samples) does
  not change while the student trains: it is asked once, before training, and caches its answers;
* a **moving** teacher (:class:`MovingTeacher`: the EMA classifier) follows the student: it is attached to
  the source network, updated after every step and re-samples the target audio on its own schedule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...manifest import Clip

if TYPE_CHECKING:  # torch is only needed by moving teachers
    import torch

    from ..model import EmotionNet


class Teacher(ABC):
    """A fixed source of soft labels. ``sample(clips, k)`` returns float64 ``(len(clips), k, len(labels))``;
    each row is a probability distribution in ``labels`` order, or all NaN (no usable sample)."""

    name: str
    labels: list[str]
    #: fixed: its answers do not depend on the student, so they are asked for once
    moving = False
    #: whether ``sample`` decodes the clips' audio itself (then long clips are handed over cropped)
    reads_audio = True

    @abstractmethod
    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        """``(N, K, C)`` distributions for ``clips``; a missing/unparseable sample is a NaN row."""


class MovingTeacher(ABC):
    """A teacher that follows the student during adaptation. The loop calls :meth:`attach` once (with the
    source network), :meth:`refresh` before every epoch (it re-samples when its schedule says so),
    :meth:`after_step` after every optimizer step, and saves/restores :meth:`state_dict`. ``samples`` is
    the current ``(N, K, C)`` sample array of the target clips."""

    name: str
    moving = True
    samples: np.ndarray | None = None

    @abstractmethod
    def attach(self, source: EmotionNet, device: torch.device, seed: int, workers: int = 0) -> None:
        """Start from the source network's weights (a private copy) on ``device``; ``workers`` processes may
        read its batches (``edgeser.adapt.loader``)."""

    @abstractmethod
    def refresh(self, epoch: int, wavs: Sequence[np.ndarray]) -> None:
        """Before epoch ``epoch`` (0-based): re-sample ``wavs`` (decoded target clips) when due."""

    def after_step(self, student: EmotionNet) -> None:  # noqa: B027 (an optional hook: nothing by default)
        """After each optimizer step of the student."""

    @abstractmethod
    def describe(self) -> dict:
        """Its settings (JSON-able): they go into the summary and the resume identity."""

    @abstractmethod
    def state_dict(self) -> dict:
        """What a resumed run needs (tensors, arrays, numbers, strings, lists, dicts, None)."""

    @abstractmethod
    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Undo :meth:`state_dict` (after :meth:`attach`)."""


class FixedSamples(Teacher):
    """A fixed teacher whose samples were obtained elsewhere: ``samples`` ``(N, K, C)`` rows for the clips
    it will be asked about, in that order (``sample`` checks the count). ``sample(clips, k)`` gives the
    first ``k`` samples of each clip, NaN-padded when there are fewer."""

    reads_audio = False
    #: rows are matched to clips by position, so it can only be asked about the whole clip list
    positional = True

    def __init__(self, samples: np.ndarray, name: str = "lalm", labels: Sequence[str] | None = None):
        s = np.asarray(samples, dtype=np.float64)
        if s.ndim != 3 or s.shape[1] < 1 or s.shape[2] < 1:
            raise ValueError(f"samples must be (N, K, C) with K, C >= 1, got shape {s.shape}")
        self.samples, self.name = s, name
        self.labels = check_labels(labels) if labels is not None else [str(i) for i in range(s.shape[2])]
        if len(self.labels) != s.shape[2]:
            raise ValueError(f"{len(self.labels)} labels for samples of {s.shape[2]} classes")

    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        k = check_k(k)
        n = len(list(clips))
        if n != self.samples.shape[0]:
            raise ValueError(f"{self.name}: samples are for {self.samples.shape[0]} clips, asked about {n}")
        out = nan_samples(n, k, self.samples.shape[2])
        m = min(k, self.samples.shape[1])
        out[:, :m] = self.samples[:, :m]
        return out


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
