import numpy as np
import pytest

from sim.road import LANE_DEAD_END, Road, curved_highway, on_ramp_highway, straight_highway


def test_straight_highway_lanes_are_parallel_and_ordered_right_to_left():
    road = straight_highway(n_lanes=3, length_m=1000.0, lane_width_m=3.5)
    assert road.n_lanes == 3
    np.testing.assert_allclose(road.length_m, 1000.0)
    x, y, h, k, st = road.pose_at(np.array([0, 1, 2]), np.array([10.0, 10.0, 10.0]))
    np.testing.assert_allclose(y, [1.75, 5.25, 8.75])
    np.testing.assert_allclose(h, 0.0)
    np.testing.assert_allclose(k, 0.0)
    assert list(road.left) == [1, 2, -1] and list(road.right) == [-1, 0, 1]


@pytest.mark.parametrize("road", [straight_highway(), curved_highway(), on_ramp_highway()])
def test_world_frenet_round_trip(road):
    rng = np.random.default_rng(1)
    lane = rng.integers(0, road.n_lanes, 200)
    s = rng.uniform(0.05, 0.95, 200) * road.length_m[lane]
    d = rng.uniform(-1.5, 1.5, 200)
    x, y, _ = road.to_world(lane, s, d)
    s2, d2, *_ = road.project(lane, s + rng.normal(0, 1.0, 200), x, y)
    np.testing.assert_allclose(s2, s, atol=0.01)
    np.testing.assert_allclose(d2, d, atol=0.01)
    lane3, s3, d3 = road.locate(x, y, lanes=np.unique(lane))
    near = np.abs(d) < 1.0  # unambiguous: closer to its own centre line than any other
    assert np.all(lane3[near] == lane[near])
    np.testing.assert_allclose(s3[near], s[near], atol=0.01)


def test_curved_highway_changes_heading_and_curvature_sign():
    road = curved_highway(n_lanes=2, pieces=[(100.0, 0.0), (300.0, 500.0), (300.0, -500.0)])
    lane = np.zeros(3, np.int64)
    _, _, h, k, st = road.pose_at(lane, np.array([50.0, 250.0, 550.0]))
    assert abs(h[0]) < 1e-6
    assert k[1] > 0 and k[2] < 0
    # lane 0 is right of the reference: radius 500 + 0.5 w on the left bend
    assert k[1] == pytest.approx(1.0 / (500.0 + 0.5 * 3.7), rel=0.02)
    assert h[1] == pytest.approx((250.0 - 100.0) / 500.0, abs=0.02)


def test_on_ramp_lane_ends_and_joins_the_main_road():
    road = on_ramp_highway(n_lanes=3, merge_start_m=500.0, merge_end_m=700.0,
                           ramp_length_m=200.0, ramp_offset_m=25.0)
    ramp = road.n_lanes - 1
    assert road.end_kind[ramp] == LANE_DEAD_END and road.left[ramp] == 0
    assert road.right[0] == -1  # nobody changes into the ramp
    np.testing.assert_allclose(road.station_range_m[ramp], [300.0, 700.0])
    x0, y0, *_ = road.pose_at(np.array([ramp]), np.array([0.0]))
    assert y0[0] == pytest.approx(-0.5 * 3.7 - 25.0)
    s_merge = road.s_at_station(np.array([ramp]), np.array([550.0]))
    _, y1, h1, *_ = road.pose_at(np.array([ramp]), s_merge)
    assert y1[0] == pytest.approx(-0.5 * 3.7) and h1[0] == pytest.approx(0.0, abs=1e-6)
    assert road.change_from_m[ramp] == 500.0 and road.change_to_m[ramp] == 700.0


@pytest.mark.parametrize("road", [straight_highway(), curved_highway(), on_ramp_highway()])
def test_road_json_round_trip(road):
    back = Road.from_json(road.to_json())
    assert back.kind == road.kind and back.n_lanes == road.n_lanes
    np.testing.assert_allclose(back.px, road.px, atol=1e-4)
    np.testing.assert_allclose(back.py, road.py, atol=1e-4)
    for name in ("left", "right", "successor", "end_kind", "entry", "width_m",
                 "change_from_m", "change_to_m"):
        np.testing.assert_array_equal(getattr(back, name), getattr(road, name))


@pytest.mark.parametrize("text, field", [
    ("not json", "JSON"),
    ('{"lanes": []}', "lanes"),
    ('{"lanes": [{"x": [0], "y": [0], "station": [0]}]}', "lanes[0]"),
    ('{"lanes": [{"x": [0, 1], "y": [0, 0], "station": [0, 1], "width_m": 3, "left": 5,'
     ' "right": -1, "successor": -1, "end": "exit", "entry": true}]}', "links"),
])
def test_bad_road_json_is_refused(text, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Road.from_json(text)


def test_bad_builder_parameters():
    with pytest.raises(ValueError):
        straight_highway(n_lanes=0)
    with pytest.raises(ValueError):
        curved_highway(pieces=[(100.0, 5.0)])
    with pytest.raises(ValueError):
        on_ramp_highway(merge_start_m=800.0, merge_end_m=700.0)
