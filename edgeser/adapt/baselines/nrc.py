"""NRC (Yang, Wang, van de Weijer, Herranz, Jui, NeurIPS 2021, "Exploiting the intrinsic neighborhood
structure for source-free domain adaptation"), reference code Albert0147/NRC_SFDA ``train_tar.py``
(the VisDA script), on :class:`~edgeser.adapt.model.EmotionNet`.

Two memory banks over all target clips: L2-normalised bottleneck features and softmax scores,
initialised by one pass over the target set and overwritten for the clips of the batch at every step.
For each clip of the batch: its ``K`` nearest neighbours in the feature bank by dot product (itself
excluded), and each neighbour's ``KK`` nearest (the neighbour itself excluded, the clip may be among
them). A neighbour weighs 1 when the clip is among its ``KK`` nearest (reciprocal), else 0.1; the
expanded neighbours weigh 0.1. With ``p_i`` the clip's prediction and ``s_j`` the banked scores,

    loss = -mean_i [ sum_{j in N_K(i)} w_ij <p_i, s_j> + sum_{m in E(i)} 0.1 <p_i, s_m> ] + sum_c pbar_c log pbar_c

(the reference writes the dot products as ``F.kl_div(p, s)``, which equals ``-<p, s>`` plus a constant
in the parameters: the same gradients).

Where this differs from the reference:

* **Network.** Our small log-mel CNN trained from scratch with a ``Linear + BN + ReLU`` bottleneck
  (``cfg.bottleneck`` wide) and a plain linear head, versus an ImageNet-pretrained ResNet-101 with a
  256-d ``Linear + BN`` bottleneck and a weight-normalised head. Our features are non-negative (ReLU), so
  all dot products between normalised features are >= 0.
* **Dropout** (encoder 0.1, pooled statistics and head 0.3) is on during the adaptation steps, so the
  bank entries written at each step come from a dropout-perturbed, augmented crop (the reference's come
  from augmented images through a network without dropout). The initial bank comes from whole clips in
  eval mode (the reference: augmented images in eval mode).
* **Source training** as for SHOT (label smoothing 0.05 instead of 0.1, class-balanced, AdamW).
* **Model selection.** The reference keeps the epoch with the best target accuracy (target labels);
  we keep the last epoch.
* Neighbours are excluded by index rather than by dropping the first of ``K + 1`` (identical except for
  exact ties between features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ManifestError
from ...manifest import Clip
from ..distributed import all_rows
from ..engine import FitContext, FitResult, fit
from ..model import EmotionNet
from .common import AdaptConfig, BaselineMethod


@dataclass
class NRCConfig(AdaptConfig):
    """NRC settings; defaults are the reference's VisDA script (``train_tar.py``) unless noted.

    ``K = KK = 5`` (VisDA) rather than the Office-Home setting (K=3, KK=2 in its run script, growing to
    5/4 halfway): VisDA is the closer case to ours -- few classes (12; we have 4) and many samples per
    class (our target sets hold ~50-500 clips per emotion), so a neighbourhood of 5 stays well inside a
    class, and its script also uses the ``(1+10p)^-0.75`` schedule and weight decay 1e-3 that our shared
    loop implements (the Office-Home script turns the schedule off and uses weight decay 5e-4).
    ``epochs = 15``: the VisDA script's default ``max_epoch``, kept rather than tuned, as for SHOT.
    As in the reference, the classifier head is trained too (lr x1); set ``head_lr_mult=None`` to freeze it."""

    lr: float = 1e-3
    backbone_lr_mult: float | None = 0.1
    bottleneck_lr_mult: float | None = 1.0
    head_lr_mult: float | None = 1.0
    #: nearest neighbours of each clip
    K: int = 5
    #: nearest neighbours of each neighbour (the expanded neighbourhood)
    KK: int = 5
    #: weight of a neighbour that does not have the clip among its KK nearest
    nonreciprocal_weight: float = 0.1
    #: weight of every expanded neighbour
    expanded_weight: float = 0.1
    #: inside the logarithm of the diversity term
    epsilon: float = 1e-5


def nrc_neighbours(
    fea_bank: torch.Tensor,
    idx: torch.Tensor,
    K: int,
    KK: int,
    nonreciprocal_weight: float = 0.1,
    expanded_weight: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbourhoods of the clips ``idx`` in ``fea_bank`` ``[N, D]`` (rows L2-normalised; similarity =
    dot product). Returns ``(near [B, K], weight [B, K], near_near [B, K, KK], weight_near_near [B, K, KK])``:
    the ``K`` nearest of each clip (itself excluded), and the ``KK`` nearest of each of those (that
    neighbour excluded); ``weight`` is 1 where the clip is among its neighbour's ``KK`` nearest
    (reciprocal) and ``nonreciprocal_weight`` elsewhere; every expanded neighbour weighs ``expanded_weight``."""
    n = fea_bank.shape[0]
    if not 1 <= K < n or not 1 <= KK < n:
        raise ValueError(f"need 1 <= K, KK < number of target clips ({n}), got K={K}, KK={KK}")
    b = idx.shape[0]
    sim = fea_bank[idx] @ fea_bank.T  # [B, N]
    sim[torch.arange(b, device=sim.device), idx] = float("-inf")
    near = torch.topk(sim, K, dim=1).indices  # [B, K]
    sim2 = fea_bank[near] @ fea_bank.T  # [B, K, N]
    sim2.scatter_(2, near.unsqueeze(2), float("-inf"))
    near_near = torch.topk(sim2, KK, dim=2).indices  # [B, K, KK]
    reciprocal = (near_near == idx.view(b, 1, 1)).any(dim=2)
    weight = torch.where(
        reciprocal, torch.ones((), device=sim.device), torch.full((), nonreciprocal_weight, device=sim.device)
    )
    weight_nn = torch.full(near_near.shape, expanded_weight, device=sim.device)
    return near, weight, near_near, weight_nn


