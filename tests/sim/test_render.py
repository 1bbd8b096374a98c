"""Drawing checked by pixels: boxes, forecasts, ellipses, the true future, the road."""

import numpy as np
import pygame
import pytest

from sim import render as R
from sim.forecast import Prediction
from sim.road import on_ramp_highway, straight_highway

ROAD = straight_highway(3, 1000.0)


def vehicles(rows: list[dict]) -> R.Vehicles:
    """Vehicles from dicts of x, y and optional fields (defaults: a car heading +x)."""
    defaults = dict(heading=0.0, length=4.6, width=1.9, vx=20.0, vy=0.0, accel=0.0, kind=0,
                    ego=False, collided=False, threat=False)
    cols = {k: [] for k in ("ids", "x", "y", *defaults)}
    for i, r in enumerate(rows):
        cols["ids"].append(i)
        cols["x"].append(r["x"])
        cols["y"].append(r["y"])
        for k, v in defaults.items():
            cols[k].append(r.get(k, v))
    types = dict(ids=np.int64, kind=np.int8, ego=bool, collided=bool, threat=bool)
    return R.Vehicles(**{k: np.asarray(v, types.get(k, float)) for k, v in cols.items()})


def lane_y(lane: int) -> float:
    return (lane + 0.5) * 3.7


def pixel(surface, view: R.View, x: float, y: float):
    sx, sy = view.snapped().to_screen(x, y)
    return tuple(surface.get_at((int(round(float(sx))), int(round(float(sy)))))[:3])


VIEW = R.View(width_px=640, height_px=360, center_x_m=500.0, center_y_m=lane_y(1),
              px_per_m=10.0)


def test_each_box_has_its_role_colour_where_it_projects():
    v = vehicles([
        dict(x=480.0, y=lane_y(0)),  # car
        dict(x=500.0, y=lane_y(0), kind=1, length=12.0, width=2.5),  # truck
        dict(x=520.0, y=lane_y(1), ego=True),
        dict(x=480.0, y=lane_y(2), accel=-5.0),  # braking
        dict(x=500.0, y=lane_y(2), threat=True),
        dict(x=520.0, y=lane_y(2), collided=True, ego=True),  # collided wins over ego
        dict(x=470.0, y=lane_y(1), heading=0.6),  # turned: still its colour at its centre
    ])
    codes = R.paint(v)
    assert codes.tolist() == [R.PAINT_CAR, R.PAINT_TRUCK, R.PAINT_EGO, R.PAINT_BRAKING,
                              R.PAINT_THREAT, R.PAINT_COLLIDED, R.PAINT_CAR]
    surf = R.render(R.Scene(vehicles=v, road=ROAD), VIEW)
    assert surf.get_size() == (640, 360)
    for i, code in enumerate(codes):
        assert pixel(surf, VIEW, v.x[i], v.y[i]) == tuple(R.PAINT_RGB[code]), i
    # beside a box (half a width plus 0.5 m to its side) there is road, not the vehicle
    assert pixel(surf, VIEW, 480.0, lane_y(0) + 1.45) == R.ASPHALT


def test_a_vehicle_off_screen_is_not_drawn_and_drawing_does_not_fail():
    v = vehicles([dict(x=5000.0, y=0.0), dict(x=-1e6, y=3e5)])
    surf = R.render(R.Scene(vehicles=v, road=ROAD), VIEW)
    assert surf.get_size() == (640, 360)
    assert R.visible_vehicles(v, VIEW).tolist() == []


def straight_prediction(x0, y0, vx, horizon_steps=30, dt=0.1, sigma=None, k=1):
    t = dt * np.arange(1, horizon_steps + 1)
    xy = np.stack([x0 + vx * t, np.full_like(t, y0)], axis=-1)[None, None]
    xy = np.repeat(xy, k, axis=1)
    prob = np.full((1, k), 1.0 / k)
    sig = None if sigma is None else np.broadcast_to(sigma, xy.shape).copy()
    return Prediction(xy=xy, prob=prob, sigma_m=sig)


def test_a_forecast_is_drawn_where_it_predicts():
    v = vehicles([dict(x=470.0, y=lane_y(1))])
    pred = straight_prediction(470.0, lane_y(1), 20.0)
    fc = R.Forecasts(rows=np.array([0]), prediction=pred, dt_s=0.1)
    scene = R.Scene(vehicles=v, road=ROAD, forecasts=fc)
    surf = R.render(scene, VIEW)
    # 0.5 s ahead (10 m): the most likely mode, at full strength
    assert pixel(surf, VIEW, 480.0, lane_y(1)) == R.FORECAST
    # 2.5 s ahead (50 m): still there, fainter (it fades with the horizon) but bluish
    far = pixel(surf, VIEW, 520.0, lane_y(1))
    assert far != R.ASPHALT and far[2] > far[0] + 40
    # off the path: road
    assert pixel(surf, VIEW, 480.0, lane_y(1) + 1.0) == R.ASPHALT
    # switched off in the view: nothing
    off = R.render(scene, R.View(**{**VIEW.__dict__, "forecasts": False}))
    assert pixel(off, VIEW, 480.0, lane_y(1)) == R.ASPHALT


