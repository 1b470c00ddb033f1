"""An emotion distribution: a read-only mapping label -> probability."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np


class Distribution(Mapping):
    """``dist["angry"]``, ``dist.top``, ``dist.confidence``, ``dist.to_dict()``; iterates labels in model order.

    ``speech_fraction`` is the share of 10 ms frames the speech gate counted as speech (``None`` when
    not measured)."""

    __slots__ = ("labels", "probs", "speech_fraction")

    def __init__(self, labels: Sequence[str], probs: np.ndarray, speech_fraction: float | None = None):
        p = np.asarray(probs, dtype=np.float32).reshape(-1)
        if len(p) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(p)} probabilities")
        self.labels = tuple(labels)
        self.probs = p
        self.speech_fraction = speech_fraction

    def __getitem__(self, label: str) -> float:
        try:
            return float(self.probs[self.labels.index(label)])
        except ValueError:
            raise KeyError(label) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def top(self) -> str:
        """The most probable label."""
        return self.labels[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float:
        """Probability of :attr:`top`."""
        return float(np.max(self.probs))

    @property
    def entropy(self) -> float:
        """Entropy in bits (0 = certain, log2(n) = uniform)."""
        p = self.probs[self.probs > 0].astype(np.float64)
        return float(-(p * np.log2(p)).sum())

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in zip(self.labels, self.probs)}

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v:.3f}" for k, v in zip(self.labels, self.probs))
        return f"Distribution(top={self.top!r}, {body})"
