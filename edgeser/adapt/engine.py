"""The one training loop of edgeser: :func:`fit` runs a :class:`Method` (supervised training, MI-Fuse,
LALM-SFUDA, SHOT, NRC, ...) and owns everything the methods share.

:func:`fit` owns seeding, the device and bf16 autocast (CUDA only), the optimizer and its learning-rate
schedule (the method supplies the parameter groups, the optimizer kind and the schedule), random augmented
crops, progress, interruption, the checkpoint after each epoch, the resumable training state and the result
(:class:`FitResult`). A method supplies only what is its own: its data and network, its loss, per-step and
per-epoch hooks, its state and its summary. One loop, so that every method seeds, skips one-clip batches,
resumes and summarises the same way (see ``docs/ADAPTATION.md``)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EdgeserError, ManifestError, ModelError
from ..manifest import Clip, check_labels, read_manifest
from ..metrics import unweighted_accuracy
from .averaging import WeightAverage, decay_for
from .bundled import is_bundled, load_bundled
from .checkpoint import (
    load_model,
    load_state,
    read_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    save_state,
)
from .data import DEFAULT_MAX_CLIP_S, TargetAudio, batches, forward_all, load_target_audio, n_steps, pick_device
from .distributed import (
    Subset,
    World,
    backend,
    current,
    device_for,
    join,
    leave,
    map_rows,
    mean_over,
    shared_batch_norm,
    whole_batch,
)
from .from_onnx import calibrate_batchnorm
from .loader import Augmentation, Mix, TrainingBatches, iterate, plan_mix, plan_seeds, resolve_workers
from .model import EmotionNet
from .progress import Progress, log

#: keys of the source checkpoint's summary that a student carries over (data licences, model card): the
#: student is derived from the source model and inherits what applies to it ("" when the source has none)
CARRIED_SUMMARY_KEYS = ("data", "model_card")
#: bump when the meaning of a saved training state changes: older states are then ignored, not misread
STATE_VERSION = 3
#: target clips whose statistics the bundled source's folded batch norms get (enough for stable means)
BN_CALIBRATION_CLIPS = 200


@dataclass
class FitConfig:
    """Settings every method has (each method's config subclasses this and sets its own defaults)."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    #: each training step sees a random ``crop_s``-second crop of every clip of its batch
    crop_s: float = 3.0
    #: what each crop may go through (:class:`~edgeser.adapt.loader.Augmentation`; ``augment=False``: nothing):
    #: speed perturbation by up to ±``speed`` with probability ``speed_prob``, a synthetic room with
    #: ``reverb_prob``, an 8 kHz telephone channel with ``band_prob``, random gain (±``gain_db``) and, with
    #: probability ``noise_prob``, white noise
    augment: bool = True
    gain_db: float = 6.0
    noise_prob: float = 0.3
    speed: float = 0.0
    speed_prob: float = 0.0
    reverb_prob: float = 0.0
    band_prob: float = 0.0
    #: clips are cut to their first ``max_clip_s`` seconds (None: whole clips)
    max_clip_s: float | None = DEFAULT_MAX_CLIP_S
    #: decoded audio on "disk" (memory bounded whatever the number of clips) or in "memory" (a list)
    audio_store: str = "disk"
    #: the checkpoint and every score are of the weights' moving average over the last ``average`` of the run's
    #: steps (a fraction; 0: the last weights) -- :mod:`edgeser.adapt.averaging`
    average: float = 0.0
    #: clips per batch of the passes over all clips in eval mode (reporting, pseudo-labels)
    eval_batch_size: int = 32
    seed: int = 0
    #: cpu, cuda, cuda:1 ... (None: CUDA when available)
    device: str | None = None
    #: processes that read, crop and pad the batches while the model trains (None: 2 on a GPU, 0 on CPU);
    #: results do not depend on it (:mod:`edgeser.adapt.loader`)
    workers: int | None = None


@dataclass
class FitResult:
    """What :func:`fit` returns: the checkpoint written (``model``), the training state (``state``), the
    per-epoch ``history`` of the whole run and the ``summary`` stored in the checkpoint."""

    model: Path
    state: Path
    method: str
    history: list[dict]
    summary: dict

    @property
    def epochs(self) -> int:
        """Epochs done."""
        return len(self.history)

    @property
    def best_val_ua(self) -> float | None:
        """Validation UA of the checkpointed epoch (supervised training with validation clips), else None."""
        return self.summary.get("best_val_ua")

    @property
    def final_target_ua(self) -> float | None:
        """UA on the labelled target clips after the last epoch (reported only), else None."""
        return self.summary.get("final_target_ua")

    @property
    def message(self) -> str:
        """A short human description of the run (one or two lines)."""
        ua = self.final_target_ua
        lines = [
            f"wrote {self.model} ({self.method}, {self.summary.get('train_clips')} clips, {self.epochs} epochs)"
            + (f"; validation UA {self.best_val_ua:.4f}" if self.best_val_ua is not None else "")
            + (f"; UA on the labelled target clips (reporting only): {ua:.4f}" if ua is not None else "")
        ]
        lines += [f"warning: {n}" for n in self.summary.get("notes", [])]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ schedules


class Schedule:
    """A learning-rate schedule: ``before_step`` sets the rates of the step about to run (``step`` = steps
    done so far, ``total`` = steps of the whole run), ``after_step`` follows it."""

    def before_step(self, opt: torch.optim.Optimizer, step: int, total: int) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FactorSchedule(Schedule):
    """``lr = lr0 * factor(step, total)`` for every parameter group (``lr0`` is the group's base rate)."""

    def __init__(self, factor: Callable[[int, int], float]):
        self.factor = factor

    def before_step(self, opt: torch.optim.Optimizer, step: int, total: int) -> None:
        f = self.factor(step, total)
        for g in opt.param_groups:
            g["lr"] = float(g["lr0"] * f)


class TorchSchedule(Schedule):
    """A torch scheduler (e.g. ``OneCycleLR``) built by ``make(optimizer, total_steps)``, stepped after each step."""

    def __init__(self, make: Callable[[torch.optim.Optimizer, int], Any], opt: torch.optim.Optimizer, total: int):
        self.sched = make(opt, total)

    def after_step(self) -> None:
        self.sched.step()

    def state_dict(self) -> dict:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sched.load_state_dict(state)


def cosine_factor(step: int, total: int) -> float:
    """``0.5 (1 + cos(pi step / total))``: cosine decay from 1 to 0 over the run."""
    return 0.5 * (1.0 + np.cos(np.pi * min(step, total) / total))


# ------------------------------------------------------------------------------------------ the method


@dataclass
class FitContext:
    """What a method's hooks see of the running fit."""

    net: EmotionNet
    device: torch.device
    cfg: FitConfig
    wavs: Sequence[np.ndarray]
    steps_per_epoch: int
    total_steps: int
    progress: bool = True
    step: int = 0
    #: the data-parallel processes this one belongs to (one process: ``World()``)
    world: World = field(default_factory=World)
    #: worker processes of the data pipeline (resolved: never None)
    workers: int = 0
    #: the current batch's mixup (:class:`~edgeser.adapt.loader.Mix`), None when it is not mixed
    mix: Mix | None = None
    _pass: tuple[int, tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    def batch_rows(self, table: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``table[idx]`` (per-clip targets, weights) for the current batch, mixed as its audio was."""
        return table[idx] if self.mix is None else self.mix.rows(table, idx)

    def eval_pass(self) -> tuple[np.ndarray, np.ndarray]:
        """Whole clips in eval mode -> ``(bottleneck features [N, H], logits [N, C])`` of the current weights
        (computed once per weight state)."""
        if self._pass is None or self._pass[0] != self.step:
            self._pass = (
                self.step,
                full_pass(self.net, self.wavs, self.device, self.cfg.eval_batch_size, self.world, self.workers),
            )
        return self._pass[1]

    def whole_batch(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (rows of this process's share of the batch) with the other processes' rows, keeping gradients:
        batch-level loss terms (diversity, information maximisation) use it, so that a data-parallel run
        optimises the one-process loss. ``t`` itself in one process."""
        return whole_batch(t, self.world)


class Method:
    """One training method plugged into :func:`fit`. Subclasses set ``name`` and ``cfg``, load their data in
    :meth:`prepare` (``wavs``, the audio the loop crops from) and implement :meth:`build` and :meth:`loss`;
    the other hooks have working defaults (AdamW on all parameters, constant rate, every clip every epoch)."""

    name = "method"
    cfg: FitConfig
    #: the loss reads its per-clip targets through :meth:`FitContext.batch_rows`, so its batches can be mixed
    #: (mixup: a ``mixup`` field of its config, :func:`edgeser.adapt.loader.plan_mix`)
    mixes: bool = False
    wavs: list[np.ndarray]
    #: ``(indices of labelled clips, their classes)`` for *reporting* target UA, or None
    report: tuple[np.ndarray, np.ndarray] | None = None
    #: the source checkpoint's description (None: trained from scratch) and its summary
    source: str | None = None
    source_summary: dict = {}
    #: notes for the user and the summary (e.g. a teacher that contributes nothing); files skipped as unreadable
    notes: list[str]
    skipped: Sequence[str] = ()

    def prepare(self, progress: bool) -> None:
        """Load data, the source model and the fixed teachers' answers. Runs before seeding, so that what
        happens here (e.g. building a network to load a checkpoint into) does not shift training's random draws."""

    def build(self, device: torch.device) -> EmotionNet:
        """The network to train, on ``device`` (called right after seeding)."""
        raise NotImplementedError

    def data_description(self) -> str:
        return f"{len(self.wavs)} clips"

    def train_size(self) -> int:
        """How many clips an epoch trains on (sets the steps per epoch)."""
        return len(self.wavs)

    def val_size(self) -> int:
        return 0

    def param_groups(self, net: EmotionNet) -> list[dict]:
        """Optimizer parameter groups, each with its base rate ``lr0``."""
        return [{"params": list(net.parameters()), "lr0": self.cfg.lr}]

    def optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def schedule(self, opt: torch.optim.Optimizer, total: int) -> Schedule:
        return Schedule()

    def identity(self, h: hashlib._Hash) -> None:
        """Feed what makes this run this run into the resume identity: the data (clip paths in order, never
        labels that are only reported) and the teachers' answers."""

    def start(self, ctx: FitContext) -> dict:
        """At the start of a fresh (not resumed) run; returns values to report as ``initial``."""
        return {}

    def begin_epoch(self, ctx: FitContext, epoch: int) -> tuple[np.ndarray, dict]:
        """Before each epoch: ``(indices of the clips to train on, values for the epoch's record)``."""
        return np.arange(len(self.wavs)), {}

    def loss(
        self, ctx: FitContext, idx: np.ndarray, feats: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch: ``idx`` the clips' indices in ``wavs``, ``feats`` ``[B, H]`` the bottleneck
        features and ``logits`` ``[B, C]`` (float32, with gradients); and named parts to average per epoch.
        In a data-parallel run these are this process's share of the batch: terms over the whole batch take
        :meth:`FitContext.whole_batch` of them."""
        raise NotImplementedError

    def after_step(self, ctx: FitContext) -> None:
        """After each optimizer step (e.g. the EMA teacher's update)."""

    def end_epoch(self, ctx: FitContext, epoch: int, record: dict) -> float | None:
        """After each epoch; may add to ``record``. Returns a score to keep the best epoch's checkpoint by
        (higher is better), or None to keep the last epoch's."""
        return None

    def describe_epoch(self, record: dict) -> str:
        """Extra text for the epoch's log line."""
        return ""

    def details(self) -> dict:
        """Method-specific part of the summary (``summary["details"]``)."""
        return {}

    def state_dict(self) -> dict:
        """What the method must resume (tensors, arrays, numbers, strings, lists, dicts, None)."""
        return {}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        pass


# ------------------------------------------------------------------------------------------ pieces


@torch.no_grad()
def full_pass(
    net: EmotionNet,
    wavs: Sequence[np.ndarray],
    device: torch.device,
    batch_size: int = 32,
    world: World | None = None,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Whole clips in eval mode -> ``(bottleneck features [N, H], logits [N, C])``, float32. In a
    data-parallel ``world`` each process encodes its share of the clips and all get all rows."""
    was = net.training
    net.eval()
    try:
        feats = map_rows(
            lambda ix: forward_all(net, Subset(wavs, ix), device, batch_size, what="features", workers=workers),
            len(wavs),
            world or World(),
        )
        logits = net.head(torch.from_numpy(feats).to(device)).float().cpu().numpy()
    finally:
        net.train(was)
    return feats.astype(np.float32), logits.astype(np.float32)


def ua_of(report: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray, n_classes: int) -> float | None:
    """UA of the argmax of ``rows`` (``[N, C]``) on the labelled clips of ``report``, over the clips whose row
    is finite; None without labels."""
    if report is None:
        return None
    idx, y = report
    rows = rows[idx]
    ok = np.all(np.isfinite(rows), axis=1)
    if not ok.any():
        return None
    return float(unweighted_accuracy(y[ok], np.nan_to_num(rows[ok]).argmax(axis=1), n_classes))


def state_path_for(out: str | Path) -> Path:
    """Where the training state of the checkpoint ``out`` lives: ``<out>.state``."""
    out = Path(out)
    return out.with_name(out.name + ".state")


def _hash_net(h: hashlib._Hash, net: EmotionNet) -> None:
    h.update(json.dumps(net.cfg.to_dict(), sort_keys=True, default=str).encode())
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())


def hash_array(h: hashlib._Hash, a: np.ndarray | None) -> None:
    """Feed an array (shape and float64 values, NaN as one fixed value) into ``h``."""
    if a is None:
        h.update(b"none")
        return
    a = np.ascontiguousarray(np.nan_to_num(np.asarray(a, np.float64), nan=-1.0, posinf=-2.0, neginf=-3.0))
    h.update(repr(a.shape).encode() + a.tobytes())


def hash_clips(h: hashlib._Hash, clips: Sequence[Clip]) -> None:
    """Feed the clips' paths in order (never their labels) into ``h``."""
    for c in clips:
        h.update(str(c.path).encode() + b"\0")
    h.update(b"\1")


def _identity(method: Method, cfg: FitConfig, net: EmotionNet) -> str:
    """The resume identity: sha256 over the method, its config (the device aside), the starting weights,
    the data and the teachers' answers. A saved state is resumed only when it has the same identity."""
    h = hashlib.sha256(f"edgeser-fit-{STATE_VERSION}:{method.name}:".encode())
    conf = {k: v for k, v in asdict(cfg).items() if k not in ("device", "workers")}  # neither changes results
    h.update(json.dumps(conf, sort_keys=True, default=str).encode())
    _hash_net(h, net)
    method.identity(h)
    return h.hexdigest()


def _save_state(
    path: Path,
    ctx: FitContext,
    opt: torch.optim.Optimizer,
    sched: Schedule,
    rng: np.random.Generator,
    method: Method,
    epoch: int,
    best: float | None,
    best_epoch: int | None,
    history: list[dict],
    initial: dict,
    summary: dict,
    identity: str,
    average: WeightAverage | None,
) -> None:
    """The one place that writes training state."""
    save_state(
        path,
        {
            **({"average": average.state_dict()} if average is not None else {}),
            "version": STATE_VERSION,
            "identity": identity,
            "model": ctx.net.state_dict(),
            "optimizer": opt.state_dict(),
            "schedule": sched.state_dict(),
            "rng": rng_state(rng),
            "method": method.state_dict(),
            "epoch": epoch,
            "step": ctx.step,
            "best": best,
            "best_epoch": best_epoch,
            "history": history,
            "initial": initial,
            "summary": summary,
        },
    )


def _summary(
    method: Method,
    ctx: FitContext,
    history: list[dict],
    initial: dict,
    best_epoch: int | None,
    best_val_ua: float | None,
    identity: str,
) -> dict:
    """The summary every checkpoint carries, with the same keys whatever the method."""
    last = history[-1] if history else {}
    src = method.source_summary or {}
    return {
        "method": method.name,
        "labels": ctx.net.labels,
        "source": method.source,
        "target": method.data_description(),
        "train_clips": len(method.wavs),
        "val_clips": method.val_size(),
        "skipped_clips": list(method.skipped),
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_val_ua": best_val_ua,
        "final_target_ua": last.get("target_ua"),
        "initial": initial,
        "history": history,
        "config": asdict(method.cfg),
        "device": ctx.device.type,
        "processes": ctx.world.size,
        "notes": list(method.notes),
        "details": method.details(),
        "identity": identity,
        **{k: src.get(k, "") for k in CARRIED_SUMMARY_KEYS},
    }


# ------------------------------------------------------------------------------------------ the loop


def augmentation_of(cfg: FitConfig, sample_rate: int) -> Augmentation | None:
    """The crops' augmentation that ``cfg`` asks for (None: ``augment`` is off)."""
    if not cfg.augment:
        return None
    return Augmentation(
        gain_db=cfg.gain_db,
        noise_prob=cfg.noise_prob,
        speed=cfg.speed,
        speed_prob=cfg.speed_prob,
        reverb_prob=cfg.reverb_prob,
        band_prob=cfg.band_prob,
        sample_rate=sample_rate,
    )


def fit(
    method: Method,
    out: str | Path,
    progress: bool = True,
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Run ``method`` for ``method.cfg.epochs`` epochs and write its checkpoint to ``out``.

    After every epoch the checkpoint (the best epoch's when the method scores epochs, else the last) and the
    full training state (``<out>.state``) are written; with ``resume`` a state of the same identity (data,
    teachers' answers, config, starting weights) is continued, so an interrupted run resumes where it
    stopped. ``on_epoch(record)`` is called after each epoch once both are written (raising there stops
    the run resumably).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), the run is data-parallel (:mod:`edgeser.adapt.distributed`):
    each process trains on its share of every batch under DistributedDataParallel, rank 0 writes the files
    and prints, and the state resumes on any number of processes."""
    world = current()
    device = pick_device(device_for(world, method.cfg.device))
    opened = join(world, device)
    try:
        result = _fit(method, out, progress and world.is_main, resume, on_epoch, world, device)
    except BaseException:
        if opened:  # the other processes are stopped by torchrun; no goodbye barrier that could hang
            import torch.distributed as dist

            dist.destroy_process_group()
        raise
    leave(opened)
    return result


@contextlib.contextmanager
def _scored(average: WeightAverage | None, ctx: FitContext) -> Iterator[None]:
    """The network as the run delivers it inside the block: its averaged weights when it averages (the
    whole-clip pass cached for the training weights is dropped on the way in and out)."""
    if average is None:
        yield
        return
    ctx._pass = None
    try:
        with average.applied(ctx.net):
            yield
    finally:
        ctx._pass = None


class _Forward(torch.nn.Module):
    """``(features, logits)`` of a batch in one ``forward``: what DistributedDataParallel wraps (it syncs
    the gradients of what runs inside ``forward``)."""

    def __init__(self, net: EmotionNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.features(x, lengths)
        return feats, self.net.head(feats)


def _fit(
    method: Method,
    out: str | Path,
    progress: bool,
    resume: bool,
    on_epoch: Callable[[dict], None] | None,
    world: World,
    device: torch.device,
) -> FitResult:
    cfg = method.cfg
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise EdgeserError(
            f"need epochs >= 1 and batch size >= 2 (batch norm cannot train on one clip), "
            f"got {cfg.epochs} and {cfg.batch_size}"
        )
    out = Path(out)
    state_path = state_path_for(out)
    if not hasattr(method, "notes"):
        method.notes = []
    method.prepare(progress)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = method.build(device)
    n = method.train_size()
    steps = n_steps(n, cfg.batch_size)
    if steps == 0:
        raise ManifestError(f"{method.name}: need at least 2 clips to train on, got {n}")
    total = cfg.epochs * steps
    groups = method.param_groups(net)
    opt = method.optimizer(groups)
    sched = method.schedule(opt, total)
    identity = _identity(method, cfg, net)
    decay = decay_for(cfg.average, total)
    average = WeightAverage(net, decay) if decay > 0 else None
    workers = resolve_workers(cfg.workers, device)
    ctx = FitContext(net, device, cfg, method.wavs, steps, total, progress, world=world, workers=workers)
    n_classes = len(net.labels)

    start, best, best_epoch, history, initial, saved = 0, None, None, [], {}, {}
    state = load_state(state_path) if resume else None
    if state is not None and state.get("version") == STATE_VERSION and state.get("identity") == identity:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        restore_rng_state(rng, state["rng"])
        method.load_state_dict(state["method"], device)
        if average is not None:
            average.load_state_dict(state["average"])
        start, ctx.step, best, best_epoch = state["epoch"], state["step"], state["best"], state["best_epoch"]
        history, initial, saved = state["history"], state["initial"], state["summary"]
        log(f"resuming from {state_path} after epoch {start}/{cfg.epochs}", progress)
    else:
        if state is not None:
            log(f"ignoring {state_path}: it belongs to other settings, data, teachers or source model", progress)
        initial = dict(method.start(ctx))
        if method.report is not None:
            initial = {"target_ua": ua_of(method.report, ctx.eval_pass()[1], n_classes), **initial}
    if start >= cfg.epochs:
        log(f"{out} is already trained for {cfg.epochs} epochs ({state_path})", progress)
        return FitResult(out, state_path, method.name, history, saved)

    forward: torch.nn.Module = _Forward(net)
    if world.parallel:
        from torch.nn.parallel import DistributedDataParallel

        # built after a resumed state is loaded: it starts every process from rank 0's weights
        forward = DistributedDataParallel(
            forward,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # batch norms share their statistics in every step (shared_batch_norm)
        )
        # every process draws the same batches and crops (numpy), but its own dropout masks (torch)
        torch.manual_seed(cfg.seed * 1_000_003 + world.rank * 7_919 + start)
        log(
            f"data-parallel over {world.size} processes ({backend()}, {device.type}): each trains on its "
            f"share of every batch of {cfg.batch_size}",
            progress,
        )
    trainable = sum(p.numel() for g in opt.param_groups for p in g["params"])
    log(
        f"{method.name}: training {trainable:,} of {sum(p.numel() for p in net.parameters()):,} parameters on "
        f"{device} for {cfg.epochs} epochs ({n} clips, {steps} steps per epoch)"
        + (
            f"; target UA before {initial['target_ua']:.4f} (reported only)"
            if initial.get("target_ua") is not None
            else ""
        ),
        progress,
    )
    crop = int(cfg.crop_s * net.cfg.sample_rate)
    aug = augmentation_of(cfg, net.cfg.sample_rate)
    mixup = float(getattr(cfg, "mixup", 0.0))  # only the configs of methods that mix have it
    if mixup < 0 or (mixup > 0 and not method.mixes):
        raise ValueError(f"mixup must be >= 0 and the method ({method.name}) must mix its targets, got {mixup}")
    amp = device.type == "cuda"
    epoch = start
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.monotonic()
            pool, info = method.begin_epoch(ctx, epoch)
            record: dict = {"epoch": epoch + 1, **info}
            net.train()
            sums: dict[str, float] = {}
            done = 0
            with (
                Progress(steps, f"{method.name} epoch {epoch + 1}/{cfg.epochs}", progress) as bar,
                shared_batch_norm(net, world),
            ):
                plan = []
                for pos in batches(len(pool), cfg.batch_size, rng):
                    if len(pos) < 2 * world.size:  # batch norm cannot train on one clip (per process)
                        continue
                    # every process draws the whole batch's seeds (the same everywhere), then keeps its share
                    idx, seeds = pool[pos], plan_seeds(rng, len(pos))
                    mix = plan_mix(rng, idx, seeds, mixup) if mixup > 0 else None
                    if world.parallel:
                        mine = world.shard(np.arange(len(idx)))
                        idx, seeds, mix = idx[mine], seeds[mine], None if mix is None else mix.shard(mine)
                    plan.append((idx, seeds, mix))
                data = TrainingBatches(ctx.wavs, plan, crop, net.cfg.receptive_field, aug)
                for (idx, _, ctx.mix), (x, lengths) in zip(plan, iterate(data, workers)):
                    sched.before_step(opt, ctx.step, total)
                    x, lengths = x.to(device, non_blocking=True), lengths.to(device, non_blocking=True)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        feats, logits = forward(x, lengths)
                    loss, parts = method.loss(ctx, idx, feats.float(), logits.float())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.after_step()
                    if average is not None:
                        average.update(net)
                    ctx.step += 1
                    method.after_step(ctx)
                    done += 1
                    value = loss.item()
                    for k, v in {"loss": value, **parts}.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    bar.update(1, loss=value)
                ctx.mix = None
            keys = sorted(sums)  # the same parts in every process: average them over the processes
            record.update(zip(keys, mean_over([sums[k] / max(done, 1) for k in keys], world)))
            record["lr"] = max(float(g["lr"]) for g in opt.param_groups)
            with _scored(average, ctx):  # what is scored and written is what the run delivers
                score = method.end_epoch(ctx, epoch, record)
                if method.report is not None:
                    record["target_ua"] = ua_of(method.report, ctx.eval_pass()[1], n_classes)
                record["seconds"] = round(time.monotonic() - t0, 1)
                history.append(record)
                if score is None or best is None or score > best:
                    best, best_epoch = score, epoch + 1
                    saved = _summary(method, ctx, history, initial, best_epoch, record.get("val_ua"), identity)
                    if world.is_main:
                        save_checkpoint(out, net, **saved)
            if world.is_main:
                _save_state(
                    state_path, ctx, opt, sched, rng, method, epoch + 1, best, best_epoch, history, initial, saved,
                    identity, average,
                )  # fmt: skip
            log(
                f"{method.name} epoch {epoch + 1}: loss {record['loss']:.4f}"
                + method.describe_epoch(record)
                + (
                    f" target UA {record['target_ua']:.4f} (reported only)"
                    if record.get("target_ua") is not None
                    else ""
                )
                + f" [{record['seconds']}s]",
                progress,
            )
            if on_epoch is not None:
                on_epoch(record)
    except KeyboardInterrupt:
        log(
            f"\ninterrupted in epoch {epoch + 1}: {len(history)} epochs are saved in {state_path}; "
            "run the same command again to resume",
            progress,
        )
        raise
    return FitResult(out, state_path, method.name, history, saved)


# ------------------------------------------------------------------------------------------ adaptation


def load_source(source: str | Path | EmotionNet | None) -> tuple[EmotionNet, str, dict]:
    """``(a private copy of the source network, a description, the source checkpoint's summary)``. An
    :class:`EmotionNet` passed in is deep-copied, never modified; ``None`` or ``"default"`` is the bundled
    model (:mod:`edgeser.adapt.bundled`)."""
    if is_bundled(source):
        return load_bundled()
    if isinstance(source, EmotionNet):
        return copy.deepcopy(source).cpu(), "EmotionNet (in memory)", {}
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


def target_labels(
    clips: Sequence[Clip], labels: list[str], progress: bool = True
) -> tuple[np.ndarray, np.ndarray] | None:
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


class AdaptMethod(Method):
    """A source-free adaptation method: starts from a source checkpoint (or network, never modified) and
    trains on unlabelled target clips (a list, or a manifest / folder). Unreadable target files are skipped
    and reported; clips are cut to ``cfg.max_clip_s``; target labels, when present and ``report_labels``,
    are used only to report UA -- they never reach a loss, a pseudo-label or a random draw."""

    def __init__(
        self,
        source: str | Path | EmotionNet,
        target_clips: Sequence[Clip] | str | Path,
        cfg: FitConfig,
        report_labels: bool = True,
    ):
        self.cfg = cfg
        self._source_arg, self._target_arg = source, target_clips
        self.report_labels = report_labels
        self.notes = []
        self.skipped: list[str] = []

    def prepare(self, progress: bool) -> None:
        self.source_net, self.source, self.source_summary = load_source(self._source_arg)
        self.labels = self.source_net.labels
        self.audio: TargetAudio = load_target_audio(
            as_clips(self._target_arg),
            self.source_net.cfg.sample_rate,
            self.cfg.max_clip_s,
            "target clips",
            progress,
            store=self.cfg.audio_store,
        )
        self.clips, self.wavs = self.audio.clips, self.audio.wavs or []
        if is_bundled(self._source_arg) and self.wavs:
            # its batch norms were folded at export: give them the target's statistics (eval output unchanged)
            calibrate_batchnorm(self.source_net, self.wavs[:BN_CALIBRATION_CLIPS])
        self.skipped = [str(c.path) for c, _ in self.audio.skipped]
        if self.audio.skipped:
            self.notes.append(self.audio.skipped_report(limit=20))
        self.report = target_labels(self.clips, self.labels, progress) if self.report_labels else None

    def build(self, device: torch.device) -> EmotionNet:
        return copy.deepcopy(self.source_net).to(device)

    def data_description(self) -> str:
        return f"{len(self.clips)} target clips (labels, if any, for reporting only)"

    def identity(self, h: hashlib._Hash) -> None:
        hash_clips(h, self.clips)
