"""Baselines: exact on the motions they assume, sane elsewhere, vectorised over samples."""

import numpy as np
import pytest

from predictor import metrics
from predictor.baselines import (
    N_HYPOTHESES,
    ConstantAcceleration,
    ConstantTurnRateVelocity,
    ConstantVelocity,
    KalmanFilter,
    MultiModalCV,
)
from predictor.registry import make_predictor, parse_predictor_list, predictor_names
from sim.forecast import History, empty_neighbors

DT = 0.1


def history_from_path(xy: np.ndarray, vxy: np.ndarray, heading: np.ndarray | None = None,
                      valid: np.ndarray | None = None) -> History:
    """A History from (S, H, 2) positions and velocities."""
    s, h = xy.shape[:2]
    if heading is None:
        heading = np.arctan2(vxy[..., 1], vxy[..., 0])
    if valid is None:
        valid = np.ones((s, h), bool)
    xy, vxy, heading = xy.copy(), vxy.copy(), heading.copy()
    xy[~valid], vxy[~valid], heading[~valid] = np.nan, np.nan, np.nan
    return History(xy=xy, vxy=vxy, heading=heading, valid=valid, length=np.full(s, 4.5),
                   width=np.full(s, 1.8), kind=np.zeros(s, np.int8), ids=np.arange(s),
                   t_s=np.zeros(s), **empty_neighbors(s, h), dt_s=DT)


def motion(kind: str, n_hist=20, n_fut=30, s=4):
    """Sampled trajectories: constant velocity, constant acceleration or a circle, for s
    samples with different speeds and directions. Returns (History, future (S, F, 2))."""
    t = DT * np.arange(-n_hist, n_fut + 1)
    speed = np.linspace(10.0, 30.0, s)[:, None]
    psi = np.linspace(-2.0, 2.5, s)[:, None]
    if kind == "cv":
        d = speed * t
        xy = np.stack([d * np.cos(psi), d * np.sin(psi)], -1)
        v = np.stack([speed * np.cos(psi), speed * np.sin(psi)], -1) * np.ones_like(t)[..., None]
    elif kind == "ca":
        acc = np.linspace(-1.0, 1.5, s)[:, None]
        # speed stays positive: starts at speed - acc * 2 s
        d = speed * t + 0.5 * acc * t ** 2
        sp = speed + acc * t
        xy = np.stack([d * np.cos(psi), d * np.sin(psi)], -1)
        v = np.stack([sp * np.cos(psi), sp * np.sin(psi)], -1)
    else:
        omega = np.linspace(-0.25, 0.3, s)[:, None]  # never 0
        ang = psi + omega * t
        xy = np.stack([speed / omega * (np.sin(ang) - np.sin(psi)),
                       speed / omega * (np.cos(psi) - np.cos(ang))], -1)
        v = np.stack([speed * np.cos(ang), speed * np.sin(ang)], -1)
    xy = xy + np.array([100.0, -50.0])
    hist = history_from_path(xy[:, : n_hist + 1], v[:, : n_hist + 1])
    return hist, xy[:, n_hist + 1:]


@pytest.mark.parametrize("kind,predictor", [
    ("cv", ConstantVelocity()), ("ca", ConstantAcceleration()),
    ("ctrv", ConstantTurnRateVelocity()), ("cv", ConstantTurnRateVelocity()),
    ("cv", ConstantAcceleration()),
])
def test_exact_on_the_motion_assumed(kind, predictor):
    hist, fut = motion(kind)
    pred = predictor.predict(hist, fut.shape[1])
    assert pred.xy.shape == (4, 1, 30, 2) and np.allclose(pred.prob, 1.0)
    np.testing.assert_allclose(pred.xy[:, 0], fut, atol=1e-6)


def test_ca_exact_with_lateral_acceleration():
    # a lane-change-like sideways acceleration must not be read as braking to a stop
    t = DT * np.arange(-20, 31)
    a_lat = np.array([1.0, -0.8])[:, None]
    xy = np.stack([25.0 * t + 0 * a_lat, 0.5 * a_lat * (t + 2.0) ** 2], -1)
    v = np.stack([25.0 + 0 * a_lat * t, a_lat * (t + 2.0)], -1)
    hist = history_from_path(xy[:, :21], v[:, :21])
    pred = ConstantAcceleration().predict(hist, 30)
    np.testing.assert_allclose(pred.xy[:, 0], xy[:, 21:], atol=1e-6)


def test_cv_is_not_exact_on_a_turn():
    hist, fut = motion("ctrv")
    err = metrics.fde(ConstantVelocity().predict(hist, 30).xy[:, 0], fut)
    assert err.max() > 1.0


def test_ca_does_not_reverse():
    hist, _ = motion("ca")
    # strong braking: 10 m/s at -5 m/s^2 stops after 2 s, 10 m further
    t = DT * np.arange(-20, 1)
    sp = 10.0 - 5.0 * t
    xy = np.stack([10.0 * t - 2.5 * t ** 2, np.zeros_like(t)], -1)[None]
    v = np.stack([sp, np.zeros_like(t)], -1)[None]
    pred = ConstantAcceleration().predict(history_from_path(xy, v), 40).xy[0, 0]
    assert np.all(np.diff(pred[:, 0]) >= -1e-12)
    np.testing.assert_allclose(pred[-1], [10.0, 0.0], atol=1e-9)


