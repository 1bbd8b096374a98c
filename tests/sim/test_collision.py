import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.collision import (
    box_corners,
    boxes_overlap,
    candidate_pairs,
    gap_m,
    overlapping_pairs,
    ttc_s,
)


def overlap(a, b):
    return bool(boxes_overlap(*[np.array([v]) for v in (*a, *b)])[0])


def test_far_boxes_do_not_overlap():
    assert not overlap((0, 0, 0, 4, 2), (100, 0, 0, 4, 2))


def test_parallel_boxes_side_by_side():
    assert not overlap((0, 0, 0, 4, 2), (0, 2.5, 0, 4, 2))
    assert overlap((0, 0, 0, 4, 2), (0, 1.9, 0, 4, 2))


def test_touching_boxes_do_not_overlap_but_any_penetration_does():
    assert not overlap((0, 0, 0, 4, 2), (4, 0, 0, 4, 2))  # bumper to bumper
    assert not overlap((0, 0, 0, 4, 2), (4, 2, 0, 4, 2))  # corner to corner
    assert overlap((0, 0, 0, 4, 2), (3.999, 0, 0, 4, 2))


def test_rotated_boxes_use_the_exact_shape_not_circles():
    # a box rotated 45 degrees whose corner points into the gap: circles would overlap
    assert not overlap((0, 0, 0, 4, 2), (3.5, 2.2, np.pi / 4, 2, 2))
    # corner pokes in
    assert overlap((0, 0, 0, 4, 2), (2.0 + np.sqrt(2) - 0.1, 0, np.pi / 4, 2, 2))
    # crossing at right angles
    assert overlap((0, 0, 0, 10, 1), (0, 0, np.pi / 2, 10, 1))


def _brute(x, y, h, l, w):
    n = len(x)
    i, j = np.triu_indices(n, 1)
    hit = boxes_overlap(x[i], y[i], h[i], l[i], w[i], x[j], y[j], h[j], l[j], w[j])
    return set(zip(i[hit].tolist(), j[hit].tolist()))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 80))
def test_broad_phase_finds_exactly_the_brute_force_pairs(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 60, n)
    y = rng.uniform(0, 15 if seed % 2 else 80, n)
    h = rng.uniform(-np.pi, np.pi, n)
    l = rng.uniform(3, 16, n)
    w = rng.uniform(1.5, 2.6, n)
    i, j = overlapping_pairs(x, y, h, l, w)
    assert set(zip(i.tolist(), j.tolist())) == _brute(x, y, h, l, w)
    assert np.all(i < j)


def test_candidate_pairs_handles_tiny_inputs():
    i, j = candidate_pairs(np.zeros(1), np.zeros(1), np.ones(1))
    assert len(i) == 0 == len(j)


def test_corners_gap_and_ttc():
    c = box_corners(np.array([0.0]), np.array([0.0]), np.array([0.0]), np.array([4.0]),
                    np.array([2.0]))
    np.testing.assert_allclose(c[0], [[2, 1], [2, -1], [-2, -1], [-2, 1]])
    assert gap_m(50.0, 4.0, 40.0, 4.0) == pytest.approx(6.0)
    np.testing.assert_allclose(ttc_s(np.array([10.0, 10.0]), np.array([20.0, 10.0]),
                                     np.array([15.0, 12.0])), [2.0, np.inf])
