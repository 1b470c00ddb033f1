"""What the source-free baselines (SHOT, NRC) share on top of the engine's :class:`AdaptMethod`: the SGD
parameter groups (backbone lr x0.1) and the ``(1 + 10 p)^-0.75`` schedule of the reference code.

Mapping of the reference code's networks onto :class:`~edgeser.adapt.model.EmotionNet`:

* "feature extractor" ``netF`` = everything :meth:`EmotionNet.embed` uses (log-mel frontend, which has
  no parameters, input batch norm, stem, dilated blocks) -- the *backbone*;
* "bottleneck" ``netB`` = ``bottleneck_layer`` (Linear + BN + ReLU, applied after stats pooling);
* "classifier" ``netC`` = ``classifier`` (a plain Linear).

Protocol, the same for every method (the engine's, :func:`edgeser.adapt.engine.fit`): random augmented
crops in train mode; passes over *all* target clips (pseudo-labels, memory banks, reporting) on whole
clips in eval mode, like the reference's "test" loader; one-clip batches skipped; no model selection
(the model after the last epoch is the result; the NRC reference keeps the epoch with the best *target*
accuracy, i.e. selects on target labels -- we do not); target labels only reported."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ModelError
from ..data import softmax
from ..engine import AdaptMethod, FactorSchedule, FitConfig, as_clips, full_pass, load_source, target_labels
from ..model import EmotionNet

__all__ = [
    "AdaptConfig",
    "BaselineMethod",
    "param_groups",
    "schedule_factor",
    "backbone_parameters",
    "softmax",
    "load_source",
    "as_clips",
    "target_labels",
    "full_pass",
]


@dataclass
class AdaptConfig(FitConfig):
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


def backbone_parameters(net: EmotionNet) -> list[torch.nn.Parameter]:
    """Parameters of the frame encoder (what :meth:`EmotionNet.embed` uses)."""
    return [p for m in (net.frontend, net.input_norm, net.stem, net.blocks) for p in m.parameters()]


def param_groups(
    net: EmotionNet, lr: float, backbone: float | None, bottleneck: float | None, head: float | None
) -> list[dict]:
    """SGD parameter groups ``backbone | bottleneck | head`` with ``lr`` times each multiplier; a part
    whose multiplier is ``None`` is frozen (``requires_grad = False``) and left out."""
    parts = {
        "backbone": (backbone_parameters(net), backbone),
        "bottleneck": (list(net.bottleneck_layer.parameters()), bottleneck),
        "head": (list(net.classifier.parameters()), head),
    }
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


class BaselineMethod(AdaptMethod):
    """SGD (momentum, Nesterov) over the backbone / bottleneck / head groups with their multipliers, rate
    times ``(1 + gamma p)^-power`` where ``p`` is the fraction of steps done after this one."""

    cfg: AdaptConfig

    def param_groups(self, net: EmotionNet) -> list[dict]:
        c = self.cfg
        return param_groups(net, c.lr, c.backbone_lr_mult, c.bottleneck_lr_mult, c.head_lr_mult)

    def optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay)

    def schedule(self, opt: torch.optim.Optimizer, total: int) -> FactorSchedule:
        gamma, power = self.cfg.gamma, self.cfg.power
        return FactorSchedule(lambda step, n: schedule_factor(step + 1, n, gamma, power))
