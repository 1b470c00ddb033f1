"""In-graph log-mel frontend: conv1d with fixed DFT kernels -> power -> mel -> log.

No padding ("valid" framing): ``frames = (T - n_fft) // hop + 1``. A conv1d exports cleanly to ONNX
and runs faster in ONNX Runtime than the STFT op (measured ~3x here).
"""

from __future__ import annotations

import torch
from torch import nn

from ..melscale import dft_kernels, mel_filterbank


class LogMel(nn.Module):
    """Waveform ``[B, T]`` -> log-mel ``[B, n_mels, frames]``."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 40,
        f_min: float = 20.0,
        f_max: float | None = None,
        floor: float = 1e-6,
    ):
        super().__init__()
        re, im = dft_kernels(n_fft)
        self.register_buffer(
            "kernels",
            torch.from_numpy(__import__("numpy").concatenate([re, im], axis=0)).unsqueeze(1),
            persistent=False,
        )
        self.register_buffer(
            "mel", torch.from_numpy(mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)), persistent=False
        )
        self.n_fft, self.hop_length, self.n_bins, self.floor = n_fft, hop_length, n_fft // 2 + 1, floor

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(wav.unsqueeze(1), self.kernels, stride=self.hop_length)
        power = spec[:, : self.n_bins] ** 2 + spec[:, self.n_bins :] ** 2
        return torch.log(torch.matmul(self.mel, power) + self.floor)
