"""MI-Fuse adaptation end to end on the 8 demo clips with a tiny model (CPU, seconds)."""

import dataclasses

import numpy as np
import pytest
import torch

from edgeser.adapt.checkpoint import load_model, load_state, save_checkpoint
from edgeser.adapt.data import load_clips
from edgeser.adapt.mifuse import MIFuseConfig, ema_update, mifuse_adapt, sfuda_adapt
from edgeser.adapt.model import EmotionNet, ModelConfig
from edgeser.adapt.teachers.base import Teacher
from edgeser.adapt.teachers.classifier import ClassifierTeacher
from edgeser.demo import demo_manifest
from edgeser.manifest import read_manifest

LABELS = ["angry", "happy", "neutral", "sad"]
TINY = dict(channels=16, bottleneck=16, dilations=(1, 2))


def cfg(**kw):
    base = dict(epochs=2, batch_size=4, k_classifier=3, crop_s=1.0, max_clip_s=3.0, seed=0, device="cpu")
    return MIFuseConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def clips():
    return read_manifest(demo_manifest())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    net = EmotionNet(ModelConfig(labels=LABELS, **TINY))
    path = tmp_path_factory.mktemp("src") / "source.pt"
    save_checkpoint(path, net.eval())
    return path


def lalm_votes(clips, k=5, seed=1, missing=()):
    """A simulated LALM: mostly the true label, sometimes another; NaN rows for ``missing`` clips."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(clips), k, len(LABELS)))
    for i, c in enumerate(clips):
        for j in range(k):
            lab = LABELS.index(c.label) if rng.random() < 0.7 else int(rng.integers(len(LABELS)))
            out[i, j, lab] = 1.0
    out[list(missing)] = np.nan
    return out


def weights(path):
    return load_model(path).state_dict()


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_classifier_teacher_protocol(source, clips):
    net = load_model(source)
    t = ClassifierTeacher(net, "cpu", seed=3)
    assert isinstance(t, Teacher) and t.name == "classifier" and t.labels == LABELS
    before = torch.get_rng_state()
    s = t.sample(clips[:3], 4)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is left alone
    assert s.shape == (3, 4, 4) and s.dtype == np.float64
    np.testing.assert_allclose(s.sum(axis=2), 1.0, atol=1e-5)
    assert s.std(axis=1).max() > 0  # dropout makes the samples differ
    wavs = load_clips(clips[:3], progress=False)
    np.testing.assert_allclose(t.sample_wavs(wavs, 4, seed=7), t.sample_wavs(wavs, 4, seed=7))
    # it follows weight updates of the network it holds
    with torch.no_grad():
        for p in net.classifier.parameters():
            p.add_(1.0)
    assert not np.allclose(t.sample_wavs(wavs, 4, seed=7)[:, 0], s[:, 0])


def test_ema_update():
    torch.manual_seed(0)
    a, b = EmotionNet(ModelConfig(labels=LABELS, **TINY)), EmotionNet(ModelConfig(labels=LABELS, **TINY))
    pa, pb = a.classifier.weight.clone(), b.classifier.weight.clone()
    kernels = a.frontend.kernels.clone()
    ema_update(a, b, 0.9)
    torch.testing.assert_close(a.classifier.weight, 0.9 * pa + 0.1 * pb)
    assert torch.equal(a.frontend.kernels, kernels)  # fixed DFT kernels are not averaged (rounding)


def test_mifuse_two_epochs_end_to_end(source, clips, tmp_path):
    lalm = lalm_votes(clips, missing=(0, 3))
    out = tmp_path / "adapted.pt"
    res = mifuse_adapt(source, clips, lalm, out, cfg(), progress=False)
    assert res["method"] == "mi-fuse" and res["epochs"] == 2 and len(res["history"]) == 2
    net = load_model(out)
    assert net.labels == LABELS
    assert net(torch.zeros(1, 16000)).shape == (1, 4)
    from edgeser.adapt.checkpoint import read_checkpoint
    ckpt = read_checkpoint(out)
    summ = ckpt["summary"]
    assert summ["method"] == "mi-fuse" and summ["lalm_k"] == 5
    fs = summ["fusion"]
    # clips 0 and 3 lack LALM samples: the classifier covers them, nothing is skipped
    assert fs["covered"] == len(clips)
    assert fs["teachers"]["lalm"]["coverage"] == pytest.approx(6 / 8)
    assert fs["teachers"]["lalm"]["mean_weight"] + fs["teachers"]["classifier"]["mean_weight"] == pytest.approx(1)
    assert "agreement" in fs
    for rec in res["history"]:
        assert rec["trained_clips"] == len(clips)
        assert np.isfinite(rec["loss"])
        assert set(rec["target_ua"]) == {"student", "fused", "lalm", "classifier"}
    st = load_state(res["state"])
    assert st["epoch"] == 2 and st["classifier_samples"].shape == (8, 3, 4)
    assert not np.isnan(st["classifier_samples"]).any()
    # EMA teacher moved away from the source, and is not the student
    src = weights(source)
    assert not same(st["ema"], src)
    assert not same(st["ema"], st["student"])
    assert not same(weights(out), src)


def test_fused_targets_skip_only_uncovered_clips(source, clips, tmp_path):
    # LALM-only: clips 0 and 3 have no LALM sample -> skipped, the rest trained on
    lalm = lalm_votes(clips, missing=(0, 3))
    res = sfuda_adapt(source, clips, lalm, tmp_path / "sfuda.pt", cfg(epochs=1), progress=False)
    assert res["method"] == "lalm-sfuda"
    assert res["history"][0]["trained_clips"] == 6
    assert list(res["fusion"]["teachers"]) == ["lalm"]
    assert res["mifuse_config"]["teachers"] == "lalm"
    assert "classifier" not in res["history"][0]["target_ua"]
    assert load_state(res["state"])["ema"] is None
    hard = sfuda_adapt(source, clips, lalm, tmp_path / "sfuda_hard.pt", cfg(epochs=1, lalm_target="hard"),
                       progress=False)
    assert not same(weights(tmp_path / "sfuda.pt"), weights(tmp_path / "sfuda_hard.pt"))
    assert hard["history"][0]["trained_clips"] == 6
    with pytest.raises(ValueError):
        sfuda_adapt(source, clips, None, tmp_path / "x.pt", cfg(epochs=1), progress=False)


def test_without_lalm_degrades_to_self_training(source, clips, tmp_path):
    res = mifuse_adapt(source, clips, None, tmp_path / "self.pt", cfg(epochs=1), progress=False)
    assert res["method"] == "classifier-self-training"
    assert "not MI-Fuse" in res["note"]
    assert list(res["fusion"]["teachers"]) == ["classifier"]
    assert load_model(tmp_path / "self.pt").labels == LABELS


def test_target_labels_never_reach_the_loss(source, clips, tmp_path):
    lalm = lalm_votes(clips)
    rng = np.random.default_rng(5)
    unlabelled = [dataclasses.replace(c, label=None) for c in clips]
    shuffled = [dataclasses.replace(c, label=str(rng.choice(LABELS))) for c in clips]
    runs = []
    for name, cs in (("labelled", clips), ("unlabelled", unlabelled), ("shuffled", shuffled)):
        res = mifuse_adapt(source, cs, lalm, tmp_path / f"{name}.pt", cfg(epochs=1), progress=False)
        runs.append(weights(tmp_path / f"{name}.pt"))
        assert ("target_ua" in res["history"][0]) == (name != "unlabelled")
    assert same(runs[0], runs[1]) and same(runs[0], runs[2])
    # report_labels=False: same weights and nothing reported
    res = mifuse_adapt(source, clips, lalm, tmp_path / "quiet.pt", cfg(epochs=1), progress=False, report_labels=False)
    assert "target_ua" not in res["history"][0] and same(runs[0], weights(tmp_path / "quiet.pt"))


def test_resume_after_interruption_matches_uninterrupted(source, clips, tmp_path):
    lalm = lalm_votes(clips)
    full = mifuse_adapt(source, clips, lalm, tmp_path / "full.pt", cfg(resample_every=1), progress=False)

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        mifuse_adapt(source, clips, lalm, out, cfg(resample_every=1), progress=False, on_epoch=stop)
    assert load_state(tmp_path / "cut.pt.state")["epoch"] == 1
    seen = []
    res = mifuse_adapt(source, clips, lalm, out, cfg(resample_every=1), progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [2]  # only the missing epoch ran
    assert [r["epoch"] for r in res["history"]] == [1, 2]
    assert same(weights(out), weights(tmp_path / "full.pt"))
    assert res["history"][1]["loss"] == pytest.approx(full["history"][1]["loss"])
    # other settings: the state is ignored and the run starts over
    seen.clear()
    mifuse_adapt(source, clips, lalm, out, cfg(resample_every=2), progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2]


def test_bad_lalm_shape(source, clips, tmp_path):
    with pytest.raises(ValueError):
        mifuse_adapt(source, clips, np.zeros((3, 2, 4)), tmp_path / "bad.pt", cfg(epochs=1), progress=False)
