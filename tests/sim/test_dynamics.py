import numpy as np
import pytest

from sim.dynamics import bicycle_step, turn_radius_m


def _drive(steer, speed=10.0, accel=0.0, steps=2000, dt=0.01, wheelbase=2.7):
    x, y, h, v = (np.zeros(1) for _ in range(4))
    v[:] = speed
    xs, ys = [], []
    for _ in range(steps):
        x, y, h, v, vx, vy = bicycle_step(x, y, h, v, np.full(1, accel), np.full(1, np.tan(steer)),
                                          np.full(1, wheelbase), dt)
        xs.append(x[0])
        ys.append(y[0])
    return np.array(xs), np.array(ys), h, v


def test_constant_steering_drives_a_circle_of_the_expected_radius():
    steer, wheelbase = 0.1, 2.7
    x, y, *_ = _drive(steer, wheelbase=wheelbase)
    # fit a circle through the points: centre from the least-squares algebraic fit
    a = np.column_stack([2 * x, 2 * y, np.ones_like(x)])
    cx, cy, c = np.linalg.lstsq(a, x**2 + y**2, rcond=None)[0]
    radius = np.sqrt(c + cx**2 + cy**2)
    expected = turn_radius_m(wheelbase, steer)
    assert radius == pytest.approx(expected, rel=1e-3)
    assert np.std(np.hypot(x - cx, y - cy)) < 1e-3 * expected
    assert expected == pytest.approx(wheelbase / np.tan(steer), rel=0.01)


def test_straight_line_and_velocity_match_heading():
    x, y, h, v = _drive(0.0, speed=20.0, steps=100, dt=0.1)
    assert x[-1] == pytest.approx(200.0) and abs(y[-1]) < 1e-12 and abs(h[0]) < 1e-12


def test_speed_never_negative_and_stops_within_the_step():
    x, y, h, v = (np.zeros(1) for _ in range(4))
    v[:] = 1.0
    x, y, h, v, vx, vy = bicycle_step(x, y, h, v, np.full(1, -9.0), np.zeros(1),
                                      np.full(1, 2.7), 0.5)
    assert v[0] == 0.0
    assert x[0] == pytest.approx(1.0 / 18.0)  # v^2 / (2 |a|), not v dt + a dt^2 / 2
    assert vx[0] == 0.0 and vy[0] == 0.0


def test_vectorised_over_many_vehicles():
    n = 1000
    rng = np.random.default_rng(0)
    out = bicycle_step(rng.normal(size=n), rng.normal(size=n), rng.uniform(-3, 3, n),
                       rng.uniform(0, 30, n), rng.uniform(-9, 3, n), rng.uniform(-0.5, 0.5, n),
                       np.full(n, 2.7), 0.1)
    assert all(o.shape == (n,) for o in out)
    assert np.all(out[3] >= 0)
    np.testing.assert_allclose(np.hypot(out[4], out[5]), out[3], atol=1e-9)
