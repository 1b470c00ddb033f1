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

from ..audio import resample


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
    """What each training crop may go through, in this order (each drawn from the crop's own seed):

    * speed perturbation (probability ``speed_prob``): the crop is played ``1 ± speed`` times as fast
      (tempo and pitch together, as Kaldi's speed perturbation): other speakers' rates and voices;
    * reverberation (``reverb_prob``): a synthetic room (exponentially decaying noise, RT60 in ``rt60_s``):
      rooms and far microphones;
    * band-limiting (``band_prob``): the crop goes through a telephone channel (resampled to 8 kHz and back:
      nothing above 4 kHz): phones and codecs (an audit found P(angry) falling from 0.82 to 0.34 at 8 kHz);
    * random gain (uniform ±``gain_db``) and, with probability ``noise_prob``, white noise at 15-40 dB SNR:
      the levels and noise floors of users' devices.

    The defaults are ``edgeser train``'s and every method's (``FitConfig``); the measurements that chose
    them are in ``benchmarks/cross_corpus/results_recipe_quick.md``."""

    gain_db: float = 6.0
    noise_prob: float = 0.3
    speed: float = 0.0
    speed_prob: float = 0.0
    reverb_prob: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.7)
    band_prob: float = 0.0
    sample_rate: int = 16000


def speed_perturb(wav: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """``wav`` played ``factor`` times as fast (``len / factor`` samples; pitch moves with the tempo)."""
    import soxr

    return soxr.resample(wav, round(sample_rate * factor), sample_rate, quality="LQ").astype(np.float32)


def room_response(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, then Gaussian noise decaying by 60 dB in
    ``rt60_s`` seconds (Polack's model), ``rt60_s`` long; unit peak."""
    n = max(int(rt60_s * sample_rate), 2)
    t = np.arange(n) / sample_rate
    h = rng.standard_normal(n) * 10 ** (-3 * t / rt60_s) * 0.3
    h[0] = 1.0
    return (h / np.abs(h).max()).astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``wav`` convolved with ``rir`` (same length as ``wav``: the tail is cut), at ``wav``'s RMS."""
    n = len(wav) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(rir, size), size)[: len(wav)]
    scale = np.sqrt((np.mean(wav.astype(np.float64) ** 2) + 1e-12) / (np.mean(y**2) + 1e-12))
    return (y * scale).astype(np.float32)


def telephone(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wav`` through an 8 kHz channel: resampled to 8 kHz and back (nothing above 4 kHz is left)."""
    if sample_rate <= 8000:
        return wav
    return resample(resample(wav, sample_rate, 8000), 8000, sample_rate)[: len(wav)]


def crop_clip(wav: np.ndarray, crop: int, seed: int, aug: Augmentation | None) -> np.ndarray:
    """One training example: a random ``crop``-sample stretch of ``wav`` (kept whole when shorter), augmented
    (:class:`Augmentation`), all drawn from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    if aug is None:
        return random_crops([wav], crop, rng)[0]
    factor = 1.0
    if aug.speed_prob and rng.random() < aug.speed_prob:
        factor = float(rng.uniform(1 - aug.speed, 1 + aug.speed))
    # a speed factor f turns f * crop samples into crop samples
    w = random_crops([wav], int(round(crop * factor)), rng)[0]
    if factor != 1.0:
        w = speed_perturb(w, factor, aug.sample_rate)
    if aug.reverb_prob and rng.random() < aug.reverb_prob:
        w = reverberate(w, room_response(float(rng.uniform(*aug.rt60_s)), aug.sample_rate, rng))
    if aug.band_prob and rng.random() < aug.band_prob:
        w = telephone(w, aug.sample_rate)
    return augment([w], rng, aug.gain_db, aug.noise_prob)[0]


def plan_seeds(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` per-clip seeds drawn from the run's generator."""
    return rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)


def mix_pair(own: np.ndarray, partner: np.ndarray, lam: float) -> np.ndarray:
    """``lam * own + (1 - lam) * partner`` over ``own``'s span (mixup's input): the partner is cut to that length
    (or is silence past its own end), so that a short clip (a single word) mixed with a long one is still mostly
    itself wherever the model pools.

    >>> mix_pair(np.ones(3, np.float32), np.zeros(5, np.float32), 0.75).tolist()
    [0.75, 0.75, 0.75]
    >>> mix_pair(np.zeros(4, np.float32), np.ones(2, np.float32), 0.5).tolist()
    [0.5, 0.5, 0.0, 0.0]
    """
    out = np.float32(lam) * own.astype(np.float32)
    n = min(len(own), len(partner))
    out[:n] += np.float32(1.0 - lam) * partner[:n]
    return out


@dataclass(frozen=True)
class Mix:
    """How the clips of one training batch are mixed (mixup): clip ``i`` with clip ``partner[i]`` (cropped
    with ``partner_seed[i]``), weighted ``lam[i]`` and ``1 - lam[i]``."""

    partner: np.ndarray
    partner_seed: np.ndarray
    lam: np.ndarray

    def rows(self, table: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``table[idx]`` mixed as the batch's audio was: ``lam * table[idx] + (1 - lam) * table[partner]``."""
        lam = self.lam.reshape(-1, *([1] * (np.ndim(table) - 1))).astype(np.float32)
        return (lam * table[idx] + (1 - lam) * table[self.partner]).astype(np.float32)

    def shard(self, rows: np.ndarray) -> Mix:
        """The mix of the batch rows ``rows`` (a data-parallel process's share)."""
        return Mix(self.partner[rows], self.partner_seed[rows], self.lam[rows])


def plan_mix(rng: np.random.Generator, idx: np.ndarray, seeds: np.ndarray, alpha: float) -> Mix:
    """Mixup partners within the batch (a random permutation) and weights ``lam ~ Beta(alpha, alpha)`` folded
    to ``>= 0.5``, so that each example stays mostly its own clip."""
    perm = rng.permutation(len(idx))
    lam = rng.beta(alpha, alpha, size=len(idx))
    return Mix(idx[perm], seeds[perm], np.maximum(lam, 1.0 - lam))


class TrainingBatches(Dataset):
    """Item ``j``: batch ``j`` of ``plan`` (``(clip indices, their seeds, Mix or None)``) as ``(x [B, T],
    lengths [B])``."""

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
        idx, seeds, mix = self.plan[j]
        chunk = [crop_clip(self.wavs[int(i)], self.crop, int(s), self.aug) for i, s in zip(idx, seeds)]
        if mix is not None:
            chunk = [
                mix_pair(c, crop_clip(self.wavs[int(p)], self.crop, int(s), self.aug), float(lam))
                for c, p, s, lam in zip(chunk, mix.partner, mix.partner_seed, mix.lam)
            ]
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