def test_kalman_on_constant_velocity_is_near_exact_and_uncertainty_grows():
    hist, fut = motion("cv")
    pred = KalmanFilter(sigma_pos_m=0.01).predict(hist, 30)
    np.testing.assert_allclose(pred.xy[:, 0], fut, atol=0.02)
    sig = pred.sigma_m[:, 0]
    assert (np.diff(sig[..., 0], axis=1) > 0).all() and (np.diff(sig[..., 1], axis=1) > 0).all()


def test_kalman_partial_histories_and_lateral_vs_longitudinal_noise():
    hist, fut = motion("cv", s=3)
    valid = np.ones(hist.valid.shape, bool)
    valid[1, :15] = False
    valid[2, :-1] = False  # only the current step
    xy, vxy = hist.xy.copy(), hist.vxy.copy()
    h2 = history_from_path(xy, vxy, valid=valid)
    pred = KalmanFilter().predict(h2, 30)
    np.testing.assert_allclose(pred.xy[:, 0], fut, atol=0.05)
    # more past, less uncertainty (total variance: invariant to the sample's direction)
    total = (pred.sigma_m[:, 0, -1] ** 2).sum(-1)
    assert total[0] < total[1] < total[2]
    # heading along +x: the x (longitudinal) spread exceeds the y (lateral) one
    h3, _ = motion("cv", s=1)
    h3 = history_from_path(np.stack([np.arange(21) * 2.0, np.zeros(21)], -1)[None],
                           np.tile([20.0, 0.0], (1, 21, 1)))
    sig = KalmanFilter(sigma_lon_mps2=1.0, sigma_lat_mps2=0.2).predict(h3, 30).sigma_m[0, 0]
    assert sig[-1, 0] > 2 * sig[-1, 1]


def test_kalman_fit_lowers_the_training_nll():
    rng = np.random.default_rng(0)
    hist, fut = motion("ca", s=40)
    noisy = history_from_path(hist.xy + rng.normal(0, 0.3, hist.xy.shape), hist.vxy)
    base = KalmanFilter(sigma_lon_mps2=0.1, sigma_pos_m=0.01)
    fitted = base.fitted(noisy, fut)

    def nll(kf):
        p = kf.predict(noisy, 30)
        return metrics.gaussian_nll(p.xy[:, 0], p.sigma_m[:, 0], fut).mean()

    assert nll(fitted) < nll(base) - 0.5
    assert fitted.sigma_pos_m > base.sigma_pos_m


def test_multimodal_cv_modes_probabilities_and_fit():
    hist, fut = motion("cv")
    mm = MultiModalCV(k=6)
    pred = mm.predict(hist, 30)
    assert pred.xy.shape == (4, 6, 30, 2)
    np.testing.assert_allclose(pred.prob.sum(1), 1.0)
    # the most probable hypothesis on straight steady motion is plain CV
    np.testing.assert_allclose(pred.top(), ConstantVelocity().predict(hist, 30).xy[:, 0])
    # a true lane change to the left is caught by one of the modes
    t = DT * np.arange(1, 31)
    psi = np.arctan2(hist.vxy[:, -1, 1], hist.vxy[:, -1, 0])
    e_lat = np.stack([-np.sin(psi), np.cos(psi)], -1)
    from predictor.baselines import min_jerk
    truth = fut + 3.7 * min_jerk(t / 4.0)[None, :, None] * e_lat[:, None]
    assert metrics.min_fde_k(pred.xy, truth).max() < 1e-6 < metrics.fde(pred.top(), truth).min()
    # fitting on left lane changes makes "left" more probable for that context
    fitted = mm.fitted(hist, truth)
    p_left = fitted.predict(hist, 30)
    assert np.allclose(p_left.top(), pred.xy[np.arange(4), np.argmin(
        metrics.displacement(pred.xy, truth).mean(-1), axis=1)])
    assert MultiModalCV(k=20).predict(hist, 5).n_modes == N_HYPOTHESES
    with pytest.raises(ValueError, match="table"):
        MultiModalCV(table=((1.0,),))


def test_registry():
    assert predictor_names()[:5] == ["cv", "ca", "ctrv", "kalman", "cv_multi"]
    assert make_predictor("cv_multi", k=3).k == 3
    with pytest.raises(ValueError, match="unknown predictor 'lstm'.*valid: cv, ca"):
        make_predictor("lstm")
    assert parse_predictor_list("cv, kalman") == ["cv", "kalman"]
    for bad in ("", "cv,,ca", "cv,cv", "cv,nope"):
        with pytest.raises(ValueError):
            parse_predictor_list(bad)


def test_baselines_vectorised_same_result_alone_or_in_a_batch():
    hist, _ = motion("ctrv", s=6)
    for name in predictor_names():
        p = make_predictor(name)
        batch = p.predict(hist, 10)
        one = p.predict(hist.take(slice(2, 3)), 10)
        np.testing.assert_allclose(batch.xy[2:3], one.xy, atol=1e-9)
