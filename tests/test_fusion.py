"""MI-weighted fusion, checked against values computed by hand."""

import math

import numpy as np
import pytest

from edgeser.adapt.fusion import (
    DEFAULT_METHOD,
    DEFAULT_TAU,
    class_prior,
    coverage_weights,
    entropy,
    fuse,
    fusion_stats,
    sharpen,
    summarize,
    teacher_weights,
)

LN2 = math.log(2)
NAN = float("nan")


def test_entropy_nats_and_zero_log_zero():
    assert entropy(np.array([1.0, 0.0])) == 0.0
    assert entropy(np.array([0.5, 0.5])) == pytest.approx(LN2)
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))
    np.testing.assert_allclose(entropy(np.array([[0.5, 0.5], [1.0, 0.0]]), axis=1), [LN2, 0.0])
    assert np.isnan(entropy(np.array([NAN, NAN])))


def test_summarize_agreeing_vs_disagreeing_one_hot():
    s = np.array([[[1, 0], [1, 0]], [[1, 0], [0, 1]]], float)
    mean, mi = summarize(s)
    np.testing.assert_allclose(mean, [[1, 0], [0.5, 0.5]])
    np.testing.assert_allclose(mi, [0.0, LN2])


def test_one_hot_votes_mi_is_vote_entropy():
    # 5 votes 3-1-1 over 4 classes: vote distribution (0.6, 0.2, 0.2, 0)
    votes = [0, 0, 0, 1, 2]
    s = np.eye(4)[votes][None]
    mean, mi = summarize(s)
    np.testing.assert_allclose(mean[0], [0.6, 0.2, 0.2, 0.0])
    expected = -(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))
    assert mi[0] == pytest.approx(expected)
    assert mi[0] == pytest.approx(entropy(mean[0]))


def test_mi_of_soft_samples_is_bald():
    # p1 = (0.9, 0.1), p2 = (0.5, 0.5): mean (0.7, 0.3)
    s = np.array([[[0.9, 0.1], [0.5, 0.5]]])
    _, mi = summarize(s)
    h = lambda a: -(a * math.log(a) + (1 - a) * math.log(1 - a))  # noqa: E731
    assert mi[0] == pytest.approx(h(0.7) - (h(0.9) + h(0.5)) / 2)
    # identical soft samples: no disagreement, MI 0 even though each is uncertain
    _, mi = summarize(np.array([[[0.5, 0.5], [0.5, 0.5]]]))
    assert mi[0] == pytest.approx(0.0)


def test_nan_rows_are_excluded_per_clip():
    s = np.array(
        [[[1, 0], [NAN, NAN], [0, 1]], [[NAN, NAN], [NAN, NAN], [NAN, NAN]], [[0, 1], [NAN, NAN], [NAN, NAN]]], float
    )
    mean, mi = summarize(s)
    np.testing.assert_allclose(mean[0], [0.5, 0.5])
    assert mi[0] == pytest.approx(LN2)
    assert np.all(np.isnan(mean[1])) and np.isnan(mi[1])
    np.testing.assert_allclose(mean[2], [0, 1])
    assert mi[2] == 0.0


def test_default_is_softmax_and_weights_by_hand():
    assert DEFAULT_METHOD == "softmax" and DEFAULT_TAU == 0.3
    w = teacher_weights(np.array([[0.0, LN2]]))
    a = math.exp(-LN2 / 0.3)  # 2^(-10/3) = 0.099213
    np.testing.assert_allclose(w, [[1 / (1 + a), a / (1 + a)]])
    np.testing.assert_allclose(w, [[0.909742, 0.090258]], atol=1e-6)
    # 0.3 nats less certain -> a factor e lower: 0.269 vs 0.731
    w = teacher_weights(np.array([[0.1, 0.4]]))
    np.testing.assert_allclose(w, [[1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]])
    assert w[0, 1] == pytest.approx(0.268941, abs=1e-6)


def test_inverse_and_equal_weights():
    np.testing.assert_allclose(teacher_weights(np.array([[0.0, 0.1]]), "inverse", eps=0.05), [[0.75, 0.25]])
    np.testing.assert_allclose(
        fuse([np.eye(2)[None, [0, 0]], np.eye(2)[None, [0, 1]]], "inverse", relative=False).weights,
        [[20 / (20 + 1 / (LN2 + 0.05)), 1 - 20 / (20 + 1 / (LN2 + 0.05))]],
    )
    np.testing.assert_allclose(teacher_weights(np.array([[0.0, 1.0]]), "equal"), [[0.5, 0.5]])
    with pytest.raises(ValueError):
        teacher_weights(np.zeros((1, 2)), "median")


