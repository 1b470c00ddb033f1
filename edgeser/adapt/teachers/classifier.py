"""The classifier teachers: K MC-dropout predictions of an :class:`EmotionNet` per clip
(:class:`ClassifierTeacher`), and the moving EMA teacher of MI-Fuse built on it (:class:`EMATeacher`).

Sampling never touches the global torch RNG (each call draws from its own seeded generator state), so
the training loop that calls it stays reproducible."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from ...manifest import Clip
from ..data import load_clips, mc_samples, pick_device
from ..distributed import Subset, current, map_rows
from ..model import EmotionNet
from .base import MovingTeacher, Teacher, check_k


class ClassifierTeacher(Teacher):
    """MC-dropout sampling of ``net`` (dropout on, batch norm frozen).

    ``sample(clips, k)`` decodes the clips' audio (cached by path for later calls);
    ``sample_wavs(wavs, k, seed=None)`` takes decoded float32 16 kHz waveforms. Both return float64
    ``(N, K, C)`` in ``net.labels`` order. ``max_len`` (samples) caps very long clips."""

    def __init__(
        self,
        net: EmotionNet,
        device: str | torch.device | None = None,
        name: str = "classifier",
        batch_size: int = 32,
        seed: int = 0,
        max_len: int | None = None,
        progress: bool = False,
        workers: int = 0,
    ):
        self.net = net
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.net.to(self.device)
        self.name = name
        self.labels = list(net.labels)
        self.batch_size, self.seed, self.max_len, self.progress = batch_size, seed, max_len, progress
        #: processes that read and pad the batches (``edgeser.adapt.loader``)
        self.workers = workers
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
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                # clips are read (and cut) batch by batch: an on-disk store is never held whole
                out = mc_samples(
                    self.net,
                    wavs,
                    self.device,
                    k,
                    self.batch_size,
                    seed=seed,
                    max_len=self.max_len,
                    workers=self.workers,
                )
        return out.astype(np.float64)

    def sample(self, clips: Sequence[Clip], k: int) -> np.ndarray:
        missing = [c for c in clips if str(c.path) not in self._audio]
        if missing:
            for c, w in zip(missing, load_clips(missing, self.net.cfg.sample_rate, "teacher clips", self.progress)):
                self._audio[str(c.path)] = w
        return self.sample_wavs([self._audio[str(c.path)] for c in clips], k)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """``ema <- m * ema + (1 - m) * student`` over the state dict: parameters and float buffers (BN
    statistics); integer buffers (batch counters) are copied. Non-persistent buffers (the frontend's
    fixed DFT and mel matrices) are left alone: averaging equal values would still round them."""
    src = student.state_dict()
    for k, v in ema.state_dict().items():
        if v.dtype.is_floating_point:
            v.mul_(momentum).add_(src[k], alpha=1.0 - momentum)
        else:
            v.copy_(src[k])


class EMATeacher(MovingTeacher):
    """The mean teacher: an exponential moving average of the student (``ema <- m ema + (1 - m) student``
    after every step), starting as the source model, sampled ``k`` times per clip with MC dropout; its
    samples are re-drawn every ``resample_every`` epochs (seed ``seed * 100003 + epoch``) as it moves."""

    def __init__(
        self,
        k: int = 8,
        momentum: float = 0.99,
        resample_every: int = 2,
        name: str = "classifier",
        batch_size: int = 32,
    ):
        self.k = check_k(k)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        if isinstance(resample_every, bool) or not isinstance(resample_every, int) or resample_every < 1:
            raise ValueError(f"resample_every must be a positive integer, got {resample_every!r}")
        self.momentum, self.resample_every = float(momentum), resample_every
        self.name, self.batch_size = name, batch_size
        self.samples: np.ndarray | None = None
        self.net: EmotionNet | None = None

    def attach(self, source: EmotionNet, device: torch.device, seed: int, workers: int = 0) -> None:
        self.net = copy.deepcopy(source).to(device).requires_grad_(False)
        self.sampler = ClassifierTeacher(
            self.net, device, name=self.name, batch_size=self.batch_size, seed=seed, workers=workers
        )
        self.seed, self.samples = seed, None

    def refresh(self, epoch: int, wavs: Sequence[np.ndarray]) -> None:
        if self.samples is None or epoch % self.resample_every == 0:
            seed = self.seed * 100_003 + epoch
            # data-parallel: each process samples its share of the clips, all get every row
            self.samples = map_rows(
                lambda ix: self.sampler.sample_wavs(Subset(wavs, ix), self.k, seed=seed), len(wavs), current()
            )

    def after_step(self, student: EmotionNet) -> None:
        assert self.net is not None, "attach() first"
        ema_update(self.net, student, self.momentum)

    def describe(self) -> dict:
        return {"kind": "ema-classifier", "k": self.k, "momentum": self.momentum, "resample_every": self.resample_every}

    def state_dict(self) -> dict:
        assert self.net is not None, "attach() first"
        return {"ema": self.net.state_dict(), "samples": self.samples}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        assert self.net is not None, "attach() first"
        self.net.load_state_dict(state["ema"])
        self.samples = state["samples"]
