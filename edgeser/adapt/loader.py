"""Batches of audio as ``torch.utils.data`` datasets, built in worker processes when asked (issue 11, item 1).

Two kinds: the training batches of an epoch (:class:`TrainingBatches`: random crops, gain and noise) and the
zero-padded batches of a whole-clip pass (:class:`PaddedBatches`: pseudo-labels, MC-dropout samples,
prediction). Each batch is read from the clips' store (an :class:`~edgeser.adapt.audio_store.AudioStore` on
disk, or a list), cut, augmented and padded in :func:`iterate`'s ``workers`` processes while the model
trains on the previous one; with ``workers=0`` the same code runs in the calling process.

Every clip of a training batch gets its own random seed, drawn from the run's generator when the epoch is
planned: which process makes a crop (the trainer, a worker, another data-parallel process) does not change
it, so results do not depend on the number of workers (tested bit for bit)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def pad_batch(wavs: Sequence[np.ndarray], min_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad to the longest (and at least ``min_len``) -> ``([B, T], lengths [B])``."""
    lengths = [len(w) for w in wavs]
    out = np.zeros((len(wavs), max(max(lengths), min_len)), np.float32)
    for i, w in enumerate(wavs):
        out[i, : len(w)] = w
    return torch.from_numpy(out), torch.tensor(lengths)


def random_crops(wavs: Sequence[np.ndarray], crop: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random ``crop``-sample stretch of each clip (clips shorter than that are kept whole)."""
    out = []
    for w in wavs:
        if len(w) > crop:
            s = int(rng.integers(0, len(w) - crop + 1))
            w = w[s : s + crop]
        out.append(w)
    return out


def augment(
    wavs: list[np.ndarray],
    rng: np.random.Generator,
    gain_db: float = 6.0,
    noise_prob: float = 0.3,
    snr_db: tuple[float, float] = (15.0, 40.0),
) -> list[np.ndarray]:
    """Random gain (uniform ±``gain_db``) and, with probability ``noise_prob``, white noise at a random SNR:
    the microphones and levels of users' devices differ from the corpora's."""
    out = []
    for w in wavs:
        w = w * np.float32(10 ** (rng.uniform(-gain_db, gain_db) / 20))
        if rng.random() < noise_prob:
            p = float(np.mean(w**2)) + 1e-10
            snr = rng.uniform(*snr_db)
            w = w + rng.standard_normal(len(w)).astype(np.float32) * np.float32(np.sqrt(p / 10 ** (snr / 10)))
        out.append(w.astype(np.float32))
    return out


#: batches a worker prepares ahead of the trainer
PREFETCH = 2


@dataclass(frozen=True)
class Augmentation:
    """Random gain (uniform ±``gain_db``) and, with probability ``noise_prob``, white noise (off: None)."""

    gain_db: float = 6.0
    noise_prob: float = 0.3


def crop_clip(wav: np.ndarray, crop: int, seed: int, aug: Augmentation | None) -> np.ndarray:
    """One training example: a random ``crop``-sample stretch of ``wav`` (kept whole when shorter), augmented,
    all drawn from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    w = random_crops([wav], crop, rng)[0]
    return augment([w], rng, aug.gain_db, aug.noise_prob)[0] if aug is not None else w


def plan_seeds(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` per-clip seeds drawn from the run's generator."""
    return rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)


class TrainingBatches(Dataset):
    """Item ``j``: batch ``j`` of ``plan`` (``(clip indices, their seeds)``) as ``(x [B, T], lengths [B])``."""

    def __init__(
        self,
        wavs: Sequence[np.ndarray],
        plan: Sequence[tuple[np.ndarray, np.ndarray]],
        crop: int,
        min_len: int,
        aug: Augmentation | None,
    ):
        self.wavs, self.plan, self.crop, self.min_len, self.aug = wavs, list(plan), crop, min_len, aug

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, seeds = self.plan[j]
        chunk = [crop_clip(self.wavs[int(i)], self.crop, int(s), self.aug) for i, s in zip(idx, seeds)]
        return pad_batch(chunk, self.min_len)


class PaddedBatches(Dataset):
    """Item ``j``: the clips ``groups[j]`` (cut to ``max_len`` samples) zero-padded to ``(x, lengths)``."""

    def __init__(
        self, wavs: Sequence[np.ndarray], groups: Sequence[np.ndarray], min_len: int, max_len: int | None = None
    ):
        self.wavs, self.groups, self.min_len, self.max_len = wavs, list(groups), min_len, max_len

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        cut = self.max_len
        chunk = [self.wavs[int(i)][:cut] if cut else self.wavs[int(i)] for i in self.groups[j]]
        return pad_batch(chunk, self.min_len)


def iterate(dataset: Dataset, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The dataset's items in order: made by ``workers`` processes (a ``DataLoader``, ``PREFETCH`` batches
    ahead per worker), or here when ``workers`` is 0."""
    n = len(dataset)  # type: ignore[arg-type]
    if workers <= 0 or n <= 1:
        for j in range(n):
            yield dataset[j]
        return
    loader = DataLoader(
        dataset,
        batch_size=None,  # an item is already a batch
        shuffle=False,
        num_workers=min(workers, n),
        prefetch_factor=PREFETCH,
        pin_memory=torch.cuda.is_available(),
        # its own generator: a DataLoader seeds its workers from this one, which would otherwise be the global
        # torch generator, and the dropout masks of the run would then depend on the number of workers
        generator=torch.Generator(),
    )
    yield from loader


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """``workers`` as configured, or when left open (None): 2 next to a GPU (the data is then made while the
    GPU computes), none on CPU (workers would take cores from the model)."""
    if workers is not None:
        return workers
    return 2 if device.type == "cuda" else 0
