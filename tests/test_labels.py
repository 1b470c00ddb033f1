"""Vote aggregation on hand-made vote tables."""

from pathlib import Path

import numpy as np
import pytest

from edgeser import labels as L
from edgeser.errors import ManifestError
from edgeser.manifest import Clip, read_manifest

# 5 clips, 3 classes
VOTES = np.array(
    [
        [3, 1, 0],  # clear majority for 0 (3 > 4/2)
        [2, 2, 0],  # tie, no majority
        [2, 1, 1],  # exactly half is not a majority
        [1, 1, 1],  # three-way tie
        [0, 0, 5],  # unanimous 2
    ]
)


def test_majority_rule():
    keep, hard = L.majority_rule(VOTES)
    assert keep.tolist() == [True, False, False, False, True]
    assert hard.tolist() == [0, -1, -1, -1, 2]


def test_majority_rule_drops_clip_without_votes():
    keep, hard = L.majority_rule(np.array([[0, 0], [1, 0]]))
    assert keep.tolist() == [False, True] and hard.tolist() == [-1, 0]


def test_plurality_rule_keeps_ties():
    assert L.plurality_rule(VOTES).tolist() == [
        [1, 0, 0],
        [1, 1, 0],
        [1, 0, 0],
        [1, 1, 1],
        [0, 0, 1],
    ]


def test_all_inclusive_rule():
    expected = [[0.75, 0.25, 0.0], [0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [1 / 3] * 3, [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(L.all_inclusive_rule(VOTES), expected)


def test_rules_reject_clips_without_votes():
    for rule in (L.all_inclusive_rule, L.plurality_rule, L.soft_targets, L.multi_hot):
        with pytest.raises(ValueError, match="no votes"):
            rule(np.array([[1, 2, 0], [0, 0, 0]]))
    with pytest.raises(ValueError):
        L.all_inclusive_rule(np.array([[1, -1, 0]]))
    with pytest.raises(ValueError):
        L.all_inclusive_rule(np.zeros((0, 3)))


def test_soft_targets_smoothing():
    np.testing.assert_allclose(L.soft_targets(VOTES[:1]), [[0.75, 0.25, 0.0]])
    # 0.7 * [.75, .25, 0] + 0.3 / 3
    np.testing.assert_allclose(L.soft_targets(VOTES[:1], smoothing=0.3), [[0.625, 0.275, 0.1]])


def test_multi_hot():
    # default min_share 1/3
    assert L.multi_hot(VOTES).tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]]
    # 0.25: a share of exactly 1/4 counts
    assert L.multi_hot(VOTES, 0.25).tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1], [0, 0, 1]]
    # a threshold no class reaches still keeps the top class(es)
    assert L.multi_hot(VOTES, 0.9).tolist() == L.plurality_rule(VOTES).tolist()


def test_cooccurrence_penalty_hand_computed():
    # shares [.75,.25,0], [.5,.5,0], [0,0,1]; D = [1.25, .75, 1]; A_01 = .1875 + .25 = .4375
    # Q_01 = .4375/1.25 = 7/20, Q_10 = .4375/.75 = 7/12 -> P_01 = 1 - (7/20 + 7/12)/2 = 8/15
    p = L.cooccurrence_penalty(np.array([[3, 1, 0], [2, 2, 0], [0, 0, 4]]))
    np.testing.assert_allclose(p, [[0, 8 / 15, 1], [8 / 15, 0, 1], [1, 1, 0]])


def test_cooccurrence_penalty_ordering_and_range():
    # 0 and 1 co-occur often, 0 and 2 once, 1 and 2 never
    votes = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 4], [2, 0, 2]])
    p = L.cooccurrence_penalty(votes)
    # D = [1.75, .75, 1.5]; A_01 = .4375, A_02 = .25
    # P_01 = 1 - (1/4 + 7/12)/2 = 7/12; P_02 = 1 - (1/7 + 1/6)/2 = 71/84; P_12 = 1
    assert p[0, 1] == pytest.approx(7 / 12)
    assert p[0, 2] == pytest.approx(71 / 84)
    assert p[1, 2] == pytest.approx(1.0)
    assert p[0, 1] < p[0, 2] < p[1, 2]
    np.testing.assert_allclose(p, p.T)
    assert np.all(np.diag(p) == 0)
    off = p[~np.eye(3, dtype=bool)]
    assert np.all((off > 0) & (off <= 1))
    # distributions give the same matrix as counts
    np.testing.assert_allclose(L.cooccurrence_penalty(L.all_inclusive_rule(votes)), p)


def test_cooccurrence_penalty_stays_positive_at_maximal_cooccurrence():
    # every clip split evenly: Q_01 = .25 / .5 = 1/2 -> P_01 = 1/2, never 0
    p = L.cooccurrence_penalty(np.array([[1, 1], [3, 3]]))
    np.testing.assert_allclose(p, [[0, 0.5], [0.5, 0]])


def test_listener_soft_target():
    np.testing.assert_allclose(L.listener_soft_target(2, 80, 5), [0.05, 0.05, 0.8, 0.05, 0.05])
    np.testing.assert_allclose(L.listener_soft_target([0, 1], [100, 40], 3), [[1.0, 0.0, 0.0], [0.3, 0.4, 0.3]])
    with pytest.raises(ValueError):
        L.listener_soft_target(0, 120, 3)
    with pytest.raises(ValueError):
        L.listener_soft_target(3, 50, 3)


def test_votes_from_manifest(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,votes_angry,votes_sad\na.wav,angry,3,1\nb.wav,sad,0,2.5\n")
    clips = read_manifest(csv)
    np.testing.assert_allclose(L.votes_from_manifest(clips, ["angry", "sad"]), [[3, 1], [0, 2.5]])
    with pytest.raises(ManifestError, match="votes_happy"):
        L.votes_from_manifest(clips, ["angry", "happy", "sad"])


def test_votes_from_manifest_bad_cells():
    clip = Clip(path=Path("x.wav"), extra={"votes_a": "two", "votes_b": "1"})
    with pytest.raises(ManifestError, match="votes_a"):
        L.votes_from_manifest([clip], ["a", "b"])
    clip = Clip(path=Path("x.wav"), extra={"votes_a": "-1", "votes_b": "1"})
    with pytest.raises(ManifestError, match="non-negative"):
        L.votes_from_manifest([clip], ["a", "b"])


def test_votes_from_samples():
    nan = np.nan
    samples = np.array(
        [
            [[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [nan, nan, nan]],  # votes 0, 1; NaN skipped
            [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.1, 0.2, 0.7]],  # tie split 0.5/0.5, then 2, 2
            [[nan, nan, nan]] * 3,  # no usable answer -> zeros
        ]
    )
    np.testing.assert_allclose(L.votes_from_samples(samples), [[1, 1, 0], [0.5, 0.5, 2], [0, 0, 0]])
