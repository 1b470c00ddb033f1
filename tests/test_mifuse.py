"""MI-Fuse adaptation end to end on the 8 demo clips with a tiny model (CPU, seconds)."""

import dataclasses

import numpy as np
import pytest
import torch

from edgeser.adapt.checkpoint import load_model, load_state, read_checkpoint
from edgeser.adapt.data import load_clips
from edgeser.adapt.mifuse import EMATeacher, MIFuseConfig, ema_update, mifuse_adapt, sfuda_adapt
from edgeser.adapt.model import EmotionNet, ModelConfig
from edgeser.adapt.teachers import FixedSamples
from edgeser.adapt.teachers.base import Teacher
from edgeser.adapt.teachers.classifier import ClassifierTeacher
from edgeser.demo import demo_manifest
from edgeser.errors import EdgeserError
from edgeser.manifest import read_manifest
from edgeser.testing.models import TINY, untrained_checkpoint

LABELS = ["angry", "happy", "neutral", "sad"]


def cfg(**kw):
    base = dict(epochs=2, batch_size=4, crop_s=1.0, max_clip_s=3.0, seed=0, device="cpu")
    return MIFuseConfig(**{**base, **kw})


def ema(**kw):
    return EMATeacher(**{"k": 3, **kw})


def lalm_teacher(samples):
    return FixedSamples(samples, name="lalm", labels=LABELS)


@pytest.fixture(scope="module")
def clips():
    return read_manifest(demo_manifest())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return untrained_checkpoint(
        tmp_path_factory.mktemp("src") / "source.pt", LABELS, data="demo clips (EmoDB, CC0)", model_card="a card"
    )


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
    res = mifuse_adapt(source, clips, [lalm_teacher(lalm), ema()], out, cfg(), progress=False)
    assert res.method == "mi-fuse" and res.epochs == 2 and len(res.history) == 2 and res.model == out
    net = load_model(out)
    assert net.labels == LABELS
    assert net(torch.zeros(1, 16000)).shape == (1, 4)
    summ = read_checkpoint(out)["summary"]
    assert summ == res.summary
    assert summ["method"] == "mi-fuse" and summ["config"]["k_lalm"] == 5
    assert summ["data"] == "demo clips (EmoDB, CC0)" and summ["model_card"] == "a card"  # carried from the source
    assert [t["name"] for t in summ["details"]["teachers"]] == ["lalm", "classifier"]
    fs = summ["details"]["fusion"]
    # clips 0 and 3 lack LALM samples: the classifier covers them, nothing is skipped
    assert fs["covered"] == len(clips)
    assert fs["teachers"]["lalm"]["coverage"] == pytest.approx(6 / 8)
    assert fs["teachers"]["lalm"]["mean_weight"] + fs["teachers"]["classifier"]["mean_weight"] == pytest.approx(1)
    assert "agreement" in fs
    for rec in res.history:
        assert rec["trained_clips"] == len(clips)
        assert np.isfinite(rec["loss"])
        assert 0 <= rec["target_ua"] <= 1
        assert set(rec["teacher_ua"]) == {"fused", "lalm", "classifier"}
    assert set(summ["initial"]) == {"target_ua", "teacher_ua"}
    st = load_state(res.state)
    assert st["epoch"] == 2
    teacher_state = st["method"]["teachers"]["classifier"]
    assert teacher_state["samples"].shape == (8, 3, 4) and not np.isnan(teacher_state["samples"]).any()
    # EMA teacher moved away from the source, and is not the student
    src = weights(source)
    assert not same(teacher_state["ema"], src)
    assert not same(teacher_state["ema"], st["model"])
    assert not same(weights(out), src)