def test_nan_mi_gets_zero_weight():
    w = teacher_weights(np.array([[NAN, 0.5], [NAN, NAN], [0.2, 0.2]]))
    np.testing.assert_allclose(w, [[0, 1], [0, 0], [0.5, 0.5]])


def test_fuse_two_teachers_by_hand():
    a = np.array([[[1, 0], [1, 0]]], float)  # mean (1, 0), MI 0
    b = np.array([[[1, 0], [0, 1]]], float)  # mean (0.5, 0.5), MI ln 2
    f = fuse([a, b], relative=False)  # one-hot samples: MI = H(mean), so "entropy" and "mi" agree
    r = 2 ** (-1 / DEFAULT_TAU)  # exp(-ln 2 / 0.3) = 0.099213
    wa, wb = 1 / (1 + r), r / (1 + r)  # 0.909742, 0.090258
    np.testing.assert_allclose(f.weights, [[wa, wb]])
    np.testing.assert_allclose(f.mi, [[0.0, LN2]])
    np.testing.assert_allclose(f.uncertainty, [[0.0, LN2]])
    np.testing.assert_allclose(f.target, [[wa + wb * 0.5, wb * 0.5]])
    np.testing.assert_allclose(f.target, [[0.954871, 0.045129]], atol=1e-6)
    np.testing.assert_allclose(fuse([a, b], uncertainty="mi", relative=False).target, f.target)
    np.testing.assert_allclose(f.means, [[[1, 0], [0.5, 0.5]]])
    # equal weighting is the plain average of the means
    np.testing.assert_allclose(fuse([a, b], "equal").target, [[0.75, 0.25]])
    # one clip, relative (the default): each teacher is at its own mean -> equal weights
    np.testing.assert_allclose(fuse([a, b]).weights, [[0.5, 0.5]])


def test_relative_default_by_hand():
    # teacher A: clip 0 unanimous (H 0), clip 1 split (H ln 2) -> centred -ln2/2, +ln2/2
    # teacher B: split on both clips (H ln 2, ln 2)            -> centred 0, 0
    a = np.array([[[1, 0], [1, 0]], [[1, 0], [0, 1]]], float)
    b = np.array([[[0, 1], [1, 0]], [[1, 0], [0, 1]]], float)
    f = fuse([a, b])
    r = 2 ** (-0.5 / 0.3)  # exp(-(ln2/2) / 0.3) = 0.314980
    np.testing.assert_allclose(f.uncertainty, [[-LN2 / 2, 0], [LN2 / 2, 0]])
    np.testing.assert_allclose(f.weights, [[1 / (1 + r), r / (1 + r)], [r / (1 + r), 1 / (1 + r)]])
    np.testing.assert_allclose(f.weights[0], [0.760468, 0.239532], atol=1e-6)
    # clip 0: A says (1, 0), B (0.5, 0.5); clip 1: both (0.5, 0.5)
    np.testing.assert_allclose(f.target[0], [0.760468 + 0.239532 * 0.5, 0.239532 * 0.5], atol=1e-6)
    np.testing.assert_allclose(f.target[1], [0.5, 0.5])
    # a teacher's overall level does not matter, only how unusual a clip is for it
    shifted = fuse([a, np.array([[[0.9, 0.1]] * 2, [[0.9, 0.1]] * 2])])  # B always at H 0.325
    np.testing.assert_allclose(shifted.weights, f.weights)
    with pytest.raises(ValueError):
        fuse([a, b], "inverse")


def test_entropy_vs_mi_for_soft_samples():
    # an LALM's unanimous votes vs a classifier whose MC-dropout passes agree on (0.5, 0.5):
    # both have MI 0, but the classifier's answers are spread (H = ln 2)
    lalm = np.array([[[1, 0], [1, 0]]], float)
    clf = np.array([[[0.5, 0.5], [0.5, 0.5]]])
    by_mi = fuse([lalm, clf], uncertainty="mi", relative=False)
    np.testing.assert_allclose(by_mi.weights, [[0.5, 0.5]])
    np.testing.assert_allclose(by_mi.target, [[0.75, 0.25]])
    by_h = fuse([lalm, clf], relative=False)
    r = 2 ** (-1 / 0.3)
    np.testing.assert_allclose(by_h.weights, [[1 / (1 + r), r / (1 + r)]])
    np.testing.assert_allclose(by_h.uncertainty, [[0.0, LN2]])
    np.testing.assert_allclose(by_h.mi, [[0.0, 0.0]])
    with pytest.raises(ValueError):
        fuse([lalm], uncertainty="variance")


