"""The on-disk audio store (issue 11, item 1): same audio as decoding into memory, same training results,
nothing held in memory but the offsets, and a private directory that goes away."""

import gc

import numpy as np
import pytest
import torch

from edgeser.adapt.audio_store import AudioStore, lengths_of
from edgeser.adapt.checkpoint import load_model
from edgeser.adapt.data import load_clips, load_target_audio
from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, mifuse_adapt
from edgeser.adapt.teachers import FixedSamples
from edgeser.adapt.train import TrainConfig, train
from edgeser.demo import demo_manifest
from edgeser.manifest import read_manifest
from edgeser.testing.models import TINY, untrained_checkpoint

LABELS = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def clips():
    return read_manifest(demo_manifest())


def test_store_sequence_protocol(tmp_path):
    s = AudioStore.of([np.arange(5, dtype=np.float32), np.ones(3, np.float64), np.zeros(0, np.float32)])
    assert len(s) == 3 and s.lengths.tolist() == [5, 3, 0] and lengths_of(s).tolist() == [5, 3, 0]
    np.testing.assert_array_equal(s[0], np.arange(5))
    assert s[1].dtype == np.float32 and s[-2].tolist() == [1.0, 1.0, 1.0] and len(s[2]) == 0
    assert [len(w) for w in s] == [5, 3, 0] and [len(w) for w in s[:2]] == [5, 3]
    s[0][0] = 9.0  # a read is the caller's own copy
    assert s[0][0] == 0.0
    with pytest.raises(IndexError):
        s[3]
    with pytest.raises(ValueError, match="1-D"):
        s.append(np.zeros((2, 2)))
    d = s.directory
    assert d.exists()
    s.close()
    assert not d.exists()
    kept = AudioStore.of([np.ones(4)], tmp_path / "mine")
    kept.close()
    assert (tmp_path / "mine" / "audio.f32").stat().st_size == 16  # a given directory is kept


def test_a_private_directory_goes_with_the_store():
    s = AudioStore.of([np.ones(10)])
    d = s.directory
    del s
    gc.collect()
    assert not d.exists()


def test_disk_and_memory_hold_the_same_audio(clips):
    mem = load_clips(clips, 16000, progress=False)
    disk = load_clips(clips, 16000, progress=False, store="disk")
    assert isinstance(disk, AudioStore) and len(disk) == len(mem)
    for a, b in zip(mem, disk):
        np.testing.assert_array_equal(a, b)
    cut = load_clips(clips, 16000, progress=False, store="disk", max_len=8000)
    assert max(cut.lengths) == 8000
    t_mem = load_target_audio(clips, 16000, max_s=1.0, progress=False)
    t_disk = load_target_audio(clips, 16000, max_s=1.0, progress=False, store="disk")
    assert sorted(t_mem.crops) == sorted(t_disk.crops) and len(t_disk.crops) > 0  # 1 s crops of longer clips
    for i in t_mem.crops:
        np.testing.assert_array_equal(t_mem.crops[i], t_disk.crops[i])
    with pytest.raises(ValueError, match="audio_store"):
        load_clips(clips, 16000, progress=False, store="cloud")


def test_training_is_the_same_from_disk_and_from_memory(clips, tmp_path):
    source = untrained_checkpoint(tmp_path / "src.pt", LABELS)
    rng = np.random.default_rng(0)
    votes = np.eye(4)[rng.integers(0, 4, (len(clips), 3))]
    outs = {}
    for store in ("memory", "disk"):
        cfg = MIFuseConfig(epochs=2, batch_size=4, crop_s=1.0, max_clip_s=3.0, device="cpu", audio_store=store)
        out = tmp_path / f"{store}.pt"
        mifuse_adapt(source, clips, [FixedSamples(votes, labels=LABELS), EMATeacher(k=2)], out, cfg, progress=False)
        outs[store] = load_model(out).state_dict()
    assert all(torch.equal(outs["memory"][k], outs["disk"][k]) for k in outs["memory"])
    trained = {}
    for store in ("memory", "disk"):
        cfg = TrainConfig(epochs=1, batch_size=4, crop_s=1.0, device="cpu", model=TINY, audio_store=store)
        train(clips[:6], clips[6:], tmp_path / f"t_{store}.pt", cfg, labels=LABELS, progress=False)
        trained[store] = load_model(tmp_path / f"t_{store}.pt").state_dict()
    assert all(torch.equal(trained["memory"][k], trained["disk"][k]) for k in trained["memory"])


def test_whole_clip_batches_are_bounded_in_samples(monkeypatch):
    from edgeser.adapt import data

    monkeypatch.setattr(data, "MAX_BATCH_SAMPLES", 100)
    wavs = [np.zeros(n, np.float32) for n in (10, 60, 20, 30, 10, 200)]
    batches = [b.tolist() for b in data._by_length(wavs, batch_size=4)]
    # longest first: 200 alone (one clip always goes), 60 alone (2 x 60 does not fit in 100 samples), then a
    # batch padded to its first clip's 30 samples: 3 x 30 fits (4 x 30 does not), and the last 10
    assert batches == [[5], [1], [3, 2, 0], [4]]
    assert sorted(i for b in batches for i in b) == list(range(6))
    longest = [max(len(wavs[i]) for i in b) for b in batches]
    assert longest == sorted(longest, reverse=True)  # a batch never needs more than the one before freed
