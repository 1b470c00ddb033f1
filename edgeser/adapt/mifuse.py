"""MI-Fuse: adapt a source-trained EmotionNet to unlabelled target audio with teachers whose answers are
fused per clip by their uncertainty (arXiv 2509.20706, as read in ``docs/ADAPTATION.md``).

Contract: ``mifuse_adapt(source, target_clips, teachers, out, cfg)`` fuses any number of teachers with
:func:`edgeser.adapt.fusion.fuse` -- *fixed* ones (an LALM endpoint, a predictions file, precomputed
samples: asked once, before training) and *moving* ones (the EMA classifier :class:`EMATeacher`:
updated after every step, re-sampled on its schedule) -- and trains the student, on random augmented
crops, with ``soft cross-entropy(student, fused target) + diversity_weight * diversity_loss`` (plus the
co-occurrence penalty when ``penalty_weight > 0``). MI-Fuse is an LALM teacher plus the EMA teacher;
LALM-SFUDA (:func:`sfuda_adapt`) is one fixed teacher alone; classifier self-training is the EMA teacher
alone. The loop is :func:`edgeser.adapt.engine.fit`; target labels only report progress."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EdgeserError
from ..labels import cooccurrence_penalty, votes_from_samples
from ..manifest import Clip
from .budget import RULES as BUDGET_RULES
from .budget import parse_budget, select_clips
from .data import softmax, teacher_clips
from .distributed import current, main_first
from .engine import (
    AdaptMethod,
    FactorSchedule,
    FitConfig,
    FitContext,
    FitResult,
    cosine_factor,
    fit,
    full_pass,
    hash_array,
    ua_of,
)
from .fusion import (
    DEFAULT_METHOD,
    DEFAULT_RELATIVE,
    DEFAULT_TAU,
    DEFAULT_UNCERTAINTY,
    Fused,
    class_prior,
    coverage_weights,
    fuse,
    fusion_stats,
    sharpen,
    valid_rows,
)
from .loader import resolve_workers
from .losses import anchor_loss, cooccurrence_penalty_loss, diversity_loss, entropy, soft_cross_entropy
from .model import EmotionNet
from .progress import log
from .reliability import DEFAULT_POWER, crossfit_predict, logmel_stats, reliability_prior, teacher_kappas
from .teachers.base import MovingTeacher, Teacher
from .teachers.classifier import EMATeacher, ema_update

RELIABILITY = ("none", "referee")
PARTIAL_WEIGHTS = ("full", "coverage")
DIVERSITY_PRIORS = ("uniform", "teachers")
#: a fixed teacher whose labels agree with their own referee below this kappa is reported as unreliable
UNRELIABLE_KAPPA = 0.1

__all__ = [
    "MIFuseConfig",
    "FusionMethod",
    "mifuse_adapt",
    "sfuda_adapt",
    "run_mifuse",
    "run_sfuda",
    "EMATeacher",
    "ema_update",
]


@dataclass
class MIFuseConfig(FitConfig):
    """Settings of :func:`mifuse_adapt` / :func:`sfuda_adapt` (the EMA teacher has its own: :class:`EMATeacher`)."""

    epochs: int = 15
    batch_size: int = 32
    #: 3e-4 since 0.2 (was 1e-3): MI-Fuse +1.3 / +0.3 / +2.2 and LALM-SFUDA +7.9 / +0.9 / -0.3 points (weak / mid /
    #: strong LALM), ceiling +0.7, paired over 12 cells each (benchmarks/cross_corpus/results_fusion_variants_quick.md)
    lr: float = 3e-4
    weight_decay: float = 1e-2
    #: answers asked of each fixed teacher (e.g. the LALM) per clip
    k_lalm: int = 5
    #: teacher weights from their uncertainty: "softmax" (w ~ exp(-u / tau)), "inverse" or "equal"
    fusion: str = DEFAULT_METHOD
    tau: float = DEFAULT_TAU
    #: what the uncertainty is: "entropy" (H of the teacher's mean) or "mi" (BALD mutual information)
    uncertainty: str = DEFAULT_UNCERTAINTY
    #: measure each teacher's uncertainty against its own mean over the target clips
    relative_uncertainty: bool = DEFAULT_RELATIVE
    #: temperature applied to the fused target (1 = none, < 1 sharpens)
    sharpen: float = 1.0
    diversity_weight: float = 1.0
    #: what the diversity loss pulls the student's batch-mean prediction toward: "uniform" (equal classes) or
    #: "teachers" (the class shares of the first epoch's fused labels, :func:`edgeser.adapt.fusion.class_prior`:
    #: a target domain that lacks a class, or is mostly one, is not forced to equal shares)
    diversity_prior: str = "uniform"
    #: weight of the co-occurrence penalty loss; the penalty matrix comes from the co-occurrence of
    #: emotions in the fixed teachers' K answers per clip (their synthetic votes); 0 = off
    penalty_weight: float = 0.0
    #: target with fixed teachers only (LALM-SFUDA): "soft" (their fused mean) or "hard" (its argmax, one-hot)
    lalm_target: str = "soft"
    #: global teacher reliability (``edgeser.adapt.reliability``): "referee" scales each teacher's weights by
    #: its agreement with a cross-fitted referee of the fixed teachers' labels; "none" = per-clip weights only
    reliability: str = "referee"
    #: the prior is ``max(kappa, 0) ** reliability_power``, normalised over the teachers
    reliability_power: float = DEFAULT_POWER
    #: ask the fixed teachers (the LALM) about at most this many clips: a count or a percentage like "25%"
    #: (None: every clip); chosen by :func:`edgeser.adapt.budget.select_clips`, the others train all the same
    lalm_budget: int | str | None = None
    #: how the budget's clips are chosen (:data:`edgeser.adapt.budget.RULES`): "least-sure", "stratified", "random"
    #: (at a quarter of the clips the default kept 42 % of the full budget's gain, the others 3 % and 8 %)
    budget_rule: str = "least-sure"
    #: learning rate of the frame encoder (input norm, stem, blocks) relative to ``lr``; 0 freezes its weights
    #: (its batch-norm statistics still follow the target audio); the bottleneck and classifier get ``lr``
    encoder_lr_scale: float = 1.0
    #: how much a clip counts in the cross-entropy when some teachers did not answer it (an LALM refusal, or
    #: a clip outside the LALM budget): "full" (1, as a clip every teacher answered) or "coverage" (the share
    #: of the teachers' reliability prior that answered it, before ``moving_weight``'s discount,
    #: :func:`edgeser.adapt.fusion.coverage_weights`). "coverage" since 0.2: +0.5 / +0.6 / +0.7 points (weak / mid /
    #: strong LALM) over "full", and at a quarter of the LALM calls 51.6 against 49.2 (results_fusion_variants_quick.md)
    partial_weight: str = "coverage"
    #: mixup of the student's crops and fused targets, as :class:`~edgeser.adapt.train.TrainConfig`'s (0: off)
    mixup: float = 0.0
    #: weight of the L2-SP pull toward the source network's weights (:func:`edgeser.adapt.losses.anchor_loss`;
    #: 0: off): a few hundred clips of a few speakers, and the student drifts toward what only they share; 0.01
    #: lost 0.7-0.9 points in the regime benchmark (results_fusion_variants_quick.md), so it is off
    anchor_weight: float = 0.0
    #: weight of the mean per-clip prediction entropy (:func:`edgeser.adapt.losses.entropy`; 0: off): with the
    #: diversity loss it makes SHOT's information maximisation. Tried because SHOT beat MI-Fuse by 2.1 points with a
    #: weak LALM on leave-one-corpus-out transfers; 0.3 / 1.0 moved MI-Fuse by -0.6 / -1.8 points (weak LALM, corpus
    #: pairs) and -0.0 / -0.7 (weak, LOCO), within noise with the strong one (results_entropy_quick.md): off
    entropy_weight: float = 0.0
    #: multiplies the moving (EMA classifier) teachers' share of the fusion prior before it is normalised (1: as
    #: the reliability estimate says, the paper's fusion). 0 since 0.2: the EMA teacher labels only the clips no
    #: fixed teacher answered (refusals, clips outside the LALM budget). It is the student's own average, so its
    #: labels carry the source model's mistakes in a form the student can learn. 0 vs 1: +2.6 / +2.0 / +0.2
    #: points (weak / mid / strong LALM), 0.25: +0.5 / +0.9 / +0.5, paired over 12 cells
    #: (benchmarks/cross_corpus/results_fusion_variants_quick.md). Not applied when no fixed teacher agrees with
    #: its referee beyond chance (kappa <= 0)
    moving_weight: float = 0.0


def _check_cfg(cfg: MIFuseConfig) -> None:
    if cfg.reliability not in RELIABILITY:
        raise ValueError(f"reliability must be one of {', '.join(RELIABILITY)}, got {cfg.reliability!r}")
    parse_budget(cfg.lalm_budget, 1)  # a malformed budget fails before any work
    if cfg.budget_rule not in BUDGET_RULES:
        raise ValueError(f"budget_rule must be one of {', '.join(BUDGET_RULES)}, got {cfg.budget_rule!r}")
    if not cfg.anchor_weight >= 0:
        raise ValueError(f"anchor_weight must be >= 0, got {cfg.anchor_weight}")
    if not cfg.entropy_weight >= 0:
        raise ValueError(f"entropy_weight must be >= 0, got {cfg.entropy_weight}")
    if not 0 <= cfg.moving_weight <= 1:
        raise ValueError(f"moving_weight must be in [0, 1], got {cfg.moving_weight}")
    if not cfg.encoder_lr_scale >= 0:
        raise ValueError(f"encoder_lr_scale must be >= 0, got {cfg.encoder_lr_scale}")
    if cfg.partial_weight not in PARTIAL_WEIGHTS:
        raise ValueError(f"partial_weight must be one of {', '.join(PARTIAL_WEIGHTS)}, got {cfg.partial_weight!r}")
    if cfg.diversity_prior not in DIVERSITY_PRIORS:
        raise ValueError(f"diversity_prior must be one of {', '.join(DIVERSITY_PRIORS)}, got {cfg.diversity_prior!r}")
    if cfg.lalm_target not in ("soft", "hard"):
        raise ValueError(f"lalm_target must be 'soft' or 'hard', got {cfg.lalm_target!r}")
    if isinstance(cfg.k_lalm, bool) or not isinstance(cfg.k_lalm, int) or cfg.k_lalm < 1:
        raise ValueError(f"k_lalm must be a positive integer, got {cfg.k_lalm!r}")


def _targets(fused: Fused, cfg: MIFuseConfig, hard: bool) -> np.ndarray:
    t = fused.target
    if hard and cfg.lalm_target == "hard":
        ok = fused.covered
        t = np.full_like(t, np.nan)
        t[ok] = np.eye(t.shape[1])[np.nan_to_num(fused.target[ok]).argmax(axis=1)]
    if cfg.sharpen != 1.0:
        t = sharpen(t, cfg.sharpen)
    return t.astype(np.float32)


def _unique_names(teachers: Sequence[Teacher | MovingTeacher]) -> list[str]:
    names: list[str] = []
    for t in teachers:
        name, n = str(t.name), 2
        while name in names:
            name, n = f"{t.name}#{n}", n + 1
        names.append(name)
    return names


def referee_labels(
    net: EmotionNet, wavs: Sequence[np.ndarray], fixed_answers: Sequence[np.ndarray], seed: int = 0
) -> np.ndarray | None:
    """Cross-fitted top class per clip of a ridge classifier on clip log-mel statistics (``net``'s frontend,
    which is left on the CPU), trained on the fixed teachers' (the LALM's) top labels
    (:mod:`edgeser.adapt.reliability`); None when fewer than 2 clips have a fixed teacher's answer."""
    fixed = fuse(list(fixed_answers), "equal")
    if fixed.covered.sum() < 2:
        return None
    frontend, need = net.frontend.cpu(), net.cfg.n_fft + net.cfg.hop_length
    with torch.no_grad():
        feats = np.stack(
            [
                logmel_stats(frontend(torch.from_numpy(np.pad(w, (0, max(0, need - len(w)))))[None])[0].numpy())
                for w in wavs
            ]
        )
    y = np.nan_to_num(fixed.target).argmax(axis=1)
    return crossfit_predict(feats, y, fixed.covered, fixed.target.shape[1], seed=seed)


