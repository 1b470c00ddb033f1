"""Weight averaging: what a run scores and writes is an exponential moving average of the weights it trains.

With a few hundred clips the last steps of a run move the weights by more than they improve them, so the
last epoch's network depends on the seed (issue 8: 10-20 UA points between seeds). The average over the
last ``horizon`` of the run's steps is a smoother, better-generalising network (Polyak averaging; SWA and
mean-teacher models are its cousins). Batch-norm statistics are averaged with the weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def decay_for(horizon: float, total_steps: int) -> float:
    """The per-step decay whose average spans ``horizon`` (a fraction of the run) of ``total_steps`` steps:
    ``1 - 1 / (horizon * total_steps)`` (0 when that is under one step: no averaging).

    >>> decay_for(0.25, 400)
    0.99
    >>> decay_for(0.0, 400)
    0.0
    """
    steps = horizon * total_steps
    return 0.0 if steps <= 1 else 1.0 - 1.0 / steps


class WeightAverage:
    """An exponential moving average of ``net``'s floating-point weights and buffers, started at its
    current weights; integer buffers (batch norm's step count) follow the network."""

    def __init__(self, net: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """After an optimizer step: ``avg = decay * avg + (1 - decay) * weights``."""
        for k, v in net.state_dict().items():
            s = self.shadow[k]
            if s.dtype.is_floating_point:
                s.lerp_(v.detach(), 1.0 - self.decay)
            else:
                s.copy_(v)

    @contextlib.contextmanager
    def applied(self, net: nn.Module) -> Iterator[nn.Module]:
        """``net`` holds the averaged weights inside the block and its own ones again after it."""
        own = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.shadow)
        try:
            yield net
        finally:
            net.load_state_dict(own)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
