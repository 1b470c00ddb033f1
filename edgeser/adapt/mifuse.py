"""MI-Fuse: adapt a source-trained EmotionNet to unlabelled target audio with two teachers.

Teachers (arXiv 2509.20706, read as in ``fusion``):

* an **LALM** (API-only large audio-language model), asked ``K`` times per clip: its samples are
  fetched once by the caller (``LALMTeacher`` / ``PredictionsTeacher``, cached) and passed in as
  ``lalm_samples`` ``(N, K, C)``;
* a **classifier** teacher: ``k_classifier`` MC-dropout passes of an EMA copy of the student
  (:class:`ClassifierTeacher`); it starts as the source model and follows the student
  (``ema <- m * ema + (1 - m) * student`` after every step); its samples are re-drawn every
  ``resample_every`` epochs as it moves.

Each teacher's mean distribution is weighted per clip by its mutual information
(:func:`edgeser.adapt.fusion.fuse`), and the student is trained on random augmented crops with

    loss = soft cross-entropy(student, fused target) + diversity_weight * diversity_loss

(soft cross-entropy has the gradients of KL(target || student); the diversity term, the negative
entropy of the batch-mean prediction, keeps the student from collapsing onto one class).

Variants through ``MIFuseConfig.teachers`` (one loop, not copies):

* ``"lalm+classifier"`` -- MI-Fuse (default);
* ``"lalm"`` -- the LALM-SFUDA baseline (:func:`sfuda_adapt`): the same student training on the
  LALM's pseudo-labels alone, no classifier teacher, no EMA;
* ``"classifier"`` -- classifier-only self-training (mean teacher); MI-Fuse degrades to this when
  no LALM samples are given, and the summary says so.

Target labels, when the clips have them, are used only to *report* progress (UA of the student,
of the fused labels, of the LALM mean and of the classifier teacher on the target clips) and
never reach the loss: the same seed gives the same weights with or without them
(``tests/test_mifuse.py``). The output is a normal EmotionNet checkpoint (the student after the
last epoch -- with no target labels there is nothing to select a "best" epoch on); the full state
(student, EMA, optimizer, epoch, RNG, teacher samples) goes to ``<out>.state`` after every epoch so
that an interrupted run resumes.

Defaults are for small target sets (a few hundred clips): AdamW lr 1e-3 with cosine decay,
15 epochs of batch 32, EMA momentum 0.99 (a time constant of ~100 steps, i.e. a few epochs at
300-500 clips: the teacher moves, but slower than the student), K = 8 MC-dropout samples re-drawn
every 2 epochs (8 passes over every clip cost about as much as a training epoch on a CPU, and the
EMA teacher changes little within 2 epochs),
diversity weight 1.0, fusion softmax with tau = 0.3 over each teacher's predictive entropy
relative to its mean over the target clips (see ``fusion`` for why not raw MC-dropout MI), no
sharpening (soft targets).

Quick check of these defaults (one seed, CPU): source trained on emodb, adapted on 5 nEMO speakers
(600 clips), UA on the 4 other speakers (479 clips). Source only 0.384. MI-Fuse with a poor
simulated LALM (votes from a turev_db-trained model at temperature 2: 30 % UA on the adaptation
clips, below the source) 0.394; with an informative simulated LALM (62 % UA, random per-clip
beliefs, a quarter of them wrong) 0.432, where LALM-SFUDA reached 0.441.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..manifest import Clip
from ..metrics import unweighted_accuracy
from .checkpoint import load_model, load_state, restore_rng_state, rng_state, save_checkpoint, save_state
from .data import augment, batches, load_clips, pad_batch, pick_device, predict_probs, random_crops
from .fusion import DEFAULT_METHOD, DEFAULT_RELATIVE, DEFAULT_TAU, DEFAULT_UNCERTAINTY, Fused, fuse, fusion_stats, sharpen
from ..labels import cooccurrence_penalty, votes_from_samples
from .losses import cooccurrence_penalty_loss, diversity_loss, soft_cross_entropy
from .model import EmotionNet, count_parameters
from .progress import Progress, log
from .teachers.classifier import ClassifierTeacher

TEACHER_SETS = ("lalm+classifier", "lalm", "classifier")
METHOD_NAMES = {"lalm+classifier": "mi-fuse", "lalm": "lalm-sfuda", "classifier": "classifier-self-training"}


@dataclass
class MIFuseConfig:
    """Settings of :func:`mifuse_adapt` / :func:`sfuda_adapt` (see the module docstring)."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    #: MC-dropout samples per clip from the classifier (EMA) teacher
    k_classifier: int = 8
    #: LALM answers per clip the caller should fetch (the samples given are used whatever their K)
    k_lalm: int = 5
    fusion: str = DEFAULT_METHOD
    tau: float = DEFAULT_TAU
    #: what the teacher weights come from: "entropy" (H of the teacher's mean) or "mi" (BALD)
    #: weight of the co-occurrence penalty loss; the penalty matrix comes from the co-occurrence of
    #: emotions in the LALM's K answers per clip (its synthetic votes); 0 = off
    penalty_weight: float = 0.0
    uncertainty: str = DEFAULT_UNCERTAINTY
    #: measure each teacher's uncertainty against its own mean over the target clips
    relative_uncertainty: bool = DEFAULT_RELATIVE
    #: temperature applied to the fused target (1 = none, < 1 sharpens)
    sharpen: float = 1.0
    diversity_weight: float = 1.0
    ema_momentum: float = 0.99
    #: epochs between re-drawing the classifier teacher's samples
    resample_every: int = 2
    crop_s: float = 3.0
    gain_db: float = 6.0
    noise_prob: float = 0.3
    #: clips are cut to their first ``max_clip_s`` seconds (None: whole clips)
    max_clip_s: float | None = 30.0
    #: "lalm+classifier" (MI-Fuse), "lalm" (LALM-SFUDA), "classifier" (self-training)
    teachers: str = "lalm+classifier"
    #: the LALM-only target: "soft" (mean of its samples) or "hard" (one-hot of the mean's argmax)
    lalm_target: str = "soft"
    seed: int = 0
    device: str | None = None


