"""Supervised (source) training on labelled clips with hard or soft targets.

Seeded; CPU or CUDA (bf16 autocast on CUDA); keeps the best checkpoint by validation UA; after each
epoch the full training state goes to ``<out>.state`` so that an interrupted run resumes where it
stopped."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..manifest import Clip
from ..metrics import unweighted_accuracy
from .checkpoint import load_state, restore_rng_state, rng_state, save_checkpoint, save_state
from .data import augment, batches, load_clips, pad_batch, pick_device, predict_probs, random_crops
from .losses import cooccurrence_penalty_loss, soft_cross_entropy
from .model import EmotionNet, ModelConfig, count_parameters
from .progress import Progress, log


@dataclass
class TrainConfig:
    """Settings of :func:`train` (defaults are what the bundled model was trained with)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    crop_s: float = 3.0
    label_smoothing: float = 0.05
    balance: bool = True
    gain_db: float = 6.0
    noise_prob: float = 0.3
    penalty_weight: float = 0.0
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


def train(train_clips: Sequence[Clip], val_clips: Sequence[Clip] | None, out: str | Path,
          cfg: TrainConfig | None = None, labels: list[str] | None = None,
          targets: np.ndarray | None = None, penalty: np.ndarray | None = None,
          progress: bool = True, resume: bool = True) -> dict:
    """Train a source classifier and write the best checkpoint to ``out``. Returns the summary.

    ``targets`` (``[N, C]`` rows, e.g. vote distributions) replace the one-hot labels when given;
    ``penalty`` (``[C, C]``) adds the co-occurrence penalty loss with ``cfg.penalty_weight``."""
    cfg = cfg or TrainConfig()
    out = Path(out)
    labels = labels or labels_of(train_clips)
    if targets is None:
        targets = one_hot_targets(train_clips, labels, cfg.label_smoothing)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = EmotionNet(ModelConfig(labels=labels, **cfg.model)).to(device)
    mcfg = net.cfg
    wavs = load_clips(train_clips, mcfg.sample_rate, "training clips", progress)
    val_wavs = load_clips(val_clips, mcfg.sample_rate, "validation clips", progress) if val_clips else None
    val_y = np.array([labels.index(c.label) for c in val_clips]) if val_clips else None  # type: ignore[arg-type]

    w = torch.from_numpy(class_weights(targets) if cfg.balance else np.ones(len(labels), np.float32)).to(device)
    pen = torch.from_numpy(np.asarray(penalty, np.float32)).to(device) if penalty is not None else None
    steps = (len(wavs) + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    state_path = out.with_name(out.name + ".state")
    start, best, history = 0, -1.0, []
    state = load_state(state_path) if resume else None
    if state is not None and state.get("train_config") == asdict(cfg) and state.get("n_train") == len(wavs):
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng_state(rng, state["rng"])
        start, best, history = state["epoch"], state["best"], state["history"]
        log(f"resuming from {state_path} after epoch {start}/{cfg.epochs}", progress)
    elif state is not None:
        log(f"ignoring {state_path}: it belongs to other settings or data", progress)

    log(f"training {count_parameters(net):,} parameters on {device} for {cfg.epochs} epochs "
        f"({len(wavs)} clips, {len(val_wavs or [])} validation)", progress)
    crop = int(cfg.crop_s * mcfg.sample_rate)
    amp = device.type == "cuda"
    for epoch in range(start, cfg.epochs):
        t0, net = time.monotonic(), net.train()
        total = 0.0
        with Progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", progress) as bar:
            for idx in batches(len(wavs), cfg.batch_size, rng):
                chunk = augment(random_crops([wavs[i] for i in idx], crop, rng), rng, cfg.gain_db, cfg.noise_prob)
                x, lengths = pad_batch(chunk, mcfg.receptive_field)
                x, lengths, t = x.to(device), lengths.to(device), torch.from_numpy(targets[idx]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = net(x, lengths)
                loss = soft_cross_entropy(logits, t, w)
                if pen is not None and cfg.penalty_weight > 0:
                    loss = loss + cfg.penalty_weight * cooccurrence_penalty_loss(logits, t, pen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
                bar.update(1, loss=loss.item())
        record = {"epoch": epoch + 1, "loss": total / steps, "seconds": round(time.monotonic() - t0, 1)}
        if val_wavs is not None:
            pred = predict_probs(net, val_wavs, device).argmax(axis=1)
            record["val_ua"] = float(unweighted_accuracy(val_y, pred, len(labels)))
        score = record.get("val_ua", float(epoch))
        history.append(record)
        summary = {"labels": labels, "epochs": epoch + 1, "history": history, "train_clips": len(wavs),
                   "val_clips": len(val_wavs or []), "train_config": asdict(cfg), "device": device.type}
        if score > best:
            best = score
            save_checkpoint(out, net, **summary, best_epoch=epoch + 1, best_val_ua=record.get("val_ua"))
        save_state(state_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "rng": rng_state(rng), "epoch": epoch + 1,
                                "best": best, "history": history, "train_config": asdict(cfg),
                                "n_train": len(wavs)})
        log(f"epoch {epoch + 1}: loss {record['loss']:.4f}"
            + (f" val UA {record['val_ua']:.4f} (best {best:.4f})" if "val_ua" in record else "")
            + f" [{record['seconds']}s]", progress)
    return {"out": str(out), "best_val_ua": best if val_wavs is not None else None, "history": history}
