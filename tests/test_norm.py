"""FrameBatchNorm: training statistics from real frames only (edgeser.adapt.norm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeser.adapt.model import EmotionNet, ModelConfig
from edgeser.adapt.norm import FrameBatchNorm

LABELS = ["angry", "happy", "neutral", "sad"]


def test_without_a_mask_it_is_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 11)
    ours, ref = FrameBatchNorm(5), nn.BatchNorm1d(5)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_masked_statistics_are_those_of_the_real_frames():
    torch.manual_seed(0)
    real = [torch.randn(4, 9) + 3.0, torch.randn(4, 5) - 1.0]  # two clips, [C, T] each
    x = torch.zeros(2, 4, 9) - 13.8  # padding as the log-mel of zeros
    x[0], x[1, :, :5] = real[0], real[1]
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    ours, ref = FrameBatchNorm(4), nn.BatchNorm1d(4)
    out = ours(x, mask)
    joined = ref(torch.cat(real, dim=1)[None])[0]  # the 14 real frames as one batch
    torch.testing.assert_close(out[0], joined[:, :9])
    torch.testing.assert_close(out[1, :, :5], joined[:, 9:])
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    # the same batch without the mask: the padding moves the statistics far
    assert (nn.BatchNorm1d(4)(x)[0] - out[0]).abs().max() > 0.5


def test_a_mask_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="mask must be"):
        FrameBatchNorm(4)(torch.zeros(2, 4, 9), torch.ones(2, 8, dtype=torch.bool))


def _net(masked: bool) -> EmotionNet:
    torch.manual_seed(0)
    cfg = ModelConfig(labels=LABELS, dropout=0.0, encoder_dropout=0.0, freq_mask=0, time_mask=0, masked_norm=masked)
    return EmotionNet(cfg).train()


@pytest.mark.parametrize("masked", [True, False])
def test_padding_changes_training_outputs_only_without_the_mask(masked):
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000).astype(np.float32) * 0.1, rng.standard_normal(12000).astype(np.float32) * 0.1]
    lengths = torch.tensor([16000, 12000])

    def logits(total: int) -> torch.Tensor:
        net = _net(masked)
        x = torch.zeros(2, total)
        for i, c in enumerate(clips):
            x[i, : len(c)] = torch.from_numpy(c)
        return net(x, lengths)

    short, long = logits(16000), logits(24000)  # the same clips, padded to 1.0 s and to 1.5 s
    if masked:
        torch.testing.assert_close(short, long, atol=1e-4, rtol=1e-4)
    else:
        assert (short - long).abs().max() > 1e-2


def test_eval_mode_and_the_export_path_ignore_lengths():
    net = _net(True).eval()
    x = torch.randn(2, 16000) * 0.1
    torch.testing.assert_close(net(x, torch.tensor([16000, 16000])), net(x))
    torch.testing.assert_close(net.embed(x, torch.tensor([16000, 9000])), net.embed(x))


def test_a_batch_shorter_than_the_receptive_field_still_trains():
    net = _net(True)
    n = net.cfg.receptive_field - 160
    out = net(torch.randn(2, n + 800) * 0.1, torch.tensor([n, n]))
    assert torch.isfinite(out).all()


def test_old_checkpoint_state_dicts_load():
    """FrameBatchNorm has BatchNorm1d's parameters and buffers: a 0.1 state dict loads as it is."""
    net = _net(True)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert {"input_norm.running_mean", "stem.1.running_var", "blocks.0.bn.num_batches_tracked"} <= set(state)
    EmotionNet(net.cfg).load_state_dict(state)


def test_a_config_without_the_field_keeps_the_old_statistics():
    """Checkpoints written before masked_norm existed were trained with the padding in their statistics:
    fine-tuning one keeps them; a new config and a stored new one use the masked statistics."""
    old = ModelConfig(labels=LABELS).to_dict()
    del old["masked_norm"]
    assert ModelConfig.from_dict(old).masked_norm is False
    assert ModelConfig(labels=LABELS).masked_norm is True
    assert ModelConfig.from_dict(ModelConfig(labels=LABELS).to_dict()).masked_norm is True
