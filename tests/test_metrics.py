"""Metrics on small cases whose expected values are worked out by hand in the comments."""

import json
import math

import numpy as np
import pytest

from edgeser import metrics as M

# 3 classes, 10 clips.
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 0, 2, 2, 2, 1])
# rows = reference, columns = prediction
CM = [[2, 1, 1], [1, 1, 0], [0, 1, 3]]


def test_confusion_matrix_hand_counted():
    assert M.confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == CM


def test_recall_ua_wa_macro_f1_hand_computed():
    # recall: class 0 2/4, class 1 1/2, class 2 3/4
    assert M.per_class_recall(Y_TRUE, Y_PRED, 3) == {0: 0.5, 1: 0.5, 2: 0.75}
    # UA = (0.5 + 0.5 + 0.75) / 3
    assert M.unweighted_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx(1.75 / 3)
    # WA = (2 + 1 + 3) / 10
    assert M.weighted_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx(0.6)
    # F1 = 2TP / (2TP + FP + FN): class 0 4/7, class 1 2/5, class 2 6/8 -> mean 241/420
    assert M.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx(241 / 420)


def test_ua_and_macro_f1_average_only_classes_present_in_reference():
    # 4 classes, class 3 ("neutral") never in the reference but predicted once.
    y_true = np.array([0, 0, 1, 2])
    y_pred = np.array([0, 3, 1, 1])
    assert M.per_class_recall(y_true, y_pred, 4) == {0: 0.5, 1: 1.0, 2: 0.0}
    # mean over 3 present classes, not 4: (0.5 + 1 + 0) / 3
    assert M.unweighted_accuracy(y_true, y_pred, 4) == pytest.approx(0.5)
    # F1: class 0 2/3 (TP1 FN1), class 1 2/3 (TP1 FP1), class 2 0 -> (4/3) / 3
    assert M.macro_f1(y_true, y_pred, 4) == pytest.approx(4 / 9)
    assert M.weighted_accuracy(y_true, y_pred, 4) == pytest.approx(0.5)


def test_decision_metrics_accept_rows():
    # soft reference rows -> argmax [0, 1]; probability rows -> argmax [0, 0]
    ref = np.array([[0.6, 0.4], [0.3, 0.7]])
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert M.confusion_matrix(ref, probs, 2).tolist() == [[1, 0], [1, 0]]
    assert M.unweighted_accuracy(ref, probs) == pytest.approx(0.5)


def test_nll_hard_and_soft():
    p = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    # (-ln 0.5 - ln 0.8) / 2
    assert M.nll(p, [0, 1]) == pytest.approx((0.6931471806 + 0.2231435513) / 2)
    # soft row [0.5, 0.5, 0] on [0.5, 0.25, 0.25]: 0.5 ln2 + 0.5 ln4 = 1.5 ln 2
    assert M.nll(p[:1], np.array([[0.5, 0.5, 0.0]])) == pytest.approx(1.5 * 0.6931471806)


def test_nll_clips_zero_probability():
    v = M.nll(np.array([[1.0, 0.0]]), [1])
    assert math.isfinite(v) and v == pytest.approx(-math.log(1e-12))


def test_brier_one_row():
    p = np.array([[0.7, 0.2, 0.1]])
    # hard: 0.3^2 + 0.2^2 + 0.1^2 = 0.14
    assert M.brier(p, [0]) == pytest.approx(0.14)
    # soft [0.6, 0.2, 0.2]: 0.1^2 + 0 + 0.1^2 = 0.02
    assert M.brier(p, np.array([[0.6, 0.2, 0.2]])) == pytest.approx(0.02)


# Four predictions: confidence / correct
#   a 0.95 yes, b 0.92 no, c 0.65 yes, d 0.55 no
ECE_PROBS = np.array([[0.95, 0.05], [0.92, 0.08], [0.35, 0.65], [0.45, 0.55]])
ECE_LABELS = np.array([0, 1, 1, 0])


def test_ece_on_four_predictions():
    # 10 bins: a, b share (0.9, 1] -> acc 0.5, conf 0.935, gap 0.435, weight 2/4
    #          c in (0.6, 0.7] gap 0.35; d in (0.5, 0.6] gap 0.55; weight 1/4 each
    assert M.ece(ECE_PROBS, ECE_LABELS, n_bins=10) == pytest.approx(0.5 * 0.435 + 0.25 * 0.35 + 0.25 * 0.55)
    # 15 bins: a (14/15, 1] gap 0.05, b (13/15, 14/15] gap 0.92 -> 0.25 * (0.05 + 0.92 + 0.35 + 0.55)
    assert M.ece(ECE_PROBS, ECE_LABELS) == pytest.approx(0.4675)
    # 1 bin: |mean accuracy - mean confidence| = |0.5 - 0.7675|
    assert M.ece(ECE_PROBS, ECE_LABELS, n_bins=1) == pytest.approx(0.2675)


def test_reliability_bins():
    r = M.reliability_bins(ECE_PROBS, ECE_LABELS, n_bins=10)
    assert r["edges"] == pytest.approx(np.linspace(0, 1, 11))
    assert r["count"] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    assert r["accuracy"][9] == pytest.approx(0.5) and r["confidence"][9] == pytest.approx(0.935)
    assert r["accuracy"][5] == 0.0 and r["confidence"][5] == pytest.approx(0.55)
    assert r["accuracy"][6] == 1.0 and r["confidence"][6] == pytest.approx(0.65)
    assert r["accuracy"][0] == 0.0 and r["confidence"][0] == 0.0  # empty bin: 0, not NaN
    json.dumps(r)


