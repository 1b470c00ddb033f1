"""Mel filterbank (HTK mel formula), pure numpy. Used in-graph by the model's frontend."""

from __future__ import annotations

import numpy as np


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """Triangular filters, shape ``(n_mels, n_freqs)``, over the ``n_freqs`` bins of a one-sided
    spectrum (0 .. sample_rate/2). Filter ``i`` rises from mel point ``i`` to ``i+1`` and falls to
    ``i+2``, with ``n_mels + 2`` points equally spaced in mel between ``f_min`` and ``f_max``.
    Peaks are 1 (no area normalisation)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}")
    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)
    pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(pts)  # (n_mels + 1,)
    slopes = pts[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


def dft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary DFT kernels with a periodic Hann window folded in, each ``(n_fft//2+1, n_fft)``,
    so that a strided conv1d of a waveform with them gives the STFT's real and imaginary parts."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    angle = 2 * np.pi * k * n / n_fft
    return (np.cos(angle) * window).astype(np.float32), (-np.sin(angle) * window).astype(np.float32)