def test_less_likely_modes_are_fainter_and_uncertainty_shows_as_ellipses():
    v = vehicles([dict(x=470.0, y=lane_y(1))])
    t = 0.1 * np.arange(1, 31)
    up = np.stack([470.0 + 20 * t, lane_y(1) + 0.1 * t * t * 10], axis=-1)
    straight = np.stack([470.0 + 20 * t, np.full_like(t, lane_y(1))], axis=-1)
    pred = Prediction(xy=np.stack([straight, up])[None], prob=np.array([[0.8, 0.2]]),
                      sigma_m=np.full((1, 2, 30, 2), 1.0))
    fc = R.Forecasts(rows=np.array([0]), prediction=pred, dt_s=0.1)
    surf = R.render(R.Scene(vehicles=v, road=ROAD, forecasts=fc), VIEW)
    strong = pixel(surf, VIEW, 480.0, lane_y(1))
    assert strong == R.FORECAST
    # inside the 2-sigma ellipse at 1 s (x = 490 m), away from the lines: tinted road
    tint = pixel(surf, VIEW, 490.0, lane_y(1) - 1.2)
    assert tint != R.ASPHALT and tint[2] > R.ASPHALT[2]


def test_the_true_future_is_drawn_and_can_be_hidden():
    v = vehicles([dict(x=470.0, y=lane_y(1))])
    t = 0.1 * np.arange(1, 31)
    truth = np.stack([470.0 + 15 * t, np.full_like(t, lane_y(1) + 0.0)], axis=-1)[None]
    scene = R.Scene(vehicles=v, road=ROAD, truth=truth, truth_dt_s=0.1)
    surf = R.render(scene, VIEW)
    assert pixel(surf, VIEW, 485.0, lane_y(1)) == R.TRUTH
    hidden = R.render(scene, R.View(**{**VIEW.__dict__, "truth": False}))
    assert pixel(hidden, VIEW, 485.0, lane_y(1)) == R.ASPHALT


def test_ttc_ahead_finds_the_leader_in_the_corridor_only():
    v = vehicles([
        dict(x=0.0, y=0.0, vx=20.0),
        dict(x=30.0, y=0.0, vx=10.0),  # leader: gap 30 - 4.6 = 25.4 m, closing 10 m/s
        dict(x=10.0, y=3.7, vx=0.0),  # next lane, closer: not in the corridor
        dict(x=-30.0, y=0.0, vx=5.0),  # behind, slower: never closes in
    ])
    ttc, leader = R.ttc_ahead(v)
    assert leader.tolist() == [1, -1, -1, 0]
    assert ttc[0] == pytest.approx(2.54)
    assert np.isinf(ttc[1]) and np.isinf(ttc[2]) and np.isinf(ttc[3])
    ttc1, _ = R.ttc_ahead(v, followers=np.array([0]))
    assert ttc1[0] == pytest.approx(2.54) and np.isinf(ttc1[3])


def test_road_lanes_markings_and_edges():
    view = R.View(width_px=640, height_px=360, center_x_m=100.0, center_y_m=lane_y(1),
                  px_per_m=10.0)
    surf = R.render(R.Scene(vehicles=vehicles([]), road=ROAD), view)
    assert pixel(surf, view, 100.0, lane_y(0)) == R.ASPHALT
    assert pixel(surf, view, 100.0, 15.0) == R.BG  # off the road
    assert pixel(surf, view, 100.0, -0.05) == R.EDGE_LINE  # the right edge line
    # lane lines are dashed: 3 m paint then 9 m gap, from station 0
    assert pixel(surf, view, 97.5, 3.7) == R.MARKING
    assert pixel(surf, view, 103.0, 3.7) == R.ASPHALT


def test_on_ramp_has_a_merge_marking_and_a_taper():
    road = on_ramp_highway()
    art = R.road_art(road)
    assert len(art.tapers) == 1
    merge = art.dash_w_m == R.MERGE_W_M
    assert merge.any()
    st = art.dash_centres[merge, 0]  # a straight road: x is the station
    p = road.params
    assert st.min() >= p["merge_start_m"] - 1 and st.max() <= p["merge_end_m"] + 1
    view = R.View(width_px=800, height_px=300, center_x_m=900.0, center_y_m=-2.0, px_per_m=6)
    surf = R.render(R.Scene(vehicles=vehicles([]), road=road), view)
    # the taper beyond the end of the acceleration lane is paved
    assert pixel(surf, view, p["merge_end_m"] + 10.0, -0.5 * 3.7 - 1.0) == R.ASPHALT


