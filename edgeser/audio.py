"""Audio input: decode any file soundfile reads, mix to mono, resample with soxr, validate.

Everything returns float32 mono numpy arrays in [-1, 1] (values outside are clipped audio's
business, not ours: they are kept). Only numpy, soundfile and soxr: safe for the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

#: Longest file (seconds) that :func:`load_audio` decodes in one piece; longer ones must be read
#: with :func:`iter_audio_blocks` so that memory stays bounded.
MAX_IN_MEMORY_S = 600.0


def to_mono(x: np.ndarray) -> np.ndarray:
    """``(T,)`` or ``(T, channels)`` -> ``(T,)`` float32 by averaging channels."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {x.shape}")
    if x.dtype.kind in "iu":  # integer PCM given directly
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max - info.min + 1) * 2
    return np.ascontiguousarray(x, dtype=np.float32)


def check_audio(x: np.ndarray, what: str = "audio") -> np.ndarray:
    """Reject empty or non-finite audio with a clear error; return it unchanged otherwise."""
    if x.size == 0:
        raise AudioError(f"{what} is empty (zero samples)")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise AudioError(f"{what} has {bad} NaN/inf samples")
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (HQ). No-op when the rates match."""
    if sr_in <= 0:
        raise AudioError(f"invalid sample rate {sr_in}")
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def prepare(audio: np.ndarray, sample_rate: int, target_rate: int, what: str = "audio") -> np.ndarray:
    """Any-rate, mono or multi-channel, int or float input -> validated float32 mono at ``target_rate``."""
    x = check_audio(to_mono(audio), what)
    return check_audio(resample(x, int(sample_rate), target_rate), what)


def _open(path: str | Path) -> sf.SoundFile:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        return sf.SoundFile(str(p))
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
            raise AudioError(f"{path}: {frames / f.samplerate:.0f} s is too long to decode at once "
                             f"(the limit is {MAX_IN_MEMORY_S:.0f} s)")
        try:
            data = f.read(-1 if max_s is None else frames, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{path}: cannot decode audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
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
                raise AudioError(f"{path}: cannot decode audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
            last = data.shape[0] < block
            x = check_audio(to_mono(data), str(path)) if data.shape[0] else np.zeros(0, np.float32)
            if rs is not None:
                x = rs.resample_chunk(x, last=last)
            if x.size:
                yield x
            if last:
                break