def _check_cfg(cfg: MIFuseConfig) -> None:
    if cfg.teachers not in TEACHER_SETS:
        raise ValueError(f"teachers must be one of {', '.join(TEACHER_SETS)}, got {cfg.teachers!r}")
    if cfg.lalm_target not in ("soft", "hard"):
        raise ValueError(f"lalm_target must be 'soft' or 'hard', got {cfg.lalm_target!r}")
    if cfg.epochs < 1 or cfg.batch_size < 2 or cfg.resample_every < 1 or cfg.k_classifier < 1:
        raise ValueError("epochs, resample_every and k_classifier must be >= 1 and batch_size >= 2")
    if not 0.0 <= cfg.ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1), got {cfg.ema_momentum}")


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


def _load_source(source: str | Path | EmotionNet) -> tuple[EmotionNet, str]:
    if isinstance(source, EmotionNet):
        return copy.deepcopy(source).cpu(), "in-memory EmotionNet"
    return load_model(source), str(source)


def _fingerprint(clips: Sequence[Clip], lalm: np.ndarray | None, net: EmotionNet) -> str:
    h = hashlib.sha1()
    for c in clips:
        h.update(str(c.path).encode() + b"\0")
    if lalm is not None:
        h.update(np.ascontiguousarray(lalm, dtype=np.float64).tobytes())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _ua(y: np.ndarray, rows: np.ndarray, n_classes: int) -> float | None:
    """UA of the argmax of ``rows`` against ``y`` (-1 = no label) over clips with a label and a row."""
    ok = (y >= 0) & np.all(np.isfinite(rows), axis=1)
    if not ok.any():
        return None
    return float(unweighted_accuracy(y[ok], np.nan_to_num(rows[ok]).argmax(axis=1), n_classes))


