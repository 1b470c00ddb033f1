"""The classifier teacher: K MC-dropout predictions of an :class:`EmotionNet` per clip.

The teacher holds a *reference* to the network, so a network that is updated in place (the EMA
teacher of MI-Fuse) is sampled with its current weights; :meth:`ClassifierTeacher.load_state_dict`
copies other weights in. Sampling never touches the global torch RNG: each call draws from its own
seeded generator state (``seed`` plus a call counter, or the ``seed`` passed), so the training
loop that calls it stays reproducible."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...manifest import Clip
from ..data import load_clips, mc_samples, pick_device
from ..model import EmotionNet
from .base import Teacher, check_k


class ClassifierTeacher(Teacher):
    """MC-dropout sampling of ``net`` (dropout on, batch norm frozen).

    ``sample(clips, k)`` decodes the clips' audio (cached by path for later calls);
    ``sample_wavs(wavs, k, seed=None)`` takes decoded float32 16 kHz waveforms. Both return float64
    ``(N, K, C)`` in ``net.labels`` order. ``max_len`` (samples) caps very long clips."""

    def __init__(self, net: EmotionNet, device: str | torch.device | None = None, name: str = "classifier",
                 batch_size: int = 32, seed: int = 0, max_len: int | None = None, progress: bool = False):
        self.net = net
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.net.to(self.device)
        self.name = name
        self.labels = list(net.labels)
        self.batch_size, self.seed, self.max_len, self.progress = batch_size, seed, max_len, progress
        self._calls = 0
        self._audio: dict[str, np.ndarray] = {}

    def load_state_dict(self, state: dict) -> None:
        """Take new weights (e.g. a copy of the EMA teacher)."""
        self.net.load_state_dict(state)

    def sample_wavs(self, wavs: Sequence[np.ndarray], k: int, seed: int | None = None) -> np.ndarray:
        k = check_k(k)
        if seed is None:
            seed = self.seed + self._calls
            self._calls += 1
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            wavs = [w[: self.max_len] for w in wavs] if self.max_len else list(wavs)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                out = mc_samples(self.net, wavs, self.device, k, self.batch_size, seed=seed)
        return out.astype(np.float64)

    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        missing = [c for c in clips if str(c.path) not in self._audio]
        if missing:
            for c, w in zip(missing, load_clips(missing, self.net.cfg.sample_rate, "teacher clips", self.progress)):
                self._audio[str(c.path)] = w
        return self.sample_wavs([self._audio[str(c.path)] for c in clips], k)