def test_the_cached_road_layer_draws_exactly_what_a_fresh_one_does():
    v = vehicles([dict(x=505.0, y=lane_y(1))])
    scene = R.Scene(vehicles=v, road=ROAD)
    R.render(scene, VIEW)  # builds the layer around x = 500
    moved = R.View(**{**VIEW.__dict__, "center_x_m": 512.34})
    reused = pygame.surfarray.array3d(R.render(scene, moved))
    R._LAYERS.clear()
    fresh = pygame.surfarray.array3d(R.render(scene, moved))
    assert np.array_equal(reused, fresh)


def test_view_transforms_and_zoom_about_a_point():
    view = R.View(width_px=800, height_px=600, center_x_m=10.0, center_y_m=-5.0, px_per_m=4.0)
    sx, sy = view.to_screen(12.0, -4.0)
    assert (float(sx), float(sy)) == (408.0, 296.0)
    x, y = view.to_world(sx, sy)
    assert (float(x), float(y)) == pytest.approx((12.0, -4.0))
    z = view.zoomed(2.0, about_px=(100.0, 50.0))
    assert z.px_per_m == 8.0
    assert [float(a) for a in z.to_world(100.0, 50.0)] == pytest.approx(
        [float(a) for a in view.to_world(100.0, 50.0)])
    with pytest.raises(ValueError, match="px_per_m"):
        R.View(px_per_m=0.0)


def test_hud_help_timeline_and_toast_draw_on_any_size():
    v = vehicles([dict(x=500.0, y=lane_y(1), ego=True)])
    hud = R.Hud(t_s=12.3, title="t", ego_speed_mps=25.0, ego_accel_mps2=-1.0, action="brake",
                min_ttc_s=1.2, collisions=1, predictor="cv", predictor_ms=0.4, fps=59.0)
    scene = R.Scene(vehicles=v, road=ROAD, hud=hud, timeline=R.Timeline(0.0, 60.0, 12.3),
                    toast="hello", ttc_s=np.array([1.2]))
    for w, h in ((1280, 720), (320, 200)):
        view = R.View(width_px=w, height_px=h, center_x_m=500.0, px_per_m=8.0, help=True)
        assert R.render(scene, view).get_size() == (w, h)


def test_save_png_writes_a_png_of_the_surface_size(tmp_path):
    surf = R.render(R.Scene(vehicles=vehicles([])), R.View(width_px=200, height_px=120))
    out = tmp_path / "sub" / "a.png"
    R.save_png(surf, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pygame.image.load(str(out)).get_size() == (200, 120)
    assert [p.name for p in out.parent.iterdir()] == ["a.png"]


def test_a_junction_has_stop_lines_a_paved_box_no_lines_inside_and_signal_lights():
    from sim.road import four_way_intersection

    road = four_way_intersection(n_lanes=2, lane_width_m=3.5, kerb_radius_m=12.0)
    art = R.road_art(road)
    box_m = 12.0 + 2 * 3.5
    assert len(art.stop_lines) == 8  # two approach lanes on each of four arms
    inside = [np.all(np.abs(p) < box_m - 0.5, axis=1) for p, _, _ in art.solid]
    assert not any(i.any() for i in inside)
    assert not np.any(np.all(np.abs(art.dash_centres) < box_m - 0.5, axis=1))
    view = R.View(width_px=400, height_px=400, center_x_m=0.0, center_y_m=0.0, px_per_m=8.0)
    signal = np.full(road.n_lanes, -1)
    conn = np.flatnonzero(road.in_junction)
    signal[conn] = 2
    signal[conn[0]] = 0
    surf = R.render(R.Scene(vehicles=vehicles([]), road=road, lane_signal=signal), view)
    for x, y in ((0.0, 0.0), (10.0, 10.0), (-10.0, -10.0), (box_m - 4.0, 0.0)):
        assert pixel(surf, view, x, y) == R.ASPHALT, (x, y)  # the box is paved
    assert pixel(surf, view, box_m + 5.0, box_m + 5.0) == R.BG  # between the arms: no road
    lx, ly = art.signal_lights[conn[0]]
    assert pixel(surf, view, lx, ly) == R.SIGNAL_RGB[0]
    lx, ly = art.signal_lights[conn[1]]
    assert pixel(surf, view, lx, ly) == R.SIGNAL_RGB[2]
