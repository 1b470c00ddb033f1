import numpy as np
import pytest
import torch

from edgeser.adapt.frontend import LogMel
from edgeser.adapt.model import EmotionNet, ModelConfig, count_parameters, mc_dropout

LABELS = ["angry", "happy", "neutral", "sad"]


def test_frontend_matches_numpy_stft():
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    lm = LogMel(n_mels=40)
    got = lm(torch.from_numpy(x)[None])[0].numpy()
    n, hop = 400, 160
    frames = np.stack([x[i : i + n] for i in range(0, len(x) - n + 1, hop)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    ref = np.log(lm.mel.numpy() @ power.T + 1e-6)
    assert got.shape == ref.shape == (40, 98)
    assert np.abs(got - ref).max() < 1e-3


def test_default_model_is_small():
    assert count_parameters(EmotionNet(ModelConfig(labels=LABELS))) < 1_000_000


@pytest.mark.parametrize("n", [7120, 7440, 16000, 32000, 40001])
def test_embedding_count_formula(n):
    cfg = ModelConfig(labels=LABELS)
    net = EmotionNet(cfg).eval()
    with torch.no_grad():
        assert net.embed(torch.zeros(1, n)).shape[2] == cfg.n_embeddings(n)


def test_streaming_split_is_exact():
    """Embeddings of a clip equal those of its two overlapping parts (valid convolutions)."""
    cfg = ModelConfig(labels=LABELS)
    net = EmotionNet(cfg).eval()
    x = torch.randn(1, 40000) * 0.1
    with torch.no_grad():
        whole = net.embed(x)
        k = 30
        first = net.embed(x[:, : cfg.receptive_field + (k - 1) * cfg.embedding_stride])
        rest = net.embed(x[:, k * cfg.embedding_stride :])
    assert first.shape[2] == k
    assert torch.allclose(torch.cat([first, rest], 2), whole, atol=1e-5)


def test_masked_pooling_ignores_padding():
    cfg = ModelConfig(labels=LABELS)
    net = EmotionNet(cfg).eval()
    short = torch.randn(1, 12000) * 0.1
    padded = torch.cat([short, torch.zeros(1, 8000)], 1)
    with torch.no_grad():
        a = net(short)
        b = net(padded, torch.tensor([12000]))
        c = net(padded)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-4)  # without the mask the padding would change the answer


def test_mc_dropout_samples_differ_and_bn_frozen():
    net = EmotionNet(ModelConfig(labels=LABELS))
    x = torch.randn(2, 16000) * 0.1
    bn = net.bottleneck_layer[1]
    before = bn.running_mean.clone()
    with torch.no_grad(), mc_dropout(net):
        a, b = net(x), net(x)
    assert not torch.allclose(a, b)
    assert torch.equal(bn.running_mean, before)
    assert net.training  # mode restored