def test_reliability_bins_edges_belong_to_lower_bin():
    # bins (b/4, (b+1)/4]: 0.5 -> (.25,.5], 0.75 -> (.5,.75], 1.0 -> (.75,1]
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    assert M.reliability_bins(probs, [0, 0, 0], n_bins=4)["count"] == [0, 1, 1, 1]


def test_js_divergence_known_values():
    # disjoint supports: 1 bit
    assert M.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    # [1,0] vs [.5,.5]: m = [.75,.25]; KL(p||m) = log2(4/3) = 0.4150375,
    # KL(q||m) = .5 log2(2/3) + .5 log2(2) = 0.2075187; JS = 0.3112781
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.2, 0.8]])
    q = np.array([[0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    rows = M.js_divergence(p, q, per_row=True)
    assert rows == pytest.approx([1.0, 0.3112781, 0.0], abs=1e-7)
    assert M.js_divergence(p, q) == pytest.approx((1.0 + 0.3112781) / 3, abs=1e-7)


def test_multilabel_f1_macro_and_micro():
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    ref = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    # per class: 0 -> TP1 -> 1; 1 -> TP1 FP1 -> 2/3; 2 -> TP1 FN1 -> 2/3
    assert M.multilabel_f1(pred, ref) == pytest.approx(7 / 9)
    # pooled TP3 FP1 FN1 -> 6/8
    assert M.multilabel_f1(pred, ref, average="micro") == pytest.approx(0.75)


PROBS = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
SOFT = np.array([[0.5, 0.4, 0.1], [0.1, 0.6, 0.3]])
LABELS = ["angry", "happy", "sad"]


def test_evaluate_soft_reference_hand_computed():
    m = M.evaluate(PROBS, LABELS, SOFT)
    # hard reference [0, 1], prediction [0, 2]
    assert m["n"] == 2
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert m["per_class_recall"] == {"angry": 1.0, "happy": 0.0}  # "sad" absent from reference
    assert m["ua"] == pytest.approx(0.5) and m["wa"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(0.5)  # angry 1, happy 0
    # cross-entropy: row 1 -(.5 ln.6 + .4 ln.3 + .1 ln.1) = 0.9672604,
    #                row 2 -(.7 ln.2 + .3 ln.6) = 1.2798542
    assert m["nll"] == pytest.approx((0.9672604 + 1.2798542) / 2, abs=1e-6)
    # Brier: row 1 .01+.01+0 = .02, row 2 .01+.16+.09 = .26
    assert m["brier"] == pytest.approx(0.14)
    # both confidences 0.6 in one bin: accuracy 0.5 -> ECE 0.1
    assert m["ece"] == pytest.approx(0.1)
    # JS in bits, row 2: m = [.15, .4, .45]; KL(p||m) = .8 log2(4/3) - .2 = 0.1320300,
    # KL(q||m) = .2 log2(3/2) = 0.1169925 -> 0.1245112; row 1 likewise 0.0084535
    assert m["js"] == pytest.approx((0.0084535 + 0.1245112) / 2, abs=1e-6)
    # multi-hot at 1/3 (or the max): pred {0},{2}; ref {0,1},{1}. Ref classes 0, 1:
    # F1 angry 1, happy 0 -> 0.5 (sad: predicted only, not averaged)
    assert m["multilabel_f1"] == pytest.approx(0.5)
    json.dumps(m, allow_nan=False)


def test_evaluate_multilabel_threshold():
    # at 0.25: pred {0,1},{2}; ref {0,1},{1,2} -> angry 1, happy 2/3, sad 1
    m = M.evaluate(PROBS, LABELS, SOFT, multilabel_threshold=0.25)
    assert m["multilabel_f1"] == pytest.approx(8 / 9)


def test_evaluate_hard_reference_has_no_soft_keys():
    m = M.evaluate(PROBS, LABELS, np.array([0, 2]))
    assert m["ua"] == pytest.approx(1.0) and m["wa"] == pytest.approx(1.0)
    assert "js" not in m and "multilabel_f1" not in m
    assert set(m) == {"n", "ua", "wa", "macro_f1", "per_class_recall", "confusion_matrix", "nll", "brier", "ece"}
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.confusion_matrix([], [], 3),
        lambda: M.unweighted_accuracy(np.array([], dtype=int), np.array([], dtype=int), 3),
        lambda: M.nll(np.zeros((0, 3)), []),
        lambda: M.brier(np.zeros((0, 3)), np.zeros((0, 3))),
        lambda: M.ece(np.zeros((0, 3)), []),
        lambda: M.js_divergence(np.zeros((0, 3)), np.zeros((0, 3))),
        lambda: M.multilabel_f1(np.zeros((0, 3)), np.zeros((0, 3))),
        lambda: M.evaluate(np.zeros((0, 3)), LABELS, []),
    ],
)
def test_empty_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_bad_input_raises():
    with pytest.raises(ValueError):
        M.nll(np.array([[0.5, 0.6]]), [0])  # row does not sum to 1
    with pytest.raises(ValueError):
        M.brier(np.array([[0.5, 0.5]]), [0, 1])  # length mismatch
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 3], [0, 1], 3)  # label out of range
    with pytest.raises(ValueError):
        M.evaluate(PROBS, ["a", "b"], SOFT)  # wrong number of labels
    with pytest.raises(ValueError):
        M.nll(np.array([[np.nan, 1.0]]), [0])