def test_fuse_covers_every_clip_some_teacher_has():
    lalm = np.array([[[NAN, NAN], [NAN, NAN]], [[0, 1], [0, 1]], [[NAN, NAN], [NAN, NAN]]])
    clf = np.array([[[0.8, 0.2]] * 3, [[0.6, 0.4]] * 3, [[NAN, NAN]] * 3])
    f = fuse([lalm, clf], relative=False)
    np.testing.assert_array_equal(f.covered, [True, True, False])
    np.testing.assert_allclose(f.target[0], [0.8, 0.2])  # only the classifier has clip 0
    np.testing.assert_allclose(f.weights[0], [0, 1])
    r = math.exp(-entropy(np.array([0.6, 0.4])) / 0.3)  # LALM unanimous (H 0) vs H(0.6, 0.4)
    np.testing.assert_allclose(f.weights[1], [1 / (1 + r), r / (1 + r)])
    np.testing.assert_allclose(f.target[1], [0.6 * r / (1 + r), (1 + 0.4 * r) / (1 + r)])
    assert np.all(np.isnan(f.target[2]))
    np.testing.assert_allclose(f.weights[2], [0, 0])
    assert not np.isnan(f.target[:2]).any()
    np.testing.assert_allclose(f.target[:2].sum(axis=1), 1.0)


def test_fuse_different_k_and_shape_errors():
    f = fuse([np.full((2, 3, 4), 0.25), np.full((2, 7, 4), 0.25)])
    np.testing.assert_allclose(f.target, 0.25)
    with pytest.raises(ValueError):
        fuse([np.full((2, 3, 4), 0.25), np.full((3, 3, 4), 0.25)])
    with pytest.raises(ValueError):
        fuse([])


def test_sharpen():
    t = np.array([[0.75, 0.25], [NAN, NAN]])
    s = sharpen(t, 0.5)
    np.testing.assert_allclose(s[0], [0.9, 0.1])  # 0.75^2 / (0.75^2 + 0.25^2)
    assert np.isnan(s[1]).all()
    np.testing.assert_allclose(sharpen(t[:1], 1.0), t[:1])


def test_fusion_stats():
    a = np.array([[[1, 0], [1, 0]], [[0, 1], [0, 1]]], float)
    b = np.array([[[1, 0], [1, 0]], [[0.8, 0.2]] * 2], float)
    st = fusion_stats(fuse([a, b], uncertainty="mi"), ["lalm", "classifier"])
    assert st["covered"] == 2
    assert st["agreement"] == pytest.approx(0.5)  # clip 0 both say class 0; clip 1: 1 vs 0
    assert st["teachers"]["lalm"]["mean_weight"] == pytest.approx(0.5)  # every MI is 0
    assert st["teachers"]["classifier"]["mean_mi"] == pytest.approx(0.0)


def test_coverage_weights_by_hand():
    covers = np.array([[True, True], [False, True], [True, False], [False, False]])
    assert np.allclose(coverage_weights(covers), [1.0, 0.5, 0.5, 0.0])
    # an LALM trusted 0.9 (prior from the referee's kappas), the EMA teacher 0.1; the prior need not sum to 1
    assert np.allclose(coverage_weights(covers, np.array([9.0, 1.0])), [1.0, 0.1, 0.9, 0.0])
    for bad in (np.array([1.0]), np.array([-1.0, 2.0]), np.array([0.0, 0.0]), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError, match="prior"):
            coverage_weights(covers, bad)
    with pytest.raises(ValueError, match="covers"):
        coverage_weights(np.ones(3, bool))


def test_class_prior_is_the_mean_target_with_a_uniform_floor():
    t = np.array([[0.6, 0.4, 0.0], [1.0, 0.0, 0.0], [NAN, NAN, NAN]])  # mean of the labelled rows: (0.8, 0.2, 0)
    assert class_prior(t, floor=0.0) == pytest.approx([0.8, 0.2, 0.0])
    assert class_prior(t, floor=0.3) == pytest.approx([0.7 * 0.8 + 0.1, 0.7 * 0.2 + 0.1, 0.1])
    assert class_prior(t).sum() == pytest.approx(1.0) and class_prior(t).min() > 0  # default floor keeps every class
    assert class_prior(np.full((2, 4), NAN)) == pytest.approx([0.25] * 4)  # nothing labelled: uniform
    with pytest.raises(ValueError, match="floor"):
        class_prior(t, floor=1.5)
