"""The training losses on known values."""

import math

import pytest
import torch

from edgeser.adapt.losses import diversity_loss, soft_cross_entropy


def test_soft_cross_entropy_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per = [-math.log(0.5), -math.log(0.75)]
    assert soft_cross_entropy(logits, t).item() == pytest.approx(sum(per) / 2)
    # class weights scale the target mass; sample weights scale each clip's term and are not renormalised
    assert soft_cross_entropy(logits, t, class_weights=torch.tensor([2.0, 1.0])).item() == pytest.approx(
        (2 * per[0] + per[1]) / 2
    )
    assert soft_cross_entropy(logits, t, sample_weights=torch.tensor([1.0, 0.1])).item() == pytest.approx(
        (per[0] + 0.1 * per[1]) / 2
    )


def test_diversity_loss_is_minus_the_entropy_of_the_batch_mean():
    balanced = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    collapsed = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    assert diversity_loss(balanced).item() == pytest.approx(-math.log(2), abs=1e-6)
    assert diversity_loss(collapsed).item() == pytest.approx(0.9 * math.log(0.9) + 0.1 * math.log(0.1), abs=1e-6)
