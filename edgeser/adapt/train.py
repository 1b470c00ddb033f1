"""Supervised (source) training on labelled clips with hard or soft targets, as a :class:`Method` of the
engine: the loop, seeding, checkpoint/resume are :func:`edgeser.adapt.engine.fit`'s. Keeps the checkpoint
of the last epoch, or of the best by validation UA (``TrainConfig.select``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..manifest import Clip
from ..metrics import unweighted_accuracy
from .data import load_clips, predict_probs
from .distributed import Subset, map_rows
from .engine import FitConfig, FitContext, FitResult, Method, TorchSchedule, fit, hash_array, hash_clips
from .losses import cooccurrence_penalty_loss, soft_cross_entropy
from .model import EmotionNet, ModelConfig


@dataclass
class TrainConfig(FitConfig):
    """Settings of :func:`train`. ``select="last"``, ``mixup=0.4`` and a synthetic room (``reverb_prob=0.3``) and
    8 kHz telephone channel (``band_prob=0.2``) on the training crops since 0.2: from a few hundred clips of one
    corpus they gave steadier and better source models on other corpora and through a phone line (measured in
    docs/ADAPTATION.md, "The source model"); adaptation keeps them off (it hears the target's own channel). The
    bundled model keeps 0.1's recipe (``benchmarks/default_model/recipe.py``)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    crop_s: float = 3.0
    gain_db: float = 6.0
    noise_prob: float = 0.3
    reverb_prob: float = 0.3
    band_prob: float = 0.2
    #: labelled clips are used whole by default (and an unreadable one stops the run: labels are not dropped)
    max_clip_s: float | None = None
    label_smoothing: float = 0.05
    balance: bool = True
    penalty_weight: float = 0.0
    #: mixup: each training crop is mixed with another crop of its batch, ``lam ~ Beta(mixup, mixup)`` folded to
    #: ``>= 0.5``, and its target alike (0: off)
    mixup: float = 0.4
    #: which epoch's weights the checkpoint holds: "last" (validation UA is still reported every epoch) or
    #: "best" (by validation UA, when there are validation clips)
    select: str = "last"
    seed: int = 0
    device: str | None = None
    model: dict = field(default_factory=dict)


def labels_of(clips: Sequence[Clip]) -> list[str]:
    """The sorted label set of labelled clips."""
    return sorted({c.label for c in clips if c.label is not None})


def one_hot_targets(clips: Sequence[Clip], labels: list[str], smoothing: float = 0.0) -> np.ndarray:
    """Rows of ``(1 - s)`` on the clip's label plus ``s / C`` everywhere."""
    idx = np.array([labels.index(c.label) for c in clips])  # type: ignore[arg-type]
    t = np.full((len(clips), len(labels)), smoothing / len(labels), np.float32)
    t[np.arange(len(clips)), idx] += 1.0 - smoothing
    return t


def class_weights(targets: np.ndarray) -> np.ndarray:
    """Inverse class mass, mean 1 over present classes (0 for absent ones): the loss then serves UA."""
    mass = targets.sum(axis=0)
    present = mass > 0
    w = np.zeros_like(mass)
    w[present] = mass[present].sum() / (present.sum() * mass[present])
    return w.astype(np.float32)


class Supervised(Method):
    """Soft cross-entropy (class-balanced) to the targets, plus the co-occurrence penalty when given;
    AdamW with a one-cycle schedule; mixup; the last epoch, or the best by validation UA (``cfg.select``)."""

    name = "train"
    mixes = True

    def __init__(
        self,
        train_clips: Sequence[Clip],
        val_clips: Sequence[Clip] | None,
        cfg: TrainConfig,
        labels: list[str] | None = None,
        targets: np.ndarray | None = None,
        penalty: np.ndarray | None = None,
    ):
        if cfg.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {cfg.select!r}")
        self.cfg = cfg
        self.clips, self.val_clips = list(train_clips), list(val_clips or [])
        self.labels = labels or labels_of(self.clips)
        self.given_targets = targets is not None
        self.targets = one_hot_targets(self.clips, self.labels, cfg.label_smoothing) if targets is None else targets
        self.penalty = penalty
        self.notes = []

    def prepare(self, progress: bool) -> None:
        sr = ModelConfig(labels=self.labels, **self.cfg.model).sample_rate
        cut = int(self.cfg.max_clip_s * sr) if self.cfg.max_clip_s else None
        store = self.cfg.audio_store
        self.wavs = load_clips(self.clips, sr, "training clips", progress, store, cut)
        self.val_wavs = (
            load_clips(self.val_clips, sr, "validation clips", progress, store, cut) if self.val_clips else None
        )
        self.val_y = np.array([self.labels.index(c.label) for c in self.val_clips])  # type: ignore[arg-type]

    def build(self, device: torch.device) -> EmotionNet:
        net = EmotionNet(ModelConfig(labels=self.labels, **self.cfg.model)).to(device)
        w = class_weights(self.targets) if self.cfg.balance else np.ones(len(self.labels), np.float32)
        self.weights = torch.from_numpy(w).to(device)
        self.pen = None if self.penalty is None else torch.from_numpy(np.asarray(self.penalty, np.float32)).to(device)
        return net

    def data_description(self) -> str:
        return f"{len(self.clips)} labelled clips"

    def val_size(self) -> int:
        return len(self.val_clips)

    def schedule(self, opt: torch.optim.Optimizer, total: int) -> TorchSchedule:
        lr = self.cfg.lr
        return TorchSchedule(
            lambda o, n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=n, pct_start=0.15), opt, total
        )

    def identity(self, h: hashlib._Hash) -> None:
        hash_clips(h, self.clips)
        hash_clips(h, self.val_clips)
        h.update(repr(self.labels).encode())
        hash_array(h, self.targets)
        hash_array(h, self.penalty)
        h.update(repr([c.label for c in self.val_clips]).encode())

    def loss(
        self, ctx: FitContext, idx: np.ndarray, feats: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        t = torch.from_numpy(ctx.batch_rows(self.targets, idx)).to(ctx.device)
        loss = soft_cross_entropy(logits, t, self.weights)
        if self.pen is not None and self.cfg.penalty_weight > 0:
            loss = loss + self.cfg.penalty_weight * cooccurrence_penalty_loss(logits, t, self.pen)
        return loss, {}

    def end_epoch(self, ctx: FitContext, epoch: int, record: dict) -> float:
        if self.val_wavs is None:
            return float(epoch)
        score = self._val_ua(ctx, record)
        return float(epoch) if self.cfg.select == "last" else score

    def _val_ua(self, ctx: FitContext, record: dict) -> float:
        val = self.val_wavs
        pred = map_rows(lambda ix: predict_probs(ctx.net, Subset(val, ix), ctx.device), len(val), ctx.world)
        pred = pred.argmax(axis=1)
        record["val_ua"] = float(unweighted_accuracy(self.val_y, pred, len(self.labels)))
        return record["val_ua"]

    def describe_epoch(self, record: dict) -> str:
        return f" val UA {record['val_ua']:.4f}" if "val_ua" in record else ""

    def details(self) -> dict:
        return {
            "targets": "given distributions" if self.given_targets else "one-hot labels (smoothed)",
            "cooccurrence_penalty": self.penalty is not None and self.cfg.penalty_weight > 0,
        }


def train(
    train_clips: Sequence[Clip],
    val_clips: Sequence[Clip] | None,
    out: str | Path,
    cfg: TrainConfig | None = None,
    labels: list[str] | None = None,
    targets: np.ndarray | None = None,
    penalty: np.ndarray | None = None,
    progress: bool = True,
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train a source classifier on labelled clips and write its checkpoint to ``out`` (the last epoch's, or
    the best by validation UA with ``cfg.select="best"``).

    ``targets`` (``[N, C]`` rows, e.g. vote distributions) replace the one-hot labels when given;
    ``penalty`` (``[C, C]``) adds the co-occurrence penalty loss with ``cfg.penalty_weight``. Resumes from
    ``<out>.state`` (``resume``); ``on_epoch`` as :func:`~edgeser.adapt.engine.fit`."""
    method = Supervised(train_clips, val_clips, cfg or TrainConfig(), labels, targets, penalty)
    return fit(method, out, progress=progress, resume=resume, on_epoch=on_epoch)