def test_fused_targets_skip_only_uncovered_clips(source, clips, tmp_path):
    # LALM-only: clips 0 and 3 have no LALM sample -> skipped, the rest trained on
    lalm = lalm_votes(clips, missing=(0, 3))
    res = sfuda_adapt(source, clips, lalm_teacher(lalm), tmp_path / "sfuda.pt", cfg(epochs=1), progress=False)
    assert res.method == "lalm-sfuda"
    assert res.history[0]["trained_clips"] == 6
    assert list(res.summary["details"]["fusion"]["teachers"]) == ["lalm"]
    assert "classifier" not in res.history[0]["teacher_ua"]
    assert load_state(res.state)["method"]["teachers"] == {}
    hard = sfuda_adapt(
        source, clips, lalm_teacher(lalm), tmp_path / "sfuda_hard.pt", cfg(epochs=1, lalm_target="hard"), progress=False
    )
    assert not same(weights(tmp_path / "sfuda.pt"), weights(tmp_path / "sfuda_hard.pt"))
    assert hard.history[0]["trained_clips"] == 6
    with pytest.raises(EdgeserError):
        sfuda_adapt(source, clips, None, tmp_path / "x.pt", cfg(epochs=1), progress=False)


def test_the_ema_teacher_alone_is_self_training(source, clips, tmp_path):
    res = mifuse_adapt(source, clips, [ema()], tmp_path / "self.pt", cfg(epochs=1), progress=False)
    assert res.method == "classifier-self-training"
    assert any("not MI-Fuse" in n for n in res.summary["notes"])
    assert list(res.summary["details"]["fusion"]["teachers"]) == ["classifier"]
    assert load_model(tmp_path / "self.pt").labels == LABELS


def test_target_labels_never_reach_the_loss(source, clips, tmp_path):
    lalm = lalm_votes(clips)
    rng = np.random.default_rng(5)
    unlabelled = [dataclasses.replace(c, label=None) for c in clips]
    shuffled = [dataclasses.replace(c, label=str(rng.choice(LABELS))) for c in clips]
    runs = []
    for name, cs in (("labelled", clips), ("unlabelled", unlabelled), ("shuffled", shuffled)):
        res = mifuse_adapt(
            source, cs, [lalm_teacher(lalm), ema()], tmp_path / f"{name}.pt", cfg(epochs=1), progress=False
        )
        runs.append(weights(tmp_path / f"{name}.pt"))
        assert ("target_ua" in res.history[0]) == (name != "unlabelled")
    assert same(runs[0], runs[1]) and same(runs[0], runs[2])
    # report_labels=False: same weights and nothing reported
    res = mifuse_adapt(
        source,
        clips,
        [lalm_teacher(lalm), ema()],
        tmp_path / "quiet.pt",
        cfg(epochs=1),
        progress=False,
        report_labels=False,
    )
    assert "target_ua" not in res.history[0] and same(runs[0], weights(tmp_path / "quiet.pt"))


