"""What the source-free baselines (SHOT, NRC) share: loading the source model, the SGD parameter groups
(backbone lr x0.1), the ``(1 + 10 p)^-0.75`` schedule, and the per-epoch loop with checkpoint/resume,
progress and (reporting only) target UA.

Mapping of the reference code's networks onto :class:`~edgeser.adapt.model.EmotionNet`:

* "feature extractor" ``netF`` = everything :meth:`EmotionNet.embed` uses (log-mel frontend, which has
  no parameters, input batch norm, stem, dilated blocks) -- the *backbone*;
* "bottleneck" ``netB`` = ``bottleneck_layer`` (Linear + BN + ReLU, applied after stats pooling);
* "classifier" ``netC`` = ``classifier`` (a plain Linear).

Protocol, the same for every method:

* target clips are decoded once; each step takes a random ``crop_s`` crop of every clip of the batch and,
  with ``augment``, the random gain/noise of source training (the reference code trains on random
  crops/flips of the images too); the model is in train mode (batch norm on batch statistics, dropout on);
* passes over *all* target clips (SHOT's pseudo-labels, NRC's memory-bank initialisation, reporting)
  run on whole clips in eval mode (batch norm on running statistics, no dropout), like the reference's
  "test" loader;
* batches of one clip are skipped (batch norm cannot train on them), as in the reference code;
* no model selection: there are no target labels in source-free adaptation, so the model written to
  ``out`` after the last epoch is the result. (The NRC reference code keeps the epoch with the best
  *target* accuracy, i.e. selects on target labels; we do not.)
* target labels, when the clips carry them, are read only to report UA in the history; they never reach
  a loss, a pseudo-label or a random draw (``tests/test_baselines.py`` checks that removing them changes
  no weight).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...errors import ManifestError, ModelError
from ...manifest import Clip, check_labels, read_manifest
from ...metrics import unweighted_accuracy
from ..checkpoint import load_model, load_state, read_checkpoint, restore_rng_state, rng_state, save_checkpoint, save_state
from ..data import augment, batches, forward_all, load_clips, pad_batch, pick_device, random_crops
from ..model import EmotionNet
from ..progress import Progress, log

#: keys of the source checkpoint's summary that the adapted checkpoint carries over (data licences,
#: model card): the adapted model is derived from the source model and inherits what applies to it
CARRIED_SUMMARY_KEYS = ("data", "model_card")


@dataclass
class AdaptConfig:
    """Settings shared by the baselines (each method's config adds its own and overrides defaults)."""

    #: passes over the target set (15 = the reference code's default ``max_epoch`` of SHOT and NRC)
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-2
    #: learning-rate multipliers; ``None`` freezes the part (no gradient, not in the optimizer)
    backbone_lr_mult: float | None = 0.1
    bottleneck_lr_mult: float | None = 1.0
    head_lr_mult: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-3
    #: schedule ``lr * (1 + gamma * p) ** -power``, ``p`` = finished steps / all steps
    gamma: float = 10.0
    power: float = 0.75
    crop_s: float = 3.0
    augment: bool = True
    gain_db: float = 6.0
    noise_prob: float = 0.3
    eval_batch_size: int = 32
    seed: int = 0
    device: str | None = None


# ---------------------------------------------------------------------------------------------- pieces

def load_source(source: str | Path | EmotionNet) -> tuple[EmotionNet, str, dict]:
    """``(a private copy of the source network, a description, the source checkpoint's summary)``.
    An :class:`EmotionNet` passed in is deep-copied, never modified."""
    if isinstance(source, EmotionNet):
        return copy.deepcopy(source), "EmotionNet (in memory)", {}
    if isinstance(source, torch.nn.Module):
        raise ModelError(f"source must be an EmotionNet or a checkpoint path, got {type(source).__name__}")
    summary = read_checkpoint(source).get("summary", {}) or {}
    return load_model(source), str(source), summary


def as_clips(target: Sequence[Clip] | str | Path) -> list[Clip]:
    """Clips as given, or read from a manifest CSV / folder."""
    if isinstance(target, (str, Path)):
        return read_manifest(target)
    clips = list(target)
    if not clips:
        raise ManifestError("no target clips")
    return clips


def backbone_parameters(net: EmotionNet) -> list[torch.nn.Parameter]:
    """Parameters of the frame encoder (what :meth:`EmotionNet.embed` uses)."""
    return [p for m in (net.frontend, net.input_norm, net.stem, net.blocks) for p in m.parameters()]


def param_groups(net: EmotionNet, lr: float, backbone: float | None, bottleneck: float | None,
                 head: float | None) -> list[dict]:
    """SGD parameter groups ``backbone | bottleneck | head`` with ``lr`` times each multiplier; a part
    whose multiplier is ``None`` is frozen (``requires_grad = False``) and left out."""
    parts = {"backbone": (backbone_parameters(net), backbone),
             "bottleneck": (list(net.bottleneck_layer.parameters()), bottleneck),
             "head": (list(net.classifier.parameters()), head)}
    covered = {id(p) for ps, _ in parts.values() for p in ps}
    if any(id(p) not in covered for p in net.parameters()):  # a new layer must be placed on purpose
        raise ModelError("EmotionNet has parameters outside backbone/bottleneck/head")
    groups = []
    for name, (params, mult) in parts.items():
        for p in params:
            p.requires_grad_(mult is not None)
        if mult is not None and params:
            groups.append({"params": params, "lr": lr * mult, "lr0": lr * mult, "name": name})
    return groups


def schedule_factor(step: int, total: int, gamma: float = 10.0, power: float = 0.75) -> float:
    """``(1 + gamma * step / total) ** -power``: the learning-rate decay of SHOT and NRC."""
    return (1.0 + gamma * step / max(total, 1)) ** (-power)


def n_steps(n: int, batch_size: int) -> int:
    """Training steps per epoch: full batches, plus the last partial one unless it is a single clip."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def fingerprint_model(net: EmotionNet) -> str:
    h = hashlib.sha256(repr(net.cfg.to_dict()).encode())
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprint_clips(clips: Sequence[Clip]) -> str:
    """Depends on the clips' paths and order only -- never on their labels."""
    h = hashlib.sha256()
    for c in clips:
        h.update(str(c.path).encode() + b"\0")
    return h.hexdigest()


def target_labels(clips: Sequence[Clip], labels: list[str], progress: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """``(indices of labelled clips, their class indices)`` for reporting UA, or None when no clip is
    labelled. Labels are optional for adaptation, so labels outside the model's set only switch the
    report off (with a note) instead of stopping the run."""
    try:
        check_labels(list(clips), labels, "target clips")
    except ManifestError as e:
        log(f"not reporting target UA: {e}", progress)
        return None
    idx = np.array([i for i, c in enumerate(clips) if c.label is not None], dtype=np.int64)
    if len(idx) == 0:
        return None
    return idx, np.array([labels.index(clips[i].label) for i in idx], dtype=np.int64)  # type: ignore[arg-type]


@torch.no_grad()
def full_pass(net: EmotionNet, wavs: Sequence[np.ndarray], device: torch.device,
              batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Whole clips in eval mode -> ``(bottleneck features [N, H], logits [N, C])``, float32."""
    was = net.training
    net.eval()
    try:
        feats = forward_all(net, wavs, device, batch_size, what="features")
        logits = net.head(torch.from_numpy(feats).to(device)).float().cpu().numpy()
    finally:
        net.train(was)
    return feats.astype(np.float32), logits.astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------- the loop

class Method:
    """One source-free method plugged into :func:`run_adaptation`. Subclasses set ``name`` and
    implement :meth:`loss`; the other hooks are optional."""

    name = "method"
    #: whether :meth:`begin_epoch` needs the eval pass of the current model over all target clips
    needs_pass = False

    def init(self, net: EmotionNet, feats: np.ndarray, logits: np.ndarray, device: torch.device) -> None:
        """Once, at the start of a fresh run, with the source model's pass over the target clips."""

    def begin_epoch(self, feats: np.ndarray | None, logits: np.ndarray | None,
                    report: tuple[np.ndarray, np.ndarray] | None) -> dict:
        """Before each epoch; returns values for the epoch's history record. ``report`` (labels) may only
        be used for values that are *reported*, never for anything that influences training."""
        return {}

    def loss(self, idx: torch.Tensor, feats: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss of one batch: ``idx`` the clips' indices in the target set, ``feats`` ``[B, H]`` the
        bottleneck features, ``logits`` ``[B, C]`` (both float32, with gradients)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        pass


def run_adaptation(method: Method, source: str | Path | EmotionNet, target_clips: Sequence[Clip] | str | Path,
                   out: str | Path, cfg: AdaptConfig, progress: bool = True, resume: bool = True) -> dict:
    """Adapt ``source`` to ``target_clips`` with ``method``; the model goes to ``out`` after every epoch
    (the last one is the result) and the full state to ``<out>.state``. Returns the summary."""
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {cfg.epochs} and {cfg.batch_size}")
    out = Path(out)
    state_path = out.with_name(out.name + ".state")
    net, source_desc, source_summary = load_source(source)
    source_fp = fingerprint_model(net)
    clips = as_clips(target_clips)
    labels = net.labels
    report = target_labels(clips, labels, progress)
    device = pick_device(cfg.device)
    net.to(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    wavs = load_clips(clips, net.cfg.sample_rate, "target clips", progress)
    steps = n_steps(len(wavs), cfg.batch_size)
    if steps == 0:
        raise ManifestError(f"need at least 2 target clips, got {len(wavs)}")
    total = cfg.epochs * steps

    groups = param_groups(net, cfg.lr, cfg.backbone_lr_mult, cfg.bottleneck_lr_mult, cfg.head_lr_mult)
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    cfg_key = {k: v for k, v in asdict(cfg).items() if k != "device"}
    meta = {"method": method.name, "config": cfg_key, "source": source_fp, "target": fingerprint_clips(clips)}
    start, history = 0, []
    state = load_state(state_path) if resume else None
    if state is not None and state.get("meta") == meta:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        restore_rng_state(rng, state["rng"])
        method.load_state_dict(state["method"], device)
        start, history = state["epoch"], state["history"]
        log(f"resuming from {state_path} after epoch {start}/{cfg.epochs}", progress)
    elif state is not None:
        log(f"ignoring {state_path}: it belongs to other settings, source model or target clips", progress)

    trainable = sum(p.numel() for g in groups for p in g["params"])
    log(f"{method.name}: adapting {trainable:,} of {sum(p.numel() for p in net.parameters()):,} parameters "
        f"on {device} for {cfg.epochs} epochs ({len(wavs)} target clips, {steps} steps per epoch)", progress)

    def ua(logits: np.ndarray) -> float | None:
        if report is None:
            return None
        idx, y = report
        return float(unweighted_accuracy(y, logits[idx].argmax(axis=1), len(labels)))

    if start >= cfg.epochs:
        log(f"{out} is already adapted for {cfg.epochs} epochs ({state_path})", progress)
        return _result(out, method, cfg, history)
    feats, logits = full_pass(net, wavs, device, cfg.eval_batch_size)
    if start == 0:
        method.init(net, feats, logits, device)
        if report is not None:
            history.append({"epoch": 0, "target_ua": ua(logits)})
            log(f"source model: target UA {history[-1]['target_ua']:.4f} ({len(report[0])} labelled clips, "
                "reported only)", progress)

    crop = int(cfg.crop_s * net.cfg.sample_rate)
    amp = device.type == "cuda"
    for epoch in range(start, cfg.epochs):
        t0 = time.monotonic()
        record: dict = {"epoch": epoch + 1}
        record.update(method.begin_epoch(feats, logits, report))
        net.train()
        sums: dict[str, float] = {}
        done = 0
        with Progress(steps, f"{method.name} epoch {epoch + 1}/{cfg.epochs}", progress) as bar:
            for idx in batches(len(wavs), cfg.batch_size, rng):
                if len(idx) < 2:
                    continue
                factor = schedule_factor(epoch * steps + done + 1, total, cfg.gamma, cfg.power)
                for g in opt.param_groups:
                    g["lr"] = g["lr0"] * factor
                chunk = random_crops([wavs[i] for i in idx], crop, rng)
                if cfg.augment:
                    chunk = augment(chunk, rng, cfg.gain_db, cfg.noise_prob)
                x, lengths = pad_batch(chunk, net.cfg.receptive_field)
                x, lengths = x.to(device), lengths.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    f = net.features(x, lengths)
                    z = net.head(f)
                loss, parts = method.loss(torch.from_numpy(idx).to(device), f.float(), z.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                for k, v in {"loss": loss.item(), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.update(1, loss=loss.item())
        record.update({k: v / max(done, 1) for k, v in sums.items()})
        record["lr"] = cfg.lr * factor
        if report is not None or (method.needs_pass and epoch + 1 < cfg.epochs):
            feats, logits = full_pass(net, wavs, device, cfg.eval_batch_size)
            if report is not None:
                record["target_ua"] = ua(logits)
        record["seconds"] = round(time.monotonic() - t0, 1)
        history.append(record)
        summary = {"labels": labels, "method": method.name, "source": source_desc, "target": {"clips": len(wavs)},
                   "epochs": epoch + 1, "history": history, "adapt_config": asdict(cfg), "device": device.type,
                   "final_target_ua": record.get("target_ua"),
                   **{k: source_summary[k] for k in CARRIED_SUMMARY_KEYS if k in source_summary}}
        save_checkpoint(out, net, **summary)
        save_state(state_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                "rng": rng_state(rng),
                                "method": method.state_dict(), "epoch": epoch + 1, "history": history,
                                "meta": meta})
        log(f"{method.name} epoch {epoch + 1}: loss {record['loss']:.4f}"
            + (f" target UA {record['target_ua']:.4f} (reported only)" if "target_ua" in record else "")
            + f" [{record['seconds']}s]", progress)
    return _result(out, method, cfg, history)


def _result(out: Path, method: Method, cfg: AdaptConfig, history: list[dict]) -> dict:
    last = history[-1] if history else {}
    return {"out": str(out), "method": method.name, "epochs": cfg.epochs, "history": history,
            "final_target_ua": last.get("target_ua")}
