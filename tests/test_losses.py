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


def test_diversity_loss_with_a_class_prior_is_the_kl_to_it():
    batch = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5]]))  # batch mean (0.7, 0.3)
    kl = 0.7 * math.log(0.7 / 0.8) + 0.3 * math.log(0.3 / 0.2)
    assert diversity_loss(batch, torch.tensor([0.8, 0.2])).item() == pytest.approx(kl, abs=1e-6)
    # a uniform prior: the negative entropy shifted by log C, so the same gradients as no prior
    assert diversity_loss(batch, torch.tensor([0.5, 0.5])).item() == pytest.approx(
        diversity_loss(batch).item() + math.log(2), abs=1e-6
    )
    # the batch that matches the prior costs nothing
    assert diversity_loss(torch.log(torch.tensor([[0.8, 0.2]])), torch.tensor([0.8, 0.2])).item() == pytest.approx(
        0.0, abs=1e-6
    )
