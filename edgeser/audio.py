"""Audio input: decode any file soundfile reads, mix to mono, resample with soxr, validate.

Everything returns float32 mono numpy arrays in [-1, 1] (values outside are clipped audio's
business, not ours: they are kept). Only numpy, soundfile and soxr: safe for the runtime.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soxr

from .errors import AudioError

if TYPE_CHECKING:
    import soundfile

#: Longest file (seconds) that :func:`load_audio` decodes in one piece; longer ones must be read
#: with :func:`iter_audio_blocks` so that memory stays bounded.
MAX_IN_MEMORY_S = 600.0
#: more channels than this in a 2-D array means it is laid out (channels, samples), or is not audio
MAX_CHANNELS = 64


def check_rate(sample_rate: object, what: str = "sample rate") -> int:
    """A sample rate as a positive whole number of Hz (``16000`` or ``16000.0``), else :class:`AudioError`.

    >>> check_rate(44100.0)
    44100
    """
    ok = isinstance(sample_rate, (int, float, np.integer, np.floating)) and not isinstance(sample_rate, bool)
    if not ok or not np.isfinite(sample_rate) or sample_rate <= 0 or sample_rate != int(sample_rate):
        raise AudioError(f"{what} must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def to_mono(x: np.ndarray) -> np.ndarray:
    """``(T,)`` or ``(T, channels)`` -> ``(T,)`` float32 by averaging channels. A ``(channels, T)``
    array (more than ``MAX_CHANNELS`` columns, few rows) is refused rather than read as many channels."""
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] > MAX_CHANNELS:
        if x.shape[0] <= MAX_CHANNELS:
            raise AudioError(
                f"audio of shape {x.shape} looks like (channels, samples); pass (samples, channels), e.g. x.T"
            )
        raise AudioError(f"audio of shape {x.shape} has more than {MAX_CHANNELS} channels")
    if x.ndim not in (1, 2):
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {x.shape}")
    if x.ndim == 2 and x.shape[1] == 0:  # the channel mean of no channel would be NaN samples
        raise AudioError(f"audio of shape {x.shape} has no channel")
    if x.dtype.kind in "iu":  # integer PCM given directly: scaled before the channel mean (which makes floats)
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max - info.min + 1) * 2
    if x.ndim == 2:
        x = x.mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_audio(x: np.ndarray, what: str = "audio") -> np.ndarray:
    """Reject empty or non-finite audio with a clear error; return it unchanged otherwise."""
    if x.size == 0:
        raise AudioError(f"{what} is empty (zero samples)")
    # a finite sum means finite samples (a NaN or inf makes the sum NaN or inf), without a mask the size of
    # the audio; only a sum that is not finite (bad samples, or an overflow of huge ones) needs the full check
    if not np.isfinite(np.add.reduce(x, axis=None)) and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise AudioError(f"{what} has {bad} NaN/inf samples")
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (HQ). No-op when the rates match."""
    sr_in = check_rate(sr_in)
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def prepare(audio: np.ndarray, sample_rate: int, target_rate: int, what: str = "audio") -> np.ndarray:
    """Any-rate, mono or multi-channel, int or float input -> validated float32 mono at ``target_rate``."""
    rate = check_rate(sample_rate, f"{what}: sample rate")
    x = check_audio(to_mono(audio), what)
    y = resample(x, rate, target_rate)
    if y.size == 0:  # e.g. one sample at 44.1 kHz: not empty, but shorter than one sample at the target rate
        raise AudioError(f"{what} is too short ({x.size} sample{'s' if x.size != 1 else ''} at {rate} Hz)")
    return check_audio(y, what)


def _open(path: str | Path) -> soundfile.SoundFile:
    if not isinstance(path, (str, os.PathLike)):
        raise AudioError(f"{path!r} is not a file path ({type(path).__name__})")
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if not p.is_file():  # a FIFO or device would block the reader forever
        raise AudioError(f"{p}: not a regular file")
    try:
        import soundfile  # on first file read: a stream of arrays never pays its import (issue 10: load time)

        return soundfile.SoundFile(str(p))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"{p}: cannot decode audio ({msg})") from None


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """``(sample_rate, channels, duration_s)`` of a file without decoding it."""
    with _open(path) as f:
        return f.samplerate, f.channels, f.frames / f.samplerate if f.samplerate else 0.0


def load_audio(path: str | Path, sample_rate: int = 16000, max_s: float | None = None) -> np.ndarray:
    """Decode a file to float32 mono at ``sample_rate``. ``max_s``: read only the first ``max_s`` seconds (a
    longer file is cropped, not refused). What would be read is refused over ``MAX_IN_MEMORY_S``."""
    with _open(path) as f:
        if f.frames == 0:
            raise AudioError(f"{path}: file has no audio (zero frames)")
        frames = f.frames if max_s is None else min(f.frames, max(1, int(max_s * f.samplerate)))
        if frames / f.samplerate > MAX_IN_MEMORY_S:
            raise AudioError(
                f"{path}: {frames / f.samplerate:.0f} s is too long to decode at once "
                f"(the limit is {MAX_IN_MEMORY_S:.0f} s)"
            )
        try:
            data = f.read(-1 if max_s is None else frames, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(
                f"{path}: cannot decode audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None
        sr = f.samplerate
    if data.shape[0] == 0:
        raise AudioError(f"{path}: file has no audio (zero frames)")
    return prepare(data, sr, sample_rate, what=str(path))


def iter_audio_blocks(path: str | Path, sample_rate: int = 16000, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """Yield consecutive float32 mono blocks at ``sample_rate`` (about ``block_s`` long), reading the
    file piecewise and resampling with a streaming soxr resampler: memory stays bounded for any length."""
    with _open(path) as f:
        if f.frames == 0:
            raise AudioError(f"{path}: file has no audio (zero frames)")
        sr_in = f.samplerate
        rs = None if sr_in == sample_rate else soxr.ResampleStream(sr_in, sample_rate, 1, dtype="float32", quality="HQ")
        block = max(1, int(block_s * sr_in))
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(
                    f"{path}: cannot decode audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                ) from None
            last = data.shape[0] < block
            x = check_audio(to_mono(data), str(path)) if data.shape[0] else np.zeros(0, np.float32)
            if rs is not None:
                x = rs.resample_chunk(x, last=last)
            if x.size:
                yield x
            if last:
                break