def test_resume_after_interruption_matches_uninterrupted(source, clips, tmp_path):
    lalm = lalm_votes(clips)
    teachers = lambda every=1: [lalm_teacher(lalm), ema(resample_every=every)]  # noqa: E731
    full = mifuse_adapt(source, clips, teachers(), tmp_path / "full.pt", cfg(), progress=False)

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        mifuse_adapt(source, clips, teachers(), out, cfg(), progress=False, on_epoch=stop)
    assert load_state(tmp_path / "cut.pt.state")["epoch"] == 1
    seen = []
    res = mifuse_adapt(source, clips, teachers(), out, cfg(), progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [2]  # only the missing epoch ran
    assert [r["epoch"] for r in res.history] == [1, 2]
    assert same(weights(out), weights(tmp_path / "full.pt"))
    assert res.history[1]["loss"] == pytest.approx(full.history[1]["loss"])
    # another teacher setting: the state is ignored and the run starts over
    seen.clear()
    mifuse_adapt(source, clips, teachers(every=2), out, cfg(), progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2]
    # other answers of the LALM: the same
    seen.clear()
    mifuse_adapt(
        source,
        clips,
        [lalm_teacher(lalm_votes(clips, seed=9)), ema(resample_every=2)],
        out,
        cfg(),
        progress=False,
        on_epoch=seen.append,
    )
    assert [r["epoch"] for r in seen] == [1, 2]


def test_bad_lalm_shape(source, clips, tmp_path):
    with pytest.raises(ValueError):
        mifuse_adapt(
            source,
            clips,
            [FixedSamples(np.zeros((3, 2, 4)), labels=LABELS)],
            tmp_path / "bad.pt",
            cfg(epochs=1),
            progress=False,
        )
    with pytest.raises(TypeError):
        mifuse_adapt(source, clips, [np.zeros((8, 2, 4))], tmp_path / "bad.pt", cfg(epochs=1), progress=False)


class ConstantTeacher(Teacher):
    """A toy third teacher, defined here and nowhere in the library: the same distribution for every clip."""

    name = "constant"
    reads_audio = False

    def __init__(self, dist):
        self.dist, self.labels, self.asked = np.asarray(dist, np.float64), LABELS, []

    def sample(self, clips, k):
        self.asked.append((len(clips), k))
        return np.broadcast_to(self.dist, (len(clips), k, len(self.dist))).copy()


def test_a_third_teacher_plugs_in_through_the_public_api(source, clips, tmp_path):
    from edgeser.adapt.engine import fit
    from edgeser.adapt.fusion import entropy, fuse
    from edgeser.adapt.mifuse import FusionMethod

    lalm = lalm_votes(clips)
    const = ConstantTeacher([0.1, 0.1, 0.1, 0.7])

    # equal weights: the fused target is exactly the mean of the three teachers' means
    three = FusionMethod(source, clips, [lalm_teacher(lalm), ema(), const], cfg(epochs=1, fusion="equal"))
    res = fit(three, tmp_path / "three.pt", progress=False)
    assert const.asked == [(len(clips), 5)]  # a fixed teacher: asked once, with k_lalm
    assert three.names == ["lalm", "classifier", "constant"]
    clf_mean = three.teachers[1].samples.mean(axis=1)
    expected = (np.nan_to_num(fuse([lalm]).target) + clf_mean + const.dist) / 3
    np.testing.assert_allclose(three.targets, expected, atol=1e-6)
    fs = res.summary["details"]["fusion"]["teachers"]
    assert fs["constant"]["coverage"] == 1.0 and fs["constant"]["mean_weight"] == pytest.approx(1 / 3)

    # default weighting: the constant teacher is exactly as sure as usual on every clip (relative
    # uncertainty 0), so it outweighs each other teacher exactly where that one is less sure than usual
    two = FusionMethod(source, clips, [lalm_teacher(lalm), ema()], cfg(epochs=1))
    fit(two, tmp_path / "two.pt", progress=False)
    three = FusionMethod(source, clips, [lalm_teacher(lalm), ema(), ConstantTeacher(const.dist)], cfg(epochs=1))
    res = fit(three, tmp_path / "three_default.pt", progress=False)
    u, w = three.fused.uncertainty, three.fused.weights
    np.testing.assert_allclose(u[:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(entropy(three.fused.means[:, 2]), entropy(const.dist))
    for t in (0, 1):
        np.testing.assert_array_equal(w[:, 2] > w[:, t], u[:, t] > 1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    expected = (w[:, :, None] * three.fused.means).sum(axis=1)
    np.testing.assert_allclose(three.targets, expected, atol=1e-6)
    # the other two keep their relative weights (softmax over teachers): the new target moves from the old one
    # towards the constant distribution by the constant teacher's weight -- and the student changes with it
    np.testing.assert_allclose(three.targets, (1 - w[:, 2:]) * two.targets + w[:, 2:] * const.dist, atol=1e-6)
    assert (w[:, 2] > 0).all() and not np.allclose(three.targets, two.targets)
    assert not same(weights(tmp_path / "two.pt"), weights(tmp_path / "three_default.pt"))
    assert [t["name"] for t in res.summary["details"]["teachers"]] == ["lalm", "classifier", "constant"]


def test_reliability_referee_scales_the_weights_and_resumes(source, clips, tmp_path):
    """reliability="referee": the kappas are measured once, on the starting teachers, reported per epoch with
    the prior they give, kept in the training state, and the same after a resume; a constant LALM (no
    agreement beyond chance with anything) is reported as unreliable."""
    lalm = lalm_votes(clips)
    c = cfg(reliability="referee")
    full = mifuse_adapt(source, clips, [lalm_teacher(lalm), ema()], tmp_path / "full.pt", c, progress=False)
    rels = [r["reliability"] for r in full.history]
    assert set(rels[0]) == {"lalm", "classifier"}
    assert rels[0] == rels[1]  # measured once
    assert sum(v["prior"] for v in rels[0].values()) == pytest.approx(1)
    assert load_state(full.state)["method"]["kappas"].shape == (2,)

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        mifuse_adapt(source, clips, [lalm_teacher(lalm), ema()], out, c, progress=False, on_epoch=stop)
    res = mifuse_adapt(source, clips, [lalm_teacher(lalm), ema()], out, c, progress=False)
    assert res.history[1]["reliability"] == rels[1]
    assert same(weights(out), weights(tmp_path / "full.pt"))

    constant = np.zeros_like(lalm)
    constant[:, :, LABELS.index("sad")] = 1.0
    res = mifuse_adapt(source, clips, [lalm_teacher(constant), ema()], tmp_path / "const.pt", c, progress=False)
    rel = res.history[0]["reliability"]
    # the referee of a constant LALM is constant: no teacher can agree with it beyond chance, no evidence
    # either way, so the prior stays even; the LALM is still reported
    assert rel["lalm"]["kappa"] == 0.0 and rel["lalm"]["prior"] == 0.5
    assert any("lalm looks unreliable" in n for n in res.summary["notes"])
    # the default is the referee; "none" turns it off and nothing of this is reported
    assert MIFuseConfig().reliability == "referee"
    plain = mifuse_adapt(
        source, clips, [lalm_teacher(lalm), ema()], tmp_path / "plain.pt", cfg(reliability="none"), progress=False
    )
    assert "reliability" not in plain.history[0]


def test_bad_reliability_setting(source, clips, tmp_path):
    with pytest.raises(ValueError, match="reliability"):
        mifuse_adapt(source, clips, [ema()], tmp_path / "x.pt", cfg(reliability="votes"), progress=False)


def test_encoder_lr_scale_zero_freezes_the_encoder_weights_only(source, clips, tmp_path):
    out = tmp_path / "frozen.pt"
    mifuse_adapt(source, clips, [lalm_teacher(lalm_votes(clips))], out, cfg(encoder_lr_scale=0.0), progress=False)
    before, after = weights(source), weights(out)
    enc = [k for k in before if k.split(".")[0] in ("input_norm", "stem", "blocks")]
    assert enc and all(
        torch.equal(before[k], after[k])
        for k in enc
        if not k.endswith(("running_mean", "running_var", "batches_tracked"))
    )
    assert any(not torch.equal(before[k], after[k]) for k in enc if k.endswith("running_mean"))  # BN follows the target
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        mifuse_adapt(source, clips, [ema()], tmp_path / "x.pt", cfg(encoder_lr_scale=-1.0), progress=False)


def test_partial_weight_coverage_weighs_clips_by_the_trust_that_answered(source, clips, tmp_path):
    """partial_weight="coverage" (the default): a clip the LALM did not answer counts with the EMA teacher's
    share of the prior, before moving_weight's discount; every clip both answered counts 1; the run differs
    from "full" and a bad value is refused."""
    assert MIFuseConfig().partial_weight == "coverage"
    lalm = lalm_votes(clips, missing=(0, 3))
    c = cfg(epochs=1, reliability="none")
    res = mifuse_adapt(source, clips, [lalm_teacher(lalm), ema()], tmp_path / "cov.pt", c, progress=False)
    # no reliability prior: equal trust, so the 2 LALM-less clips of 8 weigh 0.5 and the others 1 (the EMA
    # teacher's labels are not mixed into the other 6, moving_weight=0, but its trust is not discounted)
    assert res.history[0]["mean_clip_weight"] == pytest.approx((6 * 1.0 + 2 * 0.5) / 8)
    full = mifuse_adapt(
        source,
        clips,
        [lalm_teacher(lalm), ema()],
        tmp_path / "full.pt",
        cfg(epochs=1, reliability="none", partial_weight="full"),
        progress=False,
    )
    assert "mean_clip_weight" not in full.history[0]
    assert not same(weights(tmp_path / "cov.pt"), weights(tmp_path / "full.pt"))
    with pytest.raises(ValueError, match="partial_weight"):
        mifuse_adapt(source, clips, [ema()], tmp_path / "x.pt", cfg(partial_weight="half"), progress=False)


def test_diversity_prior_teachers_is_fixed_on_the_first_fused_labels_and_resumes(source, clips, tmp_path):
    """diversity_prior="teachers": the diversity loss pulls toward the class shares of epoch 1's fused labels
    (an LALM that never says "sad" gives "sad" only the floor), reported every epoch, kept in the training state
    and the same after a resume; the run differs from the uniform one; a bad value is refused."""
    said = ["neutral" if c.label == "sad" else c.label for c in clips]
    lalm = np.zeros((len(clips), 5, len(LABELS)))
    for i, lab in enumerate(said):
        lalm[i, :, LABELS.index(lab)] = 1.0
    c = cfg(diversity_prior="teachers")
    teachers = lambda: lalm_teacher(lalm)  # noqa: E731
    full = sfuda_adapt(source, clips, teachers(), tmp_path / "full.pt", c, progress=False)
    priors = [r["class_prior"] for r in full.history]
    assert priors[0] == priors[1]
    floor = 0.1 / len(LABELS)
    assert priors[0] == pytest.approx({lab: 0.9 * said.count(lab) / len(clips) + floor for lab in LABELS})
    assert priors[0]["sad"] == pytest.approx(floor)

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        sfuda_adapt(source, clips, teachers(), out, c, progress=False, on_epoch=stop)
    res = sfuda_adapt(source, clips, teachers(), out, c, progress=False)
    assert res.history[1]["class_prior"] == priors[1]
    assert same(weights(out), weights(tmp_path / "full.pt"))

    uniform = sfuda_adapt(source, clips, teachers(), tmp_path / "uni.pt", cfg(), progress=False)
    assert "class_prior" not in uniform.history[0]
    assert not same(weights(tmp_path / "uni.pt"), weights(tmp_path / "full.pt"))
    with pytest.raises(ValueError, match="diversity_prior"):
        sfuda_adapt(source, clips, teachers(), tmp_path / "x.pt", cfg(diversity_prior="zipf"), progress=False)


def test_anchor_weight_keeps_the_student_near_the_source(source, clips, tmp_path):
    def distance(path):
        before, after = weights(source), weights(path)
        names = [n for n, _ in load_model(source).named_parameters()]
        return sum(float(((after[n] - before[n]) ** 2).sum()) for n in names)

    votes = lalm_votes(clips)
    free, held = tmp_path / "free.pt", tmp_path / "held.pt"
    # at lr 1e-3 (the default before 0.2) a few steps on the demo clips show the pull; at 3e-4 they barely move
    mifuse_adapt(source, clips, [lalm_teacher(votes)], free, cfg(lr=1e-3), progress=False)
    mifuse_adapt(source, clips, [lalm_teacher(votes)], held, cfg(lr=1e-3, anchor_weight=10.0), progress=False)
    assert 0 < distance(held) < 0.75 * distance(free)  # measured 0.50 (a few AdamW steps on the demo clips)
    with pytest.raises(ValueError, match="anchor_weight"):
        mifuse_adapt(source, clips, [ema()], tmp_path / "x.pt", cfg(anchor_weight=-1.0), progress=False)


def test_entropy_weight_adds_the_mean_prediction_entropy_to_the_loss(source, clips, tmp_path):
    votes = lalm_votes(clips)
    res = mifuse_adapt(
        source, clips, [lalm_teacher(votes), ema()], tmp_path / "s.pt", cfg(entropy_weight=0.5), progress=False
    )
    for r in res.history:  # per-epoch means of per-step terms: the loss is their weighted sum
        assert 0 < r["entropy"] <= np.log(len(LABELS)) + 1e-6
        assert r["loss"] == pytest.approx(r["ce"] + r["diversity"] + 0.5 * r["entropy"], abs=1e-5)
    plain = mifuse_adapt(source, clips, [lalm_teacher(votes), ema()], tmp_path / "p.pt", cfg(), progress=False)
    assert all("entropy" not in r for r in plain.history)
    with pytest.raises(ValueError, match="entropy_weight"):
        mifuse_adapt(source, clips, [ema()], tmp_path / "x.pt", cfg(entropy_weight=-0.5), progress=False)


def test_moving_weight_discounts_the_ema_teacher_in_the_fusion(source, clips, tmp_path):
    """moving_weight scales the EMA teacher's prior: 0 leaves it only the clips the LALM did not answer (where
    it is the only teacher), 1 is the plain fusion; not when the LALM agrees with its referee no better than
    chance; values outside [0, 1] are refused."""
    lalm = lalm_votes(clips, missing=(0, 3))

    def run(w):
        c = cfg(epochs=1, reliability="none", moving_weight=w)
        res = mifuse_adapt(source, clips, [lalm_teacher(lalm), ema()], tmp_path / f"w{w}.pt", c, progress=False)
        return res.history[0]["fusion"]["teachers"]

    plain, quarter, zero = run(1.0), run(0.25), run(0.0)
    notes = mifuse_adapt(
        source,
        clips,
        [lalm_teacher(lalm), ema()],
        tmp_path / "w0.pt",
        cfg(epochs=1, reliability="none"),
        progress=False,
    ).summary["notes"]
    assert "the classifier teacher labels only the 2 of 8 clips no fixed teacher answered (moving_weight=0)" in notes
    assert plain["lalm"]["mean_weight"] < quarter["lalm"]["mean_weight"] < zero["lalm"]["mean_weight"]
    # with weight 0 the LALM carries its 6 clips alone, the classifier the 2 it did not answer
    assert zero["lalm"]["mean_weight"] == pytest.approx(6 / 8)
    assert zero["classifier"]["mean_weight"] == pytest.approx(2 / 8)
    # an LALM with one answer for every clip agrees with nothing beyond chance (kappa 0): no discount then
    constant = np.zeros_like(lalm)
    constant[:, :, LABELS.index("sad")] = 1.0
    c = cfg(epochs=1, reliability="referee", moving_weight=0.0)
    res = mifuse_adapt(source, clips, [lalm_teacher(constant), ema()], tmp_path / "const.pt", c, progress=False)
    assert res.history[0]["reliability"]["lalm"]["kappa"] == 0.0
    assert res.history[0]["fusion"]["teachers"]["classifier"]["mean_weight"] > 0.3
    assert any("keeps its whole share" in n for n in res.summary["notes"])
    with pytest.raises(ValueError, match="moving_weight"):
        mifuse_adapt(source, clips, [ema()], tmp_path / "x.pt", cfg(moving_weight=1.5), progress=False)
