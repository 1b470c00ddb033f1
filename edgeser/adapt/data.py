"""Training data: decoded clips (in memory or in an on-disk :class:`AudioStore`), index batches, batched
inference and MC-dropout sampling (the batches themselves are made in :mod:`edgeser.adapt.loader`)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import audio_info, load_audio
from ..errors import AudioError, ManifestError
from ..manifest import Clip
from .audio_store import AudioStore, lengths_of
from .loader import PaddedBatches, iterate
from .model import EmotionNet, mc_dropout
from .progress import Progress

#: target clips are cut to their first ``DEFAULT_MAX_CLIP_S`` seconds unless a method says otherwise
DEFAULT_MAX_CLIP_S = 30.0


def pick_device(spec: str | None = None) -> torch.device:
    """``spec`` if given, else CUDA when available, else CPU."""
    if spec:
        return torch.device(spec)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: where decoded training audio lives: "disk" (an :class:`~edgeser.adapt.audio_store.AudioStore`, memory
#: bounded whatever the number of clips) or "memory" (a list of arrays, the 0.1 behaviour)
AUDIO_STORES = ("disk", "memory")


def iter_clips(
    clips: Sequence[Clip], sample_rate: int = 16000, what: str = "clips", progress: bool = True
) -> Iterator[np.ndarray]:
    """Decode clips one by one (float32 mono at ``sample_rate``); an unreadable clip raises
    :class:`ManifestError` with its path."""
    with Progress(len(clips), f"loading {what}", enabled=progress and len(clips) >= 200) as bar:
        for c in clips:
            try:
                w = load_audio(c.path, sample_rate)
            except AudioError as e:
                raise ManifestError(f"{what}: {e}") from None
            bar.update(1)
            yield w


def load_clips(
    clips: Sequence[Clip],
    sample_rate: int = 16000,
    what: str = "clips",
    progress: bool = True,
    store: str = "memory",
    max_len: int | None = None,
) -> Sequence[np.ndarray]:
    """Decode every clip (float32 mono at ``sample_rate``, cut to ``max_len`` samples), into a list
    (``store="memory"``) or an :class:`AudioStore` on disk (``"disk"``). A clip that cannot be read stops
    the run with its path: training on silently dropped data is worse than an error."""
    _check_store(store)
    wavs = (w[:max_len] if max_len else w for w in iter_clips(clips, sample_rate, what, progress))
    return AudioStore.of(wavs) if store == "disk" else list(wavs)


def _check_store(store: str) -> None:
    if store not in AUDIO_STORES:
        raise ValueError(f"audio_store must be one of {', '.join(AUDIO_STORES)}, got {store!r}")


class _StoredCrops(Mapping):
    """``{index: audio}`` of the cropped clips, read from the store on access."""

    def __init__(self, store: AudioStore, indices: list[int]):
        self.store, self.indices = store, indices

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self.indices:
            raise KeyError(i)
        return self.store[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class TargetAudio:
    """Target clips screened by :func:`load_target_audio`: the usable ones (in order) with their audio, the
    files skipped as unreadable ``(clip, reason)``, and the audio of the clips cropped to ``max_s`` (by index
    in ``clips``)."""

    clips: list[Clip]
    wavs: Sequence[np.ndarray] | None
    skipped: list[tuple[Clip, str]] = field(default_factory=list)
    crops: Mapping[int, np.ndarray] = field(default_factory=dict, repr=False)
    max_s: float | None = None
    sample_rate: int = 16000

    def skipped_report(self, limit: int = 5) -> str:
        """One line: how many files were skipped and why (the first ``limit`` of them)."""
        if not self.skipped:
            return ""
        n = len(self.skipped) + len(self.clips)
        shown = "; ".join(reason for _, reason in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)} of {n} target files that could not be read: {shown}{more}"


def load_target_audio(
    clips: Sequence[Clip],
    sample_rate: int = 16000,
    max_s: float | None = DEFAULT_MAX_CLIP_S,
    what: str = "target clips",
    progress: bool = True,
    keep: bool = True,
    store: str = "memory",
) -> TargetAudio:
    """Decode target clips, reading at most the first ``max_s`` seconds of each (None: whole files, up to
    :data:`~edgeser.audio.MAX_IN_MEMORY_S`). Unlike :func:`load_clips` an unreadable file does not stop the
    run: unlabelled target data is skipped and reported. Raises :class:`ManifestError` when no clip is
    usable. ``keep=False`` only screens (the audio of cropped clips is still kept, for :func:`teacher_clips`).
    ``store="disk"`` keeps the audio in an :class:`AudioStore` (memory bounded whatever the number of clips)."""
    _check_store(store)
    clips = list(clips)
    if not clips:
        raise ManifestError(f"no {what}")
    good: list[Clip] = []
    disk = keep and store == "disk"
    wavs: list[np.ndarray] | AudioStore = AudioStore() if disk else []
    skipped: list[tuple[Clip, str]] = []
    crops: dict[int, np.ndarray] = {}
    cropped: list[int] = []
    with Progress(len(clips), f"loading {what}", enabled=progress and len(clips) >= 200) as bar:
        for c in clips:
            try:
                long = max_s is not None and audio_info(c.path)[2] > max_s
                w = load_audio(c.path, sample_rate, max_s=max_s)
                w = w[: int(max_s * sample_rate)] if max_s is not None else w
            except AudioError as e:
                skipped.append((c, str(e)))
                bar.update(1)
                continue
            if long and disk:
                cropped.append(len(good))
            elif long:
                crops[len(good)] = w
            good.append(c)
            if keep:
                wavs.append(w)
            bar.update(1)
    if disk:
        crops = _StoredCrops(wavs, cropped)  # type: ignore[assignment,arg-type]
    out = TargetAudio(good, wavs if keep else None, skipped, crops, max_s, sample_rate)
    if not good:
        raise ManifestError(f"none of the {len(clips)} {what} could be read (first: {skipped[0][1]})")
    if skipped and progress:
        print(f"warning: {out.skipped_report()}", file=sys.stderr, flush=True)
    if crops and progress:
        print(
            f"note: {len(crops)} {what} are longer than {max_s:g} s: only their first {max_s:g} s are used",
            file=sys.stderr,
            flush=True,
        )
    return out


@contextlib.contextmanager
def teacher_clips(target: TargetAudio, reads_audio: bool = True) -> Iterator[list[Clip]]:
    """The target clips as a teacher should get them: a teacher that decodes audio itself (``reads_audio``)
    gets the cropped clips as temporary float32 WAV copies of their first ``max_s`` seconds (same ``key``),
    so that it hears what the student trains on and a long file cannot stop it; others get the clips as they
    are."""
    if not reads_audio or not target.crops:
        yield list(target.clips)
        return
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="edgeser-crops-") as tmp:
        clips = list(target.clips)
        for i, w in target.crops.items():
            p = Path(tmp) / f"{i}.wav"
            sf.write(str(p), w, target.sample_rate, subtype="FLOAT")
            clips[i] = dataclasses.replace(clips[i], path=p, key=clips[i].key or str(clips[i].path))
        yield clips


def n_steps(n: int, batch_size: int) -> int:
    """Training steps per epoch: full batches, plus the last partial one unless it is a single clip (batch
    norm cannot train on one clip)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index batches; shuffled when ``rng`` is given (the last partial batch is kept)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


