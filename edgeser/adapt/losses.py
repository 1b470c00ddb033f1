"""Losses on soft targets (pure torch functions)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_n s_n (-sum_c w_c t_nc log p_nc)``; equals KL(t || p) up to the targets' entropy, so the
    gradients are those of KL. ``targets`` rows are distributions (one-hot for hard labels); ``s_n``
    (``sample_weights``, default 1) scales each clip's term without renormalising, so a clip of weight
    0.1 pulls a tenth as hard."""
    logp = torch.log_softmax(logits.float(), dim=1)
    t = targets.float() if class_weights is None else targets.float() * class_weights
    per_clip = -(t * logp).sum(dim=1)
    if sample_weights is not None:
        per_clip = per_clip * sample_weights.float()
    return per_clip.mean()


def cooccurrence_penalty_loss(logits: torch.Tensor, targets: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Expected penalty of the predicted mass: ``mean_n sum_ij t_ni P_ij p_nj``. With ``P`` small for
    emotions that co-occur in the raters' votes, confusing them costs less than confusing distant ones."""
    p = torch.softmax(logits.float(), dim=1)
    return torch.einsum("ni,ij,nj->n", targets.float(), penalty.float(), p).mean()


def diversity_loss(logits: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Negative entropy of the batch-mean prediction (``sum_c pbar_c log pbar_c``): minimising it keeps
    the student from collapsing onto one class, toward equal classes. With a class ``prior`` (a
    distribution over the classes) it is ``KL(pbar || prior) = sum_c pbar_c log(pbar_c / prior_c)``,
    which pulls the batch toward that prior instead (for a uniform prior: the negative entropy + log C)."""
    pbar = torch.softmax(logits.float(), dim=1).mean(dim=0)
    logp = torch.log(pbar + 1e-8)
    if prior is None:
        return (pbar * logp).sum()
    return (pbar * (logp - torch.log(prior.float().to(pbar.device)))).sum()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean per-sample prediction entropy (nats)."""
    p = torch.softmax(logits.float(), dim=1)
    return -(p * torch.log(p + 1e-8)).sum(dim=1).mean()


def anchor_loss(params: Iterable[torch.Tensor], anchors: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2-SP: the squared distance of the trained weights from the starting ones, ``Σ ||θ − θ₀||²``
    (Li et al. 2018), a pull toward the source network instead of toward zero.

    >>> anchor_loss([torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])], [torch.zeros(2), torch.ones(1, 1)])
    tensor(5.2500)
    """
    terms = [((p - a) ** 2).sum() for p, a in zip(params, anchors, strict=True)]
    return torch.stack(terms).sum()