def _targets(fused: Fused, cfg: MIFuseConfig, lalm_only: bool) -> np.ndarray:
    t = fused.target
    if lalm_only and cfg.lalm_target == "hard":
        ok = fused.covered
        t = np.full_like(t, np.nan)
        t[ok] = np.eye(t.shape[1])[np.nan_to_num(fused.target[ok]).argmax(axis=1)]
    if cfg.sharpen != 1.0:
        t = sharpen(t, cfg.sharpen)
    return t.astype(np.float32)


def _penalty(lalm: np.ndarray | None, cfg: MIFuseConfig, device: torch.device) -> torch.Tensor | None:
    """Co-occurrence penalty matrix from the LALM's answers taken as votes (None when off)."""
    if cfg.penalty_weight <= 0:
        return None
    if lalm is None:
        raise ValueError("the co-occurrence penalty needs LALM samples: their votes give the co-occurrences")
    votes = votes_from_samples(lalm)
    votes = votes[votes.sum(axis=1) > 0]
    return torch.from_numpy(cooccurrence_penalty(votes).astype(np.float32)).to(device)


def mifuse_adapt(source: str | Path | EmotionNet, target_clips: Sequence[Clip], lalm_samples: np.ndarray | None,
                 out: str | Path, cfg: MIFuseConfig | None = None, progress: bool = True,
                 report_labels: bool = True, resume: bool = True,
                 on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Adapt ``source`` (checkpoint path or network) to ``target_clips`` and write the student to ``out``.

    ``lalm_samples``: ``(N, K, C)`` LALM samples for ``target_clips`` in the model's label order
    (NaN rows: not obtained), or None (classifier-only self-training). ``report_labels``: report UA
    on target clips that carry labels (reporting only). ``resume``: continue from ``<out>.state``
    when it belongs to the same settings and data. ``on_epoch(record)`` is called after each epoch
    once its checkpoint and state are written (raising there stops the run resumably).
    Returns the summary (also stored in the checkpoint)."""
    cfg = cfg or MIFuseConfig()
    _check_cfg(cfg)
    out = Path(out)
    target_clips = list(target_clips)
    if not target_clips:
        raise ValueError("no target clips to adapt to")
    source_net, source_name = _load_source(source)
    labels, n_classes = source_net.labels, len(source_net.labels)
    teachers = cfg.teachers
    note = None
    if lalm_samples is None and "lalm" in teachers:
        if teachers == "lalm":
            raise ValueError("LALM-SFUDA needs LALM samples (lalm_samples is None)")
        teachers = "classifier"
        note = "no LALM samples were given: classifier-only self-training (mean teacher), not MI-Fuse"
        log(f"note: {note}", progress)
    use_lalm, use_clf = "lalm" in teachers, "classifier" in teachers
    method = METHOD_NAMES[teachers]
    lalm = None
    if use_lalm:
        lalm = np.asarray(lalm_samples, dtype=np.float64)
        if lalm.ndim != 3 or lalm.shape[0] != len(target_clips) or lalm.shape[2] != n_classes:
            raise ValueError(f"lalm_samples must be (N={len(target_clips)}, K, C={n_classes}), got {lalm.shape}")

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    fingerprint = _fingerprint(target_clips, lalm, source_net)
    student = copy.deepcopy(source_net).to(device)
    ema = teacher = None
    if use_clf:
        ema = copy.deepcopy(source_net).to(device).requires_grad_(False)
        teacher = ClassifierTeacher(ema, device, name="classifier", seed=cfg.seed)
    sr = source_net.cfg.sample_rate
    max_len = int(cfg.max_clip_s * sr) if cfg.max_clip_s else None
    wavs = [w[:max_len] if max_len else w for w in load_clips(target_clips, sr, "target clips", progress)]
    y = np.array([labels.index(c.label) if report_labels and c.label in labels else -1 for c in target_clips])
    reporting = bool((y >= 0).any())
    names = (["lalm"] if use_lalm else []) + (["classifier"] if use_clf else [])

    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    clf_samples: np.ndarray | None = None
    state_path = out.with_name(out.name + ".state")
    start, step, history = 0, 0, []
    initial: dict = {}
    state = load_state(state_path) if resume else None
    if state is not None and state.get("mifuse_config") == asdict(cfg) and state.get("fingerprint") == fingerprint:
        student.load_state_dict(state["student"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        clf_samples = state["classifier_samples"]
        start, step, history, initial = state["epoch"], state["step"], state["history"], state["initial"]
        restore_rng_state(rng, state["rng"])
        log(f"resuming from {state_path} after epoch {start}/{cfg.epochs}", progress)
    else:
        if state is not None:
            log(f"ignoring {state_path}: it belongs to other settings or data", progress)
        if reporting:
            initial = {"source_ua": _ua(y, predict_probs(student, wavs, device), n_classes)}
    if reporting and use_lalm and "lalm_ua" not in initial:
        initial["lalm_ua"] = _ua(y, fuse([lalm]).target, n_classes)

    n_cov = len(wavs) if use_clf else int(np.isfinite(fuse([lalm]).target).all(axis=1).sum())
    per_epoch = max(1, n_cov // cfg.batch_size + (n_cov % cfg.batch_size >= 2))
    total_steps = cfg.epochs * per_epoch
    log(f"{method}: adapting {count_parameters(student):,} parameters on {device} for {cfg.epochs} epochs "
        f"({len(wavs)} target clips, teachers: {', '.join(names)})"
        + (f", source UA on target {initial['source_ua']:.4f}" if initial.get("source_ua") is not None else ""),
        progress)
    crop = int(cfg.crop_s * sr)
    amp = device.type == "cuda"
    summary: dict = {}
    penalty = _penalty(lalm, cfg, device)
    for epoch in range(start, cfg.epochs):
        t0 = time.monotonic()
        if use_clf and (clf_samples is None or epoch % cfg.resample_every == 0):
            clf_samples = teacher.sample_wavs(wavs, cfg.k_classifier, seed=cfg.seed * 100_003 + epoch)
        fused = fuse(([lalm] if use_lalm else []) + ([clf_samples] if use_clf else []), cfg.fusion, cfg.tau,
                     uncertainty=cfg.uncertainty, relative=cfg.relative_uncertainty)
        targets = _targets(fused, cfg, lalm_only=not use_clf)
        covered = np.flatnonzero(fused.covered)
        if len(covered) < 2:
            raise ValueError(f"only {len(covered)} target clips have a teacher label: nothing to adapt on")
        student.train()
        sums = {"loss": 0.0, "ce": 0.0, "diversity": 0.0}
        n_steps = 0
        with Progress(per_epoch, f"{method} epoch {epoch + 1}/{cfg.epochs}", progress) as bar:
            for pos in batches(len(covered), cfg.batch_size, rng):
                if len(pos) < 2:  # batch norm needs two clips
                    continue
                idx = covered[pos]
                for g in opt.param_groups:
                    g["lr"] = float(cfg.lr * 0.5 * (1.0 + np.cos(np.pi * min(step, total_steps) / total_steps)))
                chunk = augment(random_crops([wavs[i] for i in idx], crop, rng), rng, cfg.gain_db, cfg.noise_prob)
                x, lengths = pad_batch(chunk, student.cfg.receptive_field)
                x, lengths, t = x.to(device), lengths.to(device), torch.from_numpy(targets[idx]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = student(x, lengths)
                ce = soft_cross_entropy(logits, t)
                div = diversity_loss(logits)
                loss = ce + cfg.diversity_weight * div
                if penalty is not None:
                    loss = loss + cfg.penalty_weight * cooccurrence_penalty_loss(logits, t, penalty)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if ema is not None:
                    ema_update(ema, student, cfg.ema_momentum)
                n_steps += 1
                for k, v in (("loss", loss), ("ce", ce), ("diversity", div)):
                    sums[k] += float(v.item())
                bar.update(1, loss=float(loss.item()))
        record: dict = {"epoch": epoch + 1, **{k: v / max(n_steps, 1) for k, v in sums.items()},
                        "trained_clips": int(len(covered)), "fusion": fusion_stats(fused, names)}
        if reporting:
            ua = {"student": _ua(y, predict_probs(student, wavs, device), n_classes),
                  "fused": _ua(y, targets, n_classes)}
            if use_lalm:
                ua["lalm"] = initial.get("lalm_ua")
            if use_clf:
                ua["classifier"] = _ua(y, fused.means[:, names.index("classifier")], n_classes)
            record["target_ua"] = ua
        record["seconds"] = round(time.monotonic() - t0, 1)
        history.append(record)
        summary = _summary(method, labels, source_name, target_clips, lalm, cfg, device, history, initial,
                           note, epoch + 1)
        save_checkpoint(out, student, **summary)
        save_state(state_path, {"student": student.state_dict(), "ema": None if ema is None else ema.state_dict(),
                                "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                                "rng": rng_state(rng), "classifier_samples": clf_samples,
                                "lalm_samples": lalm, "history": history, "initial": initial,
                                "mifuse_config": asdict(cfg), "fingerprint": fingerprint})
        fs = record["fusion"]["teachers"]
        log(f"epoch {epoch + 1}: loss {record['loss']:.4f} (ce {record['ce']:.4f}, div {record['diversity']:.4f})"
            + "".join(f" w[{n}] {fs[n]['mean_weight']:.2f}" for n in names)
            + ("".join(f" UA[{k}] {v:.4f}" for k, v in record["target_ua"].items() if v is not None)
               if reporting else "")
            + f" [{record['seconds']}s]", progress)
        if on_epoch is not None:
            on_epoch(record)
    if not summary:  # resumed a run that had already finished
        summary = _summary(method, labels, source_name, target_clips, lalm, cfg, device, history, initial,
                           note, len(history))
    return {"out": str(out), "state": str(state_path), **summary}


def _summary(method: str, labels: list[str], source: str, clips: Sequence[Clip], lalm: np.ndarray | None,
             cfg: MIFuseConfig, device: torch.device, history: list, initial: dict, note: str | None,
             epochs: int) -> dict:
    last = history[-1] if history else {}
    s = {"method": method, "labels": labels, "source": source,
         "target": f"{len(clips)} target clips (labels, if any, for reporting only)", "target_clips": len(clips),
         "epochs": epochs, "device": device.type, "mifuse_config": asdict(cfg),
         "lalm_k": None if lalm is None else int(lalm.shape[1]),
         "fusion": last.get("fusion"), "history": history}
    if initial:
        s["initial"] = initial
    if note:
        s["note"] = note
    return s


def sfuda_adapt(source: str | Path | EmotionNet, target_clips: Sequence[Clip], lalm_samples: np.ndarray,
                out: str | Path, cfg: MIFuseConfig | None = None, **kwargs) -> dict:
    """LALM-SFUDA baseline: the MI-Fuse student training on the LALM's pseudo-labels alone (no
    classifier teacher, no EMA, same loss). The target is the mean of the LALM's samples (its vote
    distribution) by default -- the same LALM term MI-Fuse fuses, so the comparison isolates what
    the classifier teacher and the MI weighting add, and soft targets are the better bet for SER;
    ``cfg.lalm_target="hard"`` trains on its argmax instead. Other arguments as :func:`mifuse_adapt`."""
    if lalm_samples is None:
        raise ValueError("LALM-SFUDA needs LALM samples (lalm_samples is None)")
    cfg = replace(cfg or MIFuseConfig(), teachers="lalm")
    return mifuse_adapt(source, target_clips, lalm_samples, out, cfg, **kwargs)