#: a whole-clip pass batch holds at most this many padded samples (32 clips of 10 s): the memory of a pass is
#: then set by this, not by how long the longest clips of a large set are
MAX_BATCH_SAMPLES = 32 * 10 * 16000


def _by_length(wavs: Sequence[np.ndarray], batch_size: int, max_len: int | None = None) -> Iterator[np.ndarray]:
    lengths = lengths_of(wavs)
    lengths = np.minimum(lengths, max_len) if max_len else lengths
    # longest clips first: each batch's buffers then fit in the memory the previous, larger, batch freed. In
    # ascending order every batch needed slightly more than any freed block and the heap grew with the number
    # of clips (benchmarks/scale/results.md)
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = min(start + batch_size, len(order))
        # the first clip of a batch is its longest; shrink until the padded batch fits
        while stop - start > 1 and (stop - start) * int(lengths[order[start]]) > MAX_BATCH_SAMPLES:
            stop -= 1
        yield order[start:stop]
        start = stop


@torch.no_grad()
def forward_all(
    net: EmotionNet,
    wavs: Sequence[np.ndarray],
    device: torch.device,
    batch_size: int = 32,
    what: str = "logits",
    max_len: int | None = None,
    workers: int = 0,
) -> np.ndarray:
    """Run whole clips (length-sorted batches, masked pooling) -> logits ``[N, C]`` or bottleneck
    ``features`` ``[N, H]``, in the model's current mode (use :func:`mc_dropout` for sampling). ``workers``
    processes read and pad the batches (:mod:`edgeser.adapt.loader`)."""
    # one output array filled in place: no per-clip objects left between the batches' large transient
    # buffers (they fragmented the heap: peak memory grew with the number of clips)
    out: np.ndarray | None = None
    groups = list(_by_length(wavs, batch_size, max_len))
    data = PaddedBatches(wavs, groups, net.cfg.receptive_field, max_len)
    for idx, (x, lengths) in zip(groups, iterate(data, workers)):
        x, lengths = x.to(device, non_blocking=True), lengths.to(device, non_blocking=True)
        y = net.features(x, lengths) if what == "features" else net(x, lengths)
        y = y.float().cpu().numpy()
        if out is None:
            out = np.empty((len(wavs), *y.shape[1:]), np.float32)
        out[idx] = y
        del x, y
    return out if out is not None else np.empty((0, 0), np.float32)


def predict_probs(
    net: EmotionNet, wavs: Sequence[np.ndarray], device: torch.device, batch_size: int = 32
) -> np.ndarray:
    """Softmax probabilities ``[N, C]`` in eval mode."""
    was = net.training
    net.eval()
    try:
        logits = forward_all(net, wavs, device, batch_size)
    finally:
        net.train(was)
    return softmax(logits)


def mc_samples(
    net: EmotionNet,
    wavs: Sequence[np.ndarray],
    device: torch.device,
    k: int,
    batch_size: int = 32,
    seed: int = 0,
    max_len: int | None = None,
    workers: int = 0,
) -> np.ndarray:
    """``K`` MC-dropout predictions per clip (cut to ``max_len`` samples) -> ``[N, K, C]``. The encoder runs
    once per pass; dropout (encoder and head) is on, batch norm frozen."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), mc_dropout(net):  # the caller's RNG state is left alone
        torch.manual_seed(seed)
        return np.stack(
            [softmax(forward_all(net, wavs, device, batch_size, max_len=max_len, workers=workers)) for _ in range(k)],
            axis=1,
        )


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numpy, max-shifted)."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