def nrc_loss(
    probs: torch.Tensor,
    score_bank: torch.Tensor,
    near: torch.Tensor,
    weight: torch.Tensor,
    near_near: torch.Tensor,
    weight_nn: torch.Tensor,
    epsilon: float = 1e-5,
    batch_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """``-mean_i sum_j w_ij <p_i, s_j>`` over the neighbours and over the expanded neighbours, plus the
    diversity term ``sum_c pbar_c log pbar_c``; ``probs`` ``[B, C]`` with gradients, ``score_bank`` ``[N, C]``;
    ``batch_probs`` (default ``probs``): the rows ``pbar`` is the mean of (the whole batch, data-parallel)."""
    b = probs.shape[0]
    s_near = score_bank[near]  # [B, K, C]
    s_nn = score_bank[near_near].reshape(b, -1, score_bank.shape[1])  # [B, K*KK, C]
    l_near = -(torch.einsum("bc,bkc->bk", probs, s_near) * weight).sum(dim=1).mean()
    l_nn = -(torch.einsum("bc,bmc->bm", probs, s_nn) * weight_nn.reshape(b, -1)).sum(dim=1).mean()
    pbar = (probs if batch_probs is None else batch_probs).mean(dim=0)
    div = (pbar * torch.log(pbar + epsilon)).sum()
    return l_near + l_nn + div, {"neighbours": l_near.item(), "expanded": l_nn.item(), "diversity": div.item()}


class NRCMethod(BaselineMethod):
    """NRC: memory banks of features and scores, reciprocal-neighbour consistency plus diversity."""

    name = "nrc"

    def __init__(
        self,
        source: str | Path | EmotionNet,
        target_clips: Sequence[Clip] | str | Path,
        cfg: NRCConfig,
        report_labels: bool = True,
    ):
        super().__init__(source, target_clips, cfg, report_labels)
        self.cfg: NRCConfig = cfg
        self.fea_bank: torch.Tensor | None = None
        self.score_bank: torch.Tensor | None = None

    def prepare(self, progress: bool) -> None:
        super().prepare(progress)
        if len(self.clips) <= max(self.cfg.K, self.cfg.KK):
            raise ManifestError(
                f"NRC with K={self.cfg.K}, KK={self.cfg.KK} needs more than "
                f"{max(self.cfg.K, self.cfg.KK)} target clips, got {len(self.clips)}"
            )

    def start(self, ctx: FitContext) -> dict:
        feats, logits = ctx.eval_pass()
        self.fea_bank = F.normalize(torch.from_numpy(feats).float(), dim=1).to(ctx.device)
        self.score_bank = torch.softmax(torch.from_numpy(logits).float(), dim=1).to(ctx.device)
        return {}

    def loss(
        self, ctx: FitContext, idx: np.ndarray, feats: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.fea_bank is not None and self.score_bank is not None
        idx_t = torch.from_numpy(idx).to(ctx.device)
        probs = torch.softmax(logits, dim=1)
        with torch.no_grad():
            # data-parallel: every process's banks take the whole batch, so that they stay the same everywhere
            every = all_rows(idx_t, ctx.world)
            self.fea_bank[every] = all_rows(F.normalize(feats.detach(), dim=1), ctx.world)
            self.score_bank[every] = all_rows(probs.detach(), ctx.world)
            near, w, near_near, w_nn = nrc_neighbours(
                self.fea_bank, idx_t, self.cfg.K, self.cfg.KK, self.cfg.nonreciprocal_weight, self.cfg.expanded_weight
            )
        loss, parts = nrc_loss(
            probs, self.score_bank, near, w, near_near, w_nn, self.cfg.epsilon, batch_probs=ctx.whole_batch(probs)
        )
        parts["reciprocal"] = float((w == 1.0).float().mean().item())
        return loss, parts

    def state_dict(self) -> dict:
        return {"fea_bank": self.fea_bank.cpu(), "score_bank": self.score_bank.cpu()}  # type: ignore[union-attr]

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.fea_bank = state["fea_bank"].to(device)
        self.score_bank = state["score_bank"].to(device)


def nrc_adapt(
    source: str | Path | EmotionNet,
    target_clips: Sequence[Clip] | str | Path,
    out: str | Path,
    cfg: NRCConfig | None = None,
    progress: bool = True,
    resume: bool = True,
    report_labels: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Adapt ``source`` (checkpoint path or network, never modified) to the unlabelled ``target_clips``
    (clips, or a manifest/folder) with NRC and write an ordinary EmotionNet checkpoint to ``out``
    (``edgeser export`` turns it into ONNX); the training state, memory banks included, goes to
    ``<out>.state`` after each epoch and an interrupted run resumes from it. Target labels, if present,
    are only used to report UA."""
    return fit(
        NRCMethod(source, target_clips, cfg or NRCConfig(), report_labels),
        out,
        progress=progress,
        resume=resume,
        on_epoch=on_epoch,
    )


def run_nrc(
    source: str | Path | EmotionNet,
    target_clips: Sequence[Clip] | str | Path,
    out: str | Path,
    cfg: NRCConfig,
    teacher: object = None,
    **kwargs,
) -> FitResult:
    """Registry entry of ``nrc`` (no teacher)."""
    return nrc_adapt(source, target_clips, out, cfg, **kwargs)
