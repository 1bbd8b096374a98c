"""predictor/metrics.py against hand-computed values."""

import numpy as np
import pytest

from predictor import metrics as m


def case():
    """2 samples, 2 modes, 2 steps. Truth of sample 0: (0,0) then (0,0); sample 1: (10,0),
    (20,0)."""
    gt = np.array([[[0.0, 0.0], [0.0, 0.0]], [[10.0, 0.0], [20.0, 0.0]]])
    pred = np.array([
        [[[3.0, 4.0], [6.0, 8.0]],     # s0 mode 0: errors 5, 10
         [[1.0, 0.0], [0.0, 3.0]]],    # s0 mode 1: errors 1, 3
        [[[10.0, 1.0], [23.0, 0.0]],   # s1 mode 0: errors 1, 3
         [[14.0, 3.0], [20.0, 2.0]]],  # s1 mode 1: errors 5, 2
    ])
    prob = np.array([[0.7, 0.3], [0.5, 0.5]])  # s1 tie -> mode 0 (lowest index)
    return pred, prob, gt


def test_top_mode_and_single_mode_metrics():
    pred, prob, gt = case()
    top = m.top_mode(pred, prob)
    assert np.array_equal(top, pred[:, 0])
    np.testing.assert_allclose(m.ade(top, gt), [7.5, 2.0])
    np.testing.assert_allclose(m.fde(top, gt), [10.0, 3.0])


def test_min_of_k_picks_per_metric():
    pred, prob, gt = case()
    # s1: min ADE is mode 0 (2.0 vs 3.5) but min FDE is mode 1 (2 vs 3)
    np.testing.assert_allclose(m.min_ade_k(pred, gt), [2.0, 2.0])
    np.testing.assert_allclose(m.min_fde_k(pred, gt), [3.0, 2.0])
    assert m.miss(pred, gt).tolist() == [True, False]
    assert m.miss(pred, gt, miss_threshold_m=3.0).tolist() == [False, False]


def test_rmse_at_whole_seconds():
    dt = 0.5
    gt = np.zeros((2, 6, 2))
    pred = np.zeros((2, 6, 2))
    pred[0, 1] = [3.0, 4.0]   # 1 s: errors 5 and 1 -> sqrt((25 + 1) / 2)
    pred[1, 1] = [1.0, 0.0]
    pred[0, 3] = [2.0, 0.0]   # 2 s: errors 2 and 0 -> sqrt(2)
    pred[:, 5] = [0.0, 3.0]   # 3 s: 3
    assert m.whole_second_steps(6, dt) == {1: 1, 2: 3, 3: 5}
    out = m.rmse_at(pred, gt, dt)
    assert out == pytest.approx({1: np.sqrt(13.0), 2: np.sqrt(2.0), 3: 3.0})


def test_whole_seconds_at_ngsim_rate():
    steps = m.whole_second_steps(50, 0.1)
    assert steps == {1: 9, 2: 19, 3: 29, 4: 39, 5: 49}
    assert m.whole_second_steps(5, 0.1) == {}


def test_gaussian_nll_hand_value():
    pred = np.zeros((1, 1, 2))
    gt = np.array([[[1.0, 0.0]]])
    sigma = np.ones((1, 1, 2))
    # x: 0.5 * 1 + log 1 + 0.5 log 2pi; y: 0 + 0.5 log 2pi
    np.testing.assert_allclose(m.gaussian_nll(pred, sigma, gt), [0.5 + np.log(2 * np.pi)])
