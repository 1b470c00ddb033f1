"""The data pipeline (issue 11, item 1): batches made by DataLoader worker processes are the batches made in
the trainer, bit for bit, so a run's result does not depend on the number of workers."""

import pickle

import numpy as np
import pytest
import torch

from edgeser.adapt.audio_store import AudioStore
from edgeser.adapt.checkpoint import load_model
from edgeser.adapt.data import forward_all, load_clips
from edgeser.adapt.loader import (
    Augmentation,
    Mix,
    PaddedBatches,
    TrainingBatches,
    crop_clip,
    iterate,
    plan_mix,
    plan_seeds,
)
from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, mifuse_adapt
from edgeser.adapt.model import EmotionNet, ModelConfig
from edgeser.adapt.teachers import FixedSamples
from edgeser.demo import demo_manifest
from edgeser.manifest import read_manifest
from edgeser.testing.models import TINY, untrained_checkpoint

LABELS = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def clips():
    return read_manifest(demo_manifest())


def test_crop_clip_draws_from_its_seed_alone():
    wav = np.arange(100, dtype=np.float32)
    a = crop_clip(wav, 10, seed=7, aug=None)
    assert len(a) == 10 and np.array_equal(a, np.arange(a[0], a[0] + 10, dtype=np.float32))  # a contiguous stretch
    assert np.array_equal(a, crop_clip(wav, 10, seed=7, aug=None))
    starts = {int(crop_clip(wav, 10, seed=s, aug=None)[0]) for s in range(50)}
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 90
    assert np.array_equal(crop_clip(wav[:5], 10, seed=1, aug=None), wav[:5])  # shorter clips stay whole
    quiet = crop_clip(np.ones(100, np.float32), 100, seed=3, aug=Augmentation(gain_db=6.0, noise_prob=0.0))
    gain_db = 20 * np.log10(float(quiet[0]))
    assert np.allclose(quiet, quiet[0]) and -6.0 <= gain_db <= 6.0  # a gain within ±6 dB, no noise
    noisy = crop_clip(np.ones(100, np.float32), 100, seed=3, aug=Augmentation(gain_db=0.0, noise_prob=1.0))
    assert noisy.std() > 0
    seeds = plan_seeds(np.random.default_rng(0), 4)
    assert seeds.dtype == np.int64 and len(set(seeds.tolist())) == 4 and (seeds >= 0).all()


def test_workers_make_the_same_batches(clips):
    store = load_clips(clips, 16000, progress=False, store="disk")
    rng = np.random.default_rng(0)
    plan = [(np.array([0, 3, 5]), plan_seeds(rng, 3), None), (np.array([7, 1]), plan_seeds(rng, 2), None)]
    data = TrainingBatches(store, plan, 8000, 400, Augmentation())
    here = list(iterate(data, workers=0))
    there = list(iterate(data, workers=2))
    assert len(here) == len(there) == 2
    for (xa, la), (xb, lb) in zip(here, there):
        assert torch.equal(xa, xb) and torch.equal(la, lb)
    assert here[0][0].shape == (3, 8000) and here[1][1].tolist() == [8000, 8000]
    padded = PaddedBatches(store, [np.array([2, 4])], min_len=400, max_len=4000)
    (x, lengths), = iterate(padded, workers=1)  # fmt: skip
    assert x.shape == (2, 4000) and torch.equal(x[0], torch.from_numpy(np.asarray(store[2][:4000])))


def test_audio_store_pickles_as_a_reader(clips):
    store = AudioStore.of([np.arange(5, dtype=np.float32), np.ones(3, np.float32)])
    reader = pickle.loads(pickle.dumps(store))
    assert reader.lengths.tolist() == [5, 3] and np.array_equal(reader[0], store[0])
    del reader
    assert store.path.exists()  # the reader never removes the owner's file
    store.close()
    assert not store.path.exists()


def test_whole_clip_pass_with_workers(clips):
    torch.manual_seed(0)
    net = EmotionNet(ModelConfig(labels=LABELS, **TINY)).eval()
    wavs = load_clips(clips, 16000, progress=False, store="disk")
    a = forward_all(net, wavs, torch.device("cpu"), batch_size=3)
    b = forward_all(net, wavs, torch.device("cpu"), batch_size=3, workers=2)
    assert np.array_equal(a, b) and a.shape == (len(clips), len(LABELS))


def test_mixup_mixes_the_audio_and_the_targets_alike(clips):
    m = Mix(partner=np.array([1, 0]), partner_seed=np.array([5, 6]), lam=np.array([0.75, 0.5]))
    table = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)
    assert np.allclose(m.rows(table, np.array([0, 1])), [[0.75, 0.25], [0.5, 0.5]])
    assert np.allclose(m.rows(np.array([2.0, 4.0, 8.0]), np.array([0, 1])), [2.5, 3.0])  # per-clip weights
    rng = np.random.default_rng(0)
    idx, seeds = np.array([3, 7, 2, 5]), plan_seeds(rng, 4)
    m = plan_mix(rng, idx, seeds, 0.4)
    assert sorted(m.partner.tolist()) == sorted(idx.tolist()) and ((m.lam >= 0.5) & (m.lam <= 1)).all()
    assert all(s == seeds[list(idx).index(p)] for p, s in zip(m.partner, m.partner_seed))  # the partner's own crop
    assert not np.array_equal(plan_mix(rng, idx, seeds, 0.4).partner, m.partner)
    wavs = load_clips(clips, 16000, progress=False)
    x, lengths = TrainingBatches(wavs, [(idx, seeds, m)], 8000, 400, None)[0]
    for row in range(4):
        own = crop_clip(wavs[idx[row]], 8000, int(seeds[row]), None)
        other = crop_clip(wavs[m.partner[row]], 8000, int(m.partner_seed[row]), None)
        lam = float(m.lam[row])
        n = min(len(own), len(other))
        assert lengths[row] == len(own)  # the mix spans the clip's own crop, never the partner's longer one
        assert np.allclose(x[row, :n].numpy(), lam * own[:n] + (1 - lam) * other[:n], atol=1e-6)
        assert np.allclose(x[row, n : len(own)].numpy(), lam * own[n:], atol=1e-6)
    plain, _ = TrainingBatches(wavs, [(idx, seeds, None)], 8000, 400, None)[0]
    assert not torch.equal(plain, x)
    half = m.shard(np.array([1, 3]))
    assert half.partner.tolist() == m.partner[[1, 3]].tolist() and half.lam.tolist() == m.lam[[1, 3]].tolist()


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_training_does_not_depend_on_the_number_of_workers(clips, tmp_path, mixup):
    source = untrained_checkpoint(tmp_path / "src.pt", LABELS)
    votes = np.eye(4)[np.random.default_rng(0).integers(0, 4, (len(clips), 3))]
    outs = {}
    for workers in (0, 2):
        cfg = MIFuseConfig(
            epochs=2, batch_size=4, crop_s=1.0, max_clip_s=3.0, device="cpu", workers=workers, mixup=mixup
        )
        out = tmp_path / f"w{workers}.pt"
        mifuse_adapt(source, clips, [FixedSamples(votes, labels=LABELS), EMATeacher(k=2)], out, cfg, progress=False)
        outs[workers] = load_model(out).state_dict()
    assert all(torch.equal(outs[0][k], outs[2][k]) for k in outs[0])