def moving_discount(prior: np.ndarray | None, moving: Sequence[int], n: int, weight: float) -> np.ndarray:
    """``prior`` ``(n,)`` (None: equal) with the ``moving`` teachers' entries multiplied by ``weight``, normalised.

    >>> moving_discount(None, [1], 2, 0.25).round(2)
    array([0.8, 0.2])
    """
    p = np.full(n, 1.0 / n) if prior is None else np.asarray(prior, np.float64).copy()
    p[list(moving)] *= weight
    total = p.sum()
    return p / total if total > 0 else np.full(n, 1.0 / n)


class FusionMethod(AdaptMethod):
    """The student of MI-Fuse (and of LALM-SFUDA / self-training: the same loop with other teachers)."""

    mixes = True

    def __init__(
        self,
        source: str | Path | EmotionNet,
        target_clips: Sequence[Clip] | str | Path,
        teachers: Sequence[Teacher | MovingTeacher],
        cfg: MIFuseConfig,
        report_labels: bool = True,
    ):
        super().__init__(source, target_clips, cfg, report_labels)
        _check_cfg(cfg)
        self.cfg: MIFuseConfig = cfg
        self.teachers = list(teachers)
        if not self.teachers:
            raise ValueError("MI-Fuse needs at least one teacher")
        for t in self.teachers:
            if not isinstance(t, (Teacher, MovingTeacher)):
                raise TypeError(f"a teacher must be a Teacher (fixed) or a MovingTeacher, got {type(t).__name__}")
        self.names = _unique_names(self.teachers)
        self.fixed = [i for i, t in enumerate(self.teachers) if not t.moving]
        self.moving = [i for i, t in enumerate(self.teachers) if t.moving]
        self.name = (
            "mi-fuse" if self.fixed and self.moving else "lalm-sfuda" if self.fixed else "classifier-self-training"
        )
        if not self.fixed:
            self.notes.append("no fixed (LALM) teacher: classifier-only self-training (mean teacher), not MI-Fuse")
        self.answers: dict[int, np.ndarray] = {}
        self._anchors: list[torch.Tensor] | None = None  # anchor_weight > 0: the source's weights on the device
        self.fused: Fused | None = None
        self.clip_weights: np.ndarray | None = None

    # ---- before training
    def prepare(self, progress: bool) -> None:
        super().prepare(progress)
        n, c, k = len(self.clips), len(self.labels), self.cfg.k_lalm
        asked = self._budgeted_clips(progress) if self.fixed else np.arange(n)
        for i in self.fixed:
            t = self.teachers[i]
            if list(getattr(t, "labels", self.labels)) != list(self.labels):
                raise EdgeserError(
                    f"teacher {self.names[i]} answers in labels {list(t.labels)}, the model has {self.labels}"
                )
            log(
                f"asking {self.names[i]} for {k} samples of each of {len(asked)}"
                + (f" (budget) of {n}" if len(asked) < n else "")
                + " clips"
                + (" (answers are cached)" if hasattr(t, "cache") else ""),
                progress,
            )
            # data-parallel: rank 0 asks (and fills the answer cache), the other processes then read the cache
            with main_first(current()), teacher_clips(self.audio, t.reads_audio) as clips:
                if getattr(t, "positional", False):  # answers held by position (FixedSamples): take the budget's rows
                    sub = np.asarray(t.sample(clips, k), dtype=np.float64)[asked]
                else:
                    sub = np.asarray(t.sample([clips[j] for j in asked], k), dtype=np.float64)
            if sub.ndim != 3 or sub.shape[0] != len(asked) or sub.shape[2] != c:
                raise ValueError(
                    f"teacher {self.names[i]} gave samples of shape {sub.shape}, expected (N={len(asked)}, K, C={c})"
                )
            s = np.full((n, sub.shape[1], c), np.nan)
            s[asked] = sub
            usage = getattr(t, "usage", None)
            if usage is not None and hasattr(usage, "summary"):
                log(f"{self.names[i]}: {usage.summary()}", progress)
            self.answers[i] = s
        self._check_contributions(progress)

    def _budgeted_clips(self, progress: bool) -> np.ndarray:
        """Indices of the clips the fixed teachers are asked about: all, or ``cfg.lalm_budget`` of them chosen
        from the source model's predictions (:func:`edgeser.adapt.budget.select_clips`)."""
        n = len(self.clips)
        budget = parse_budget(self.cfg.lalm_budget, n)
        if budget is None or budget >= n:
            return np.arange(n)
        _, logits = full_pass(self.source_net, self.wavs, torch.device("cpu"), self.cfg.eval_batch_size)
        chosen = select_clips(softmax(logits), budget, self.cfg.seed, self.cfg.budget_rule)
        how = BUDGET_RULES[self.cfg.budget_rule]
        note = (
            f"LALM budget {self.cfg.lalm_budget}: the fixed teachers hear {len(chosen)} of {n} clips ({how}); "
            "the other teachers cover the rest"
        )
        log(note, progress)
        self.notes.append(note)
        return chosen

    def _check_contributions(self, progress: bool) -> None:
        """Warn about a fixed teacher that gave no usable answer at all; refuse to run when no teacher can."""
        dead = []
        for i in self.fixed:
            if valid_rows(self.answers[i]).any():
                continue
            t = self.teachers[i]
            usage, unknown = getattr(t, "usage", None), getattr(t, "unknown_labels", None)
            why = (
                f" ({usage.unparsed_answers} answers could not be parsed, {usage.missing_samples} are missing)"
                if usage is not None and hasattr(usage, "unparsed_answers")
                else f" ({unknown} answers are not in the label set {', '.join(self.labels)})"
                if unknown
                else ""
            )
            dead.append(
                f"teacher {self.names[i]} gave no usable answer for any of the {len(self.clips)} target clips{why}"
            )
        if not dead:
            return
        if len(dead) == len(self.fixed) and not self.moving:
            raise EdgeserError(
                f"{self.name}: {dead[0]}; nothing to train on (check the teacher's answers and its label set)"
            )
        for msg in dead:
            rest = (
                f"the student trains on the {' and '.join(self.names[j] for j in self.moving)} teacher alone "
                "(self-training, not MI-Fuse)"
                if len(dead) == len(self.fixed)
                else "the other teachers carry the fusion"
            )
            note = f"{msg}: it contributes nothing; {rest}"
            log(f"warning: {note}", progress)
            self.notes.append(note)

    def build(self, device: torch.device) -> EmotionNet:
        student = super().build(device)
        for i in self.moving:
            workers = resolve_workers(self.cfg.workers, device)
            self.teachers[i].attach(self.source_net, device, self.cfg.seed, workers=workers)
        self.penalty = None
        if self.cfg.penalty_weight > 0:
            if not self.fixed:
                raise EdgeserError(
                    "the co-occurrence penalty needs a fixed (LALM) teacher: its answers give the co-occurrences"
                )
            votes = votes_from_samples(np.concatenate([self.answers[i] for i in self.fixed], axis=1))
            votes = votes[votes.sum(axis=1) > 0]
            self.penalty = torch.from_numpy(cooccurrence_penalty(votes).astype(np.float32)).to(device)
        self.referee = self._referee(student, device)
        self.kappas: np.ndarray | None = None
        #: the diversity loss's class prior (None: uniform), fixed on the first epoch's fused labels
        self.class_prior: np.ndarray | None = None
        self._discount_noted = False
        return student

    def _referee(self, net: EmotionNet, device: torch.device) -> np.ndarray | None:
        """The referee's labels (:func:`referee_labels`); None when reliability is off or moot."""
        if self.cfg.reliability == "none" or not self.fixed or len(self.teachers) < 2:
            return None
        referee = referee_labels(net, self.wavs, [self.answers[i] for i in self.fixed], seed=self.cfg.seed)
        net.frontend.to(device)
        return referee

    def param_groups(self, net: EmotionNet) -> list[dict]:
        scale = self.cfg.encoder_lr_scale
        if scale == 1.0:
            return super().param_groups(net)
        encoder = [p for m in (net.input_norm, net.stem, net.blocks) for p in m.parameters()]
        ids = {id(p) for p in encoder}
        groups = [{"params": [p for p in net.parameters() if id(p) not in ids], "lr0": self.cfg.lr}]
        if scale > 0:
            groups.append({"params": encoder, "lr0": self.cfg.lr * scale})
        return groups

    def train_size(self) -> int:
        if self.moving:
            return len(self.clips)
        return int(fuse([self.answers[i] for i in self.fixed]).covered.sum())

    def schedule(self, opt: torch.optim.Optimizer, total: int) -> FactorSchedule:
        return FactorSchedule(cosine_factor)

    def identity(self, h: hashlib._Hash) -> None:
        super().identity(h)
        for i, t in enumerate(self.teachers):
            h.update(self.names[i].encode() + b"\0")
            if t.moving:
                h.update(json.dumps(t.describe(), sort_keys=True, default=str).encode())
            else:
                hash_array(h, self.answers[i])

    def start(self, ctx: FitContext) -> dict:
        if self.report is None or not self.fixed:
            return {}
        return {
            "teacher_ua": {
                self.names[i]: ua_of(self.report, fuse([self.answers[i]]).target, len(self.labels)) for i in self.fixed
            }
        }

    # ---- each epoch
    def begin_epoch(self, ctx: FitContext, epoch: int) -> tuple[np.ndarray, dict]:
        for i in self.moving:
            self.teachers[i].refresh(epoch, ctx.wavs)
        samples = [self.teachers[i].samples if t.moving else self.answers[i] for i, t in enumerate(self.teachers)]
        cfg = self.cfg
        prior = reliability = None
        if self.referee is not None:
            if self.kappas is None:
                # measured once, on the teachers as they start (the EMA teacher is the source model then): later
                # the EMA teacher has learnt from the fused labels and agrees with the referee for that reason
                means = fuse(
                    samples, cfg.fusion, cfg.tau, uncertainty=cfg.uncertainty, relative=cfg.relative_uncertainty
                ).means
                self.kappas = teacher_kappas(self.referee, means, len(self.labels))
                self._warn_unreliable(self.kappas, ctx.progress)
            prior = reliability_prior(self.kappas, cfg.reliability_power)
            reliability = {n: {"kappa": float(k), "prior": float(p)} for n, k, p in zip(self.names, self.kappas, prior)}
        # the discount decides whose labels a clip's target mixes; how much a clip counts (coverage) keeps the
        # reliability prior: a clip only the EMA teacher labels counts as much as that teacher is trusted
        mixing = prior
        discounting = cfg.moving_weight != 1.0 and bool(self.fixed) and bool(self.moving)
        if discounting and self._fixed_hear_the_audio():
            mixing = moving_discount(prior, self.moving, len(self.teachers), cfg.moving_weight)
        self.fused = fuse(
            samples, cfg.fusion, cfg.tau, uncertainty=cfg.uncertainty, relative=cfg.relative_uncertainty, prior=mixing
        )
        if discounting:
            self._note_discount(mixing is not prior, ctx.progress)
        self.targets = _targets(self.fused, cfg, hard=not self.moving)
        self.clip_weights = None
        if cfg.partial_weight == "coverage":
            self.clip_weights = coverage_weights(np.isfinite(self.fused.mi), prior).astype(np.float32)
        covered = np.flatnonzero(self.fused.covered)
        if len(covered) < 2:
            raise EdgeserError(
                f"{self.name}: only {len(covered)} target clips have a teacher label: nothing to adapt on"
            )
        if cfg.diversity_prior == "teachers" and self.class_prior is None:
            # from the teachers as they start, like the kappas: later the EMA teacher has learnt from the student
            self.class_prior = class_prior(self.targets[covered])
        info = {"trained_clips": int(len(covered)), "fusion": fusion_stats(self.fused, self.names)}
        if self.class_prior is not None:
            info["class_prior"] = dict(zip(self.labels, map(float, self.class_prior)))
        if reliability is not None:
            info["reliability"] = reliability
        if self.clip_weights is not None:
            info["mean_clip_weight"] = float(self.clip_weights[covered].mean())
        return covered, info

    def _note_discount(self, applied: bool, progress: bool) -> None:
        """Say once what ``moving_weight`` did (the printed weights alone do not tell why they are what they are)."""
        if self._discount_noted:
            return
        self._discount_noted = True
        heard = np.isfinite(self.fused.mi[:, self.fixed]).any(axis=1)  # a teacher's MI is NaN where it gave nothing
        moving = " and ".join(self.names[i] for i in self.moving)
        if not applied:
            note = (
                f"no fixed teacher agrees with the audio beyond chance: the {moving} teacher keeps its whole share "
                f"(moving_weight={self.cfg.moving_weight} not applied)"
            )
        elif self.cfg.moving_weight == 0:
            note = (
                f"the {moving} teacher labels only the {int((~heard).sum())} of {len(heard)} clips no fixed teacher "
                "answered (moving_weight=0)"
            )
        else:
            note = f"the {moving} teacher's share of the fusion is scaled by moving_weight={self.cfg.moving_weight}"
        log(note, progress)
        self.notes.append(note)

    def _fixed_hear_the_audio(self) -> bool:
        """False when the reliability estimate finds no fixed teacher agreeing with its referee beyond chance
        (kappa <= 0, e.g. an LALM that gives one answer to every clip): then the moving teachers keep their
        whole share; True when some fixed teacher does, or when reliability is off."""
        if self.kappas is None:
            return True
        return bool(any(self.kappas[i] > 0 for i in self.fixed))

    def _warn_unreliable(self, kappas: np.ndarray, progress: bool) -> None:
        for i in self.fixed:
            if not kappas[i] >= UNRELIABLE_KAPPA:
                note = (
                    f"teacher {self.names[i]} looks unreliable: its labels agree with what the audio predicts of them "
                    f"at kappa {kappas[i]:.2f} (< {UNRELIABLE_KAPPA}); it gets little weight"
                )
                log(f"warning: {note}", progress)
                self.notes.append(note)

    def loss(
        self, ctx: FitContext, idx: np.ndarray, feats: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        t = torch.from_numpy(ctx.batch_rows(self.targets, idx)).to(ctx.device)
        w = (
            None
            if self.clip_weights is None
            else torch.from_numpy(ctx.batch_rows(self.clip_weights, idx)).to(ctx.device)
        )
        ce = soft_cross_entropy(logits, t, sample_weights=w)
        prior = None if self.class_prior is None else torch.from_numpy(self.class_prior)
        div = diversity_loss(ctx.whole_batch(logits), prior)
        loss = ce + self.cfg.diversity_weight * div
        if self.penalty is not None:
            loss = loss + self.cfg.penalty_weight * cooccurrence_penalty_loss(logits, t, self.penalty)
        parts = {"ce": ce.item(), "diversity": div.item()}
        if self.cfg.anchor_weight > 0:
            if self._anchors is None:  # the source's weights, where the student started (also after a resume)
                self._anchors = [p.detach().to(ctx.device) for p in self.source_net.parameters()]
            anchor = anchor_loss(ctx.net.parameters(), self._anchors)
            loss, parts["anchor"] = loss + self.cfg.anchor_weight * anchor, anchor.item()
        if self.cfg.entropy_weight > 0:
            ent = entropy(logits)
            loss, parts["entropy"] = loss + self.cfg.entropy_weight * ent, ent.item()
        return loss, parts

    def after_step(self, ctx: FitContext) -> None:
        for i in self.moving:
            self.teachers[i].after_step(ctx.net)

    def end_epoch(self, ctx: FitContext, epoch: int, record: dict) -> None:
        if self.report is not None and self.fused is not None:
            c = len(self.labels)
            record["teacher_ua"] = {
                "fused": ua_of(self.report, self.targets, c),
                **{n: ua_of(self.report, self.fused.means[:, j], c) for j, n in enumerate(self.names)},
            }
        return None

    def describe_epoch(self, record: dict) -> str:
        fs = record["fusion"]["teachers"]
        rel = record.get("reliability") or {}
        return f" (ce {record['ce']:.4f}, div {record['diversity']:.4f})" + "".join(
            f" w[{n}] {fs[n]['mean_weight']:.2f}" + (f" (kappa {rel[n]['kappa']:.2f})" if n in rel else "")
            for n in self.names
        )

    # ---- summary and state
    def details(self) -> dict:
        return {
            "teachers": [
                {
                    "name": n,
                    "type": type(t).__name__,
                    **(t.describe() if t.moving else {"kind": "fixed", "k": self.cfg.k_lalm}),
                }
                for n, t in zip(self.names, self.teachers)
            ],
            "fusion": None if self.fused is None else fusion_stats(self.fused, self.names),
        }

    def state_dict(self) -> dict:
        return {
            "teachers": {self.names[i]: self.teachers[i].state_dict() for i in self.moving},
            "kappas": self.kappas,
            "class_prior": self.class_prior,
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        for i in self.moving:
            self.teachers[i].load_state_dict(state["teachers"][self.names[i]], device)
        self.kappas = state.get("kappas")
        self.class_prior = state.get("class_prior")


def mifuse_adapt(
    source: str | Path | EmotionNet,
    target_clips: Sequence[Clip] | str | Path,
    teachers: Sequence[Teacher | MovingTeacher],
    out: str | Path,
    cfg: MIFuseConfig | None = None,
    progress: bool = True,
    report_labels: bool = True,
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Adapt ``source`` (checkpoint path or network, never modified) to ``target_clips`` (clips, or a
    manifest / folder) with the fused labels of ``teachers`` and write the student to ``out``.

    MI-Fuse proper is ``teachers=[LALMTeacher(...), EMATeacher()]``; any :class:`Teacher` (fixed) and
    :class:`MovingTeacher` mix works, fused in the given order. ``report_labels``: report UA on target
    clips that carry labels (reporting only). ``resume``: continue from ``<out>.state`` when it belongs to
    the same settings, data and teachers' answers. ``on_epoch(record)`` as :func:`~edgeser.adapt.engine.fit`."""
    method = FusionMethod(source, target_clips, teachers, cfg or MIFuseConfig(), report_labels)
    return fit(method, out, progress=progress, resume=resume, on_epoch=on_epoch)


def sfuda_adapt(
    source: str | Path | EmotionNet,
    target_clips: Sequence[Clip] | str | Path,
    lalm: Teacher | None,
    out: str | Path,
    cfg: MIFuseConfig | None = None,
    **kwargs,
) -> FitResult:
    """LALM-SFUDA baseline: the MI-Fuse student trained on one fixed teacher's pseudo-labels alone (no
    classifier teacher, no EMA, same loss). The target is the mean of its samples (its vote distribution)
    by default -- the same term MI-Fuse fuses, so the comparison isolates what the classifier teacher and
    the weighting add; ``cfg.lalm_target="hard"`` trains on its argmax. Other arguments as
    :func:`mifuse_adapt`."""
    if lalm is None or not isinstance(lalm, Teacher):
        raise EdgeserError(
            "LALM-SFUDA needs a fixed (LALM) teacher: an LALMTeacher, a PredictionsTeacher or FixedSamples"
        )
    return mifuse_adapt(source, target_clips, [lalm], out, cfg, **kwargs)


def run_mifuse(
    source: str | Path | EmotionNet,
    target_clips: Sequence[Clip] | str | Path,
    out: str | Path,
    cfg: MIFuseConfig,
    teacher: Teacher | None = None,
    **kwargs,
) -> FitResult:
    """Registry entry of ``mifuse``: ``teacher`` (the LALM) plus the EMA classifier teacher with its defaults."""
    if teacher is None:
        raise EdgeserError("MI-Fuse needs an LALM teacher")
    return mifuse_adapt(source, target_clips, [teacher, EMATeacher()], out, cfg, **kwargs)


def run_sfuda(
    source: str | Path | EmotionNet,
    target_clips: Sequence[Clip] | str | Path,
    out: str | Path,
    cfg: MIFuseConfig,
    teacher: Teacher | None = None,
    **kwargs,
) -> FitResult:
    """Registry entry of ``sfuda``: ``teacher`` alone."""
    return sfuda_adapt(source, target_clips, teacher, out, cfg, **kwargs)
