"""Teacher reliability (edgeser.adapt.reliability) and the fusion prior: known values."""

import numpy as np
import pytest

from edgeser.adapt.fusion import fuse, teacher_weights
from edgeser.adapt.reliability import (
    cohen_kappa,
    crossfit_predict,
    reliability_prior,
    ridge_fit,
    ridge_predict,
    teacher_kappas,
)


def test_cohen_kappa_known_values():
    assert cohen_kappa([0, 1, 2, 3], [0, 1, 2, 3], 4) == 1.0
    # independent halves: p_o = 0.5 = p_e
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 0, 1], 2) == 0.0
    # p_o = 0.75, p_a = p_b = (0.5, 0.5): p_e = 0.5, kappa = 0.5
    assert cohen_kappa([0, 0, 1, 1], [0, 0, 1, 0], 2) == pytest.approx((0.75 - 0.5) / 0.5)
    # systematic disagreement is below chance
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0], 2) == -1.0
    # both constant on the same class: chance agreement is 1, no evidence
    assert cohen_kappa([2, 2, 2], [2, 2, 2], 3) == 0.0
    assert np.isnan(cohen_kappa([], [], 3))
    with pytest.raises(ValueError):
        cohen_kappa([0, 1], [0], 2)


def test_reliability_prior_by_hand():
    np.testing.assert_allclose(reliability_prior(np.array([0.6, 0.2])), [0.36 / 0.4, 0.04 / 0.4])
    np.testing.assert_allclose(reliability_prior(np.array([0.6, 0.2]), power=1.0), [0.75, 0.25])
    # below chance or missing -> 0; no evidence at all -> uniform
    np.testing.assert_allclose(reliability_prior(np.array([0.5, -0.2, np.nan])), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(reliability_prior(np.array([-0.1, np.nan])), [0.5, 0.5])
    with pytest.raises(ValueError):
        reliability_prior(np.array([0.5]), power=0)


def test_ridge_recovers_a_linear_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = ridge_fit(x, y, 2, ridge=1.0)
    assert (ridge_predict(model, x).argmax(axis=1) == y).mean() > 0.9


def test_crossfit_never_sees_the_clip_it_predicts():
    """Labels that are pure per-clip noise cannot be predicted from features when the clip's own label is
    held out; an in-sample fit of the same model memorises much of them."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 60))
    y = rng.integers(0, 2, 120)
    held_out = crossfit_predict(x, y, np.ones(120, bool), 2, ridge=1e-3)
    in_sample = ridge_predict(ridge_fit(x, y, 2, ridge=1e-3), x).argmax(axis=1)
    assert (in_sample == y).mean() > 0.75
    assert abs(cohen_kappa(held_out, y, 2)) < 0.25


def test_crossfit_predicts_unlabelled_clips_and_needs_two_labels():
    x = np.array([[0.0], [0.1], [1.0], [1.1], [0.05], [1.05]])
    y = np.array([0, 0, 1, 1, 0, 0])
    labelled = np.array([True, True, True, True, False, False])
    p = crossfit_predict(x, y, labelled, 2, folds=2, ridge=1e-3)
    assert p[4] == 0 and p[5] == 1  # the unlabelled ones, from all four labels
    with pytest.raises(ValueError, match="at least 2"):
        crossfit_predict(x, y, np.eye(6, dtype=bool)[0], 2)


def test_the_referee_ranks_a_teacher_whose_mistakes_are_noise_above_one_that_ignores_the_audio():
    """The premise of the estimator on synthetic data: the truth follows the features, teacher A is right
    on 80 % of clips (mistakes at random), teacher B on 40 %. The referee is fitted to A's labels only,
    yet B's kappa is far lower than A's and the prior gives A most of the weight."""
    rng = np.random.default_rng(2)
    n, c = 400, 4
    x = rng.normal(size=(n, 8))
    truth = np.argmax(x[:, :c], axis=1)

    def noisy(acc):
        wrong = rng.random(n) > acc
        return np.where(wrong, (truth + rng.integers(1, c, n)) % c, truth)

    a, b = noisy(0.8), noisy(0.4)
    referee = crossfit_predict(x, a, np.ones(n, bool), c)
    assert (referee == truth).mean() > (a == truth).mean()  # the referee denoises A
    means = np.stack([np.eye(c)[a], np.eye(c)[b]], axis=1)
    k = teacher_kappas(referee, means, c)
    assert k[0] > 0.5 and k[1] < 0.35
    assert reliability_prior(k)[0] > 0.75


def test_teacher_kappas_skip_missing_rows():
    means = np.full((4, 2, 2), np.nan)
    means[:, 0] = np.eye(2)[[0, 1, 0, 1]]
    means[:2, 1] = np.eye(2)[[1, 0]]
    k = teacher_kappas(np.array([0, 1, 0, 1]), means, 2)
    assert k[0] == 1.0 and k[1] == pytest.approx(-1.0)


def test_prior_scales_weights_by_hand():
    u = np.array([[0.0, 0.0], [0.0, np.nan]])
    w = teacher_weights(u, "equal", prior=np.array([0.75, 0.25]))
    np.testing.assert_allclose(w, [[0.75, 0.25], [1.0, 0.0]])
    # a clip whose covering teachers all have prior 0 keeps its own weights
    w = teacher_weights(np.array([[np.nan, 0.0]]), "equal", prior=np.array([1.0, 0.0]))
    np.testing.assert_allclose(w, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="prior"):
        teacher_weights(u, "equal", prior=np.array([1.0]))


def test_fuse_with_prior_moves_the_target_to_the_trusted_teacher():
    a = np.eye(3)[[0, 0]][:, None, :]  # teacher A says class 0, one sample per clip
    b = np.eye(3)[[1, 1]][:, None, :]  # teacher B says class 1
    even = fuse([a, b], "equal")
    np.testing.assert_allclose(even.target[0], [0.5, 0.5, 0.0])
    skewed = fuse([a, b], "equal", prior=np.array([0.9, 0.1]))
    np.testing.assert_allclose(skewed.target[0], [0.9, 0.1, 0.0])
