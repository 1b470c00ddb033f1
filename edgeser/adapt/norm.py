"""Batch norm whose training statistics come from real frames only, not from a batch's zero padding.

A training batch pads its clips to the longest (a single word of TurEV-DB is ~1 s; an EmoDB sentence 2-5 s).
The log-mel of padding is ``log(floor)`` (-13.8), far below speech, and a plain ``BatchNorm1d`` averages it into
the batch's mean and variance, and so into the running statistics that the exported model keeps: every frame
is then normalised by statistics that depend on how much padding its batch happened to have.
:class:`FrameBatchNorm` takes a ``[B, T]`` mask of the frames computed from real samples only and normalises
with their statistics. In eval mode, or without a mask, it is ``nn.BatchNorm1d`` (same parameters, buffers,
state-dict keys and exported graph).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FrameBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with an optional frame mask in training (see the module docstring).

    ``reduce`` (an attribute, absent by default) sums a tensor over data-parallel processes; while it is set,
    the statistics are those of every process's batch together (``edgeser.adapt.distributed.shared_batch_norm``
    sets it, also on plain batch norms, whose ``forward`` it replaces with this one)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = getattr(self, "reduce", None)
        if not self.training or (mask is None and reduce is None):
            return nn.BatchNorm1d.forward(self, x)
        return _batch_stats_norm(self, x, mask, reduce)


def _batch_stats_norm(
    bn: nn.modules.batchnorm._BatchNorm,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """Training-mode batch norm of ``x`` ``[B, C]`` or ``[B, C, T]`` with the statistics of the positions
    ``mask`` ``[B, T]`` marks (all when None), summed by ``reduce`` when given; updates the running statistics."""
    c = x.shape[1]
    dims = [0] if x.dim() == 2 else [0, *range(2, x.dim())]
    xf = x.float()
    if mask is None:
        w = None
        count = xf.new_tensor([xf.numel() / c])
    else:
        if x.dim() != 3 or mask.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"mask must be [B, T] for x {tuple(x.shape)}, got {tuple(mask.shape)}")
        w = mask[:, None, :].to(xf.dtype)
        count = w.sum().reshape(1)
    xw = xf if w is None else xf * w
    local = torch.cat([xw.sum(dims), (xw * xf).sum(dims), count])
    total = reduce(local) if reduce is not None else local
    n = total[-1].clamp_min(1.0)
    mean = total[:c] / n
    var = (total[c : 2 * c] / n - mean * mean).clamp_min(0.0)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
    shape = (1, c) + (1,) * (x.dim() - 2)
    y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)
