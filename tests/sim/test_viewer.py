"""The viewer driven by posted events (headless): pause, step, speed, seek, restart,
screenshots, fixed-step timing, forecasts, headless frames and the CLI around them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pygame
import pytest

import main
from sim import render as R
from sim import viewer as V
from sim.spec import EgoSpec, RoadSpec, TrafficSpec, WorldSpec
from sim.tracks import read_tracks
from sim.world import make_world, run

REPO = Path(__file__).resolve().parents[2]


def small_world(duration_s: float = 30.0, seed: int = 1):
    spec = WorldSpec(road=RoadSpec("straight_highway", {"n_lanes": 2, "length_m": 600.0}),
                     traffic=TrafficSpec(flow_vph_per_lane=900.0),
                     ego=EgoSpec(lane=0, station_m=150.0, speed_mps=25.0),
                     duration_s=duration_s, seed=seed, name="small")
    return make_world(spec)


@pytest.fixture(scope="module")
def recording():
    """A short recorded run as Tracks (every step)."""
    return run(small_world(duration_s=4.0)).tracks


@pytest.fixture
def display():
    pygame.display.init()
    pygame.display.set_mode((320, 200))
    pygame.event.clear()
    yield
    pygame.display.quit()


def post(viewer: V.Viewer, *events) -> None:
    for e in events:
        pygame.event.post(e)
    for e in pygame.event.get():
        viewer.handle(e)


def key(k):
    return pygame.event.Event(pygame.KEYDOWN, key=k, mod=0, unicode="", scancode=0)


def small_view():
    return R.View(width_px=320, height_px=200, px_per_m=6.0)


def test_pause_step_back_and_forth_reuse_the_same_states(display):
    src = V.LiveSource(small_world())
    viewer = V.Viewer(src, view=small_view(), headless=True)
    assert viewer.advance(0.35) == 3  # fixed steps of 0.1 s against real time
    assert src.cursor == 3
    post(viewer, key(pygame.K_SPACE))
    assert viewer.paused and viewer.advance(5.0) == 0 and src.cursor == 3
    s3 = src.state
    post(viewer, key(pygame.K_RIGHT))
    assert src.cursor == 4 and viewer.paused
    s4 = src.state
    post(viewer, key(pygame.K_LEFT), key(pygame.K_LEFT))
    assert src.cursor == 2
    post(viewer, key(pygame.K_RIGHT))
    assert src.state is s3  # stepping forward again shows the kept state, no re-simulation
    post(viewer, key(pygame.K_RIGHT))
    assert src.state is s4
    post(viewer, key(pygame.K_SPACE))
    assert not viewer.paused


def test_speed_keys_and_the_catch_up_cap_never_change_the_step(display):
    src = V.LiveSource(small_world())
    viewer = V.Viewer(src, view=small_view(), headless=True)
    post(viewer, key(pygame.K_EQUALS))
    assert viewer.speed == 2.0
    assert viewer.advance(0.1) == 2
    post(viewer, key(pygame.K_MINUS), key(pygame.K_MINUS))
    assert viewer.speed == 0.5
    # a very slow frame: only a bounded catch-up, still in whole steps of dt
    taken = viewer.advance(10.0)
    assert 1 <= taken <= int(V.MAX_CATCH_UP_S * 0.5 / 0.1) + 1
    n = src.cursor
    # whatever the frame timing, the states are those of the plain simulation
    ref = run(small_world(), duration_s=n * 0.1, record_every=None).state
    assert src.state.step == ref.step == n
    assert np.array_equal(src.state.x, ref.x) and np.array_equal(src.state.ids, ref.ids)


def test_restart_toggles_follow_and_help(display):
    src = V.LiveSource(small_world())
    viewer = V.Viewer(src, view=small_view(), headless=True)
    first = src.state
    viewer.advance(0.5)
    post(viewer, key(pygame.K_r))
    assert src.cursor == 0 and np.array_equal(src.state.x, first.x)
    before = viewer.view
    post(viewer, key(pygame.K_p), key(pygame.K_g), key(pygame.K_t), key(pygame.K_i),
         key(pygame.K_h), key(pygame.K_f))
    v = viewer.view
    assert (v.forecasts, v.truth, v.trails, v.ids, v.help) == (
        not before.forecasts, not before.truth, not before.trails, not before.ids,
        not before.help)
    assert viewer.follow is False
    post(viewer, key(pygame.K_ESCAPE))
    assert viewer.quit


def test_follow_keeps_the_ego_on_screen_and_drag_pans(display):
    src = V.LiveSource(small_world())
    viewer = V.Viewer(src, view=small_view(), headless=True)
    viewer.advance(1.0)
    scene = viewer.scene()
    ego = int(np.flatnonzero(scene.vehicles.ego)[0])
    sx, sy = viewer.view.to_screen(scene.vehicles.x[ego], scene.vehicles.y[ego])
    assert 0 < sx < 160 and abs(sy - 100) < 2  # behind the centre, looking ahead
    cx = viewer.view.center_x_m
    post(viewer, pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(100, 100), button=1),
         pygame.event.Event(pygame.MOUSEMOTION, pos=(160, 100), rel=(60, 0), buttons=(1, 0, 0)),
         pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(160, 100), button=1))
    assert viewer.follow is False
    assert viewer.view.center_x_m == pytest.approx(cx - 60 / 6.0)
    post(viewer, pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=2, flipped=False))
    assert viewer.view.px_per_m == pytest.approx(6.0 * 1.15 ** 2)


def test_click_selects_a_vehicle(display):
    src = V.LiveSource(small_world())
    viewer = V.Viewer(src, view=small_view(), headless=True)
    viewer.scene()
    v = viewer.frame().vehicles
    i = int(np.flatnonzero(~v.ego & np.isin(np.arange(v.n),
                                            R.visible_vehicles(v, viewer.view.snapped())))[0])
    sx, sy = viewer.view.to_screen(v.x[i], v.y[i])
    pos = (int(sx), int(sy))
    post(viewer, pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=1),
         pygame.event.Event(pygame.MOUSEBUTTONUP, pos=pos, button=1))
    assert viewer.selected_id == int(v.ids[i])
    assert viewer.scene().selected == i


def test_timeline_click_and_drag_seek_a_replay(display, recording):
    src = V.ReplaySource(recording, "rec")
    viewer = V.Viewer(src, view=small_view(), headless=True)
    x, y, w, h = R.timeline_rect(viewer.view)
    post(viewer, pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(x + w // 2, y + h // 2),
                                    button=1))
    assert src.cursor == round(0.5 * src.head)
    post(viewer, pygame.event.Event(pygame.MOUSEMOTION, pos=(x + w + 30, y), rel=(1, 0),
                                    buttons=(1, 0, 0)),
         pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(x + w + 30, y), button=1))
    assert src.cursor == src.head and src.at_end
    post(viewer, key(pygame.K_HOME))
    assert src.cursor == 0
    scene = viewer.scene()
    assert scene.timeline.t_s == recording.t[0]
    # the true future of every vehicle is known in a replay
    assert scene.truth is not None and np.isfinite(scene.truth[:, 0]).any()


def test_replay_frames_match_the_file(recording):
    src = V.ReplaySource(recording, "rec")
    src.seek_index(10)
    fr = src.frame()
    rows = np.flatnonzero(recording.present[:, 10])
    assert np.array_equal(fr.vehicles.ids, recording.ids[rows])
    assert np.allclose(fr.vehicles.x, recording.x[rows, 10])
    assert fr.vehicles.ego.sum() == 1 and fr.vehicles.ids[fr.vehicles.ego][0] == 0
    assert np.allclose(fr.trails[:, -1, 0], recording.x[rows, 10])
    assert np.allclose(fr.truth[:, 0, 0], recording.x[rows, 11], equal_nan=True)


def test_forecasts_come_from_the_injected_predictor(recording):
    from predictor.registry import make_predictor

    for src in (V.LiveSource(small_world()), V.ReplaySource(recording, "rec")):
        viewer = V.Viewer(src, predictor=make_predictor("cv"), view=small_view(),
                          headless=True)
        for _ in range(5):
            src.step_forward()
        scene = viewer.scene()
        fc = scene.forecasts
        v = scene.vehicles
        assert fc is not None and len(fc.rows) > 0
        xy = np.asarray(fc.prediction.xy)
        # constant velocity: one step ahead = position + velocity * dt
        r = fc.rows
        assert np.allclose(xy[:, 0, 0, 0], v.x[r] + v.vx[r] * 0.1, atol=1e-3)
        assert scene.hud.predictor == "cv"


def test_a_predictor_built_for_another_step_is_refused(recording):
    class Fixed:
        name, dt_s, n_neighbors = "fixed", 0.2, 0

    with pytest.raises(ValueError, match="0.2 s"):
        V.Viewer(V.ReplaySource(recording, "rec"), predictor=Fixed(), headless=True)


def test_annotations_of_a_control_layer_are_drawn():
    def annotate(state):
        ego = int(np.flatnonzero(state.role == 1)[0])
        other = int(state.ids[np.flatnonzero(state.active & (state.role == 0))[0]])
        plan = np.stack([state.x[ego] + np.arange(10.0), np.full(10, state.y[ego])], axis=1)
        return V.Annotation(plan_xy=plan, reacts_to_id=other, threat_ids=(other,),
                            action="brake to 20 m/s")

    src = V.LiveSource(small_world(), annotate=annotate)
    viewer = V.Viewer(src, view=small_view(), headless=True)
    scene = viewer.scene()
    assert scene.hud.action == "brake to 20 m/s"
    assert scene.reacts_to >= 0 and scene.vehicles.threat[scene.reacts_to]
    assert R.paint(scene.vehicles)[scene.reacts_to] == R.PAINT_THREAT
    assert viewer.draw().get_size() == (320, 200)


def test_screenshot_key_in_the_window_loop_saves_a_png_of_the_window_size(tmp_path):
    src = V.LiveSource(small_world())
    view = R.View(width_px=400, height_px=240, px_per_m=6.0)
    viewer = V.Viewer(src, view=view, screenshot_dir=tmp_path)
    pygame.display.init()
    pygame.event.clear()
    pygame.event.post(key(pygame.K_s))
    V.run_window(viewer, max_frames=3)
    shots = list(tmp_path.glob("*.png"))
    assert len(shots) == 1 and shots[0].name.startswith("drivecast_small_t")
    assert pygame.image.load(str(shots[0])).get_size() == (400, 240)


def test_frame_hook_draws_a_run_without_changing_it(tmp_path):
    world = small_world(duration_s=1.0)
    viewer = V.Viewer(V.LiveSource(world, max_history=16), view=small_view(), headless=True)
    hook = V.FrameHook(viewer, tmp_path, every=4)
    res = run(world, hook=hook.hook)
    hook.finish(res.state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "frame_000000.png", "frame_000004.png", "frame_000008.png"]
    plain = run(small_world(duration_s=1.0))
    assert np.array_equal(plain.tracks.x, res.tracks.x, equal_nan=True)


def cli(*args, env=None):
    e = {**os.environ, "SDL_VIDEODRIVER": "dummy", **(env or {})}
    e = {k: v for k, v in e.items() if v is not None}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=e, timeout=300)


def test_run_without_a_display_says_so_in_one_line():
    res = cli("run", "--duration", "1", env={"SDL_VIDEODRIVER": None, "DISPLAY": None,
                                             "WAYLAND_DISPLAY": None})
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0] and "--headless" in lines[0]
    assert "Traceback" not in res.stderr


def test_window_commands_with_the_dummy_driver_exit_2_in_process(capsys, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    assert main.main(["run", "--duration", "1"]) == 2
    assert main.main(["replay", "whatever.npz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("no display" in line for line in err)


def test_run_headless_frames_are_deterministic_and_sized(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        res = cli("run", "--headless", "--duration", "1", "--frames-dir", out,
                  "--frame-every", "5", "--size", "320x180", "--predictor", "cv", "--quiet",
                  "--json", out / "s.json")
        assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == ["frame_000000.png", "frame_000005.png", "frame_000010.png"]
    for n in names:
        assert pygame.image.load(str(a / n)).get_size() == (320, 180)
        assert (a / n).read_bytes() == (b / n).read_bytes()
    assert json.loads((a / "s.json").read_text())["frames"] == 3


def test_replay_headless_writes_frames_and_a_gif(tmp_path, recording):
    from sim.tracks import write_tracks

    pytest.importorskip("PIL")
    f = tmp_path / "rec.npz"
    write_tracks(f, recording)
    gif = tmp_path / "out.gif"
    assert main.main(["replay", str(f), "--headless", "--frames-dir", str(tmp_path / "fr"),
                      "--gif", str(gif), "--start", "1", "--duration", "1",
                      "--frame-every", "2", "--size", "320x180", "--quiet"]) == 0
    frames = sorted(p.name for p in (tmp_path / "fr").glob("*.png"))
    assert frames == [f"frame_{i:06d}.png" for i in range(10, 21, 2)]
    from PIL import Image

    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 6 and im.size == (320, 180)


def test_gif_without_pillow_is_one_clear_line(tmp_path, capsys, monkeypatch, recording):
    from sim.tracks import write_tracks

    f = tmp_path / "rec.npz"
    write_tracks(f, recording)
    monkeypatch.setitem(sys.modules, "PIL", None)
    code = main.main(["replay", str(f), "--gif", str(tmp_path / "x.gif"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pillow" in err[0] and "drivecast[gif]" in err[0]
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize("args, needle", [
    (["replay", "missing.npz", "--headless", "--frames-dir", "x"], "missing.npz"),
    (["replay", "REC", "--headless"], "--frames-dir"),
    (["replay", "REC", "--headless", "--frames-dir", "x", "--start", "99"], "--start"),
    (["replay", "REC", "--headless", "--frames-dir", "x", "--predictor", "nope"], "nope"),
    (["run", "--headless", "--frames-dir", "x", "--size", "12x7"], "--size"),
    (["replay", "REC", "--gif", "a.png"], ".gif"),
])
def test_bad_viewer_input_exits_2_with_one_line(args, needle, tmp_path, capsys, recording,
                                                monkeypatch):
    from sim.tracks import write_tracks

    monkeypatch.chdir(tmp_path)
    write_tracks(tmp_path / "rec.npz", recording)
    args = [str(tmp_path / "rec.npz") if a == "REC" else a for a in args]
    assert main.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "x").exists()


def test_replay_of_an_ngsim_file_draws_real_vehicles(ngsim_dir, tmp_path):
    f = ngsim_dir / "us101" / "us101_trajectories-0820am-0835am_subset.csv.gz"
    assert main.main(["replay", str(f), "--headless", "--frames-dir", str(tmp_path),
                      "--start", "40", "--duration", "0.5", "--frame-every", "5",
                      "--predictor", "cv", "--size", "320x180", "--quiet"]) == 0
    assert len(list(tmp_path.glob("frame_*.png"))) == 2


def test_recording_from_the_window_source_equals_run(tmp_path):
    world = small_world(duration_s=1.0)
    src = V.LiveSource(world, record_every=1)
    while src.step_forward():
        pass
    assert src.at_end
    tracks = src.tracks()
    ref = run(small_world(duration_s=1.0)).tracks
    assert np.array_equal(tracks.x, ref.x, equal_nan=True) and tracks.meta == ref.meta
    assert read_tracks  # the same writer reads both


def test_min_ttc_so_far_agrees_between_the_live_run_and_its_replay(recording):
    src = V.LiveSource(small_world(duration_s=4.0))
    live = [src.frame().ego_min_ttc_s]
    while src.step_forward():
        live.append(src.frame().ego_min_ttc_s)
    replay = V.ReplaySource(recording, "rec").ego_min_ttc()
    assert len(live) == len(replay)
    assert np.allclose(live, replay, rtol=1e-4)  # the file holds float32 positions
    assert np.all(replay[1:] <= replay[:-1]) and np.isfinite(replay[-1])
    assert V.ego_ttc_s(src.state) >= replay[-1]


def test_frame_hook_passes_an_inner_control_hook_through(tmp_path):
    from sim.world import Override

    calls = []

    def brake_ego(state, world, index, accel):
        calls.append(state.step)
        return Override(rows=np.array([0]), accel_mps2=np.array([-2.0]))

    world = small_world(duration_s=0.5)
    viewer = V.Viewer(V.LiveSource(world, max_history=16), view=small_view(), headless=True)
    hook = V.FrameHook(viewer, None, every=1, inner=brake_ego)
    res = run(world, hook=hook.hook, record_every=None)
    hook.finish(res.state)
    ref = run(small_world(duration_s=0.5), hook=brake_ego, record_every=None)
    assert calls == list(range(5)) * 2 and hook.drawn == 6
    assert np.array_equal(res.state.x, ref.state.x)


def test_following_moves_on_when_the_followed_vehicle_leaves_a_replay():
    from sim.tracks import Tracks

    t = 0.1 * np.arange(21)
    x = np.stack([10.0 * t, 5.0 + 12.0 * t]).astype(np.float32)
    x[0, 10:] = np.nan  # vehicle 7 leaves after 1 s, vehicle 8 stays
    y = np.where(np.isnan(x), np.nan, np.array([[0.0], [3.5]])).astype(np.float32)
    vx = np.where(np.isnan(x), np.nan, np.array([[10.0], [12.0]])).astype(np.float32)
    zero = np.where(np.isnan(x), np.nan, 0.0).astype(np.float32)
    tracks = Tracks(t=t, x=x, y=y, vx=vx, vy=zero, heading=zero,
                    length=np.full(2, 4.5, np.float32), width=np.full(2, 1.8, np.float32),
                    ids=np.array([7, 8]), meta={"source": "test", "dt": 0.1})
    src = V.ReplaySource(tracks, "two")
    assert src.road is not None and src.road.n_lanes == 2  # lanes fitted to the data
    viewer = V.Viewer(src, view=small_view(), headless=True)
    assert viewer.selected_id == 8  # no ego: the vehicle that stays longest
    viewer.selected_id = 7
    viewer.scene()
    assert viewer.view.center_y_m == pytest.approx(0.0)
    src.seek_index(15)
    scene = viewer.scene()
    assert viewer.selected_id == 8 and scene.hud.target == "#8"
    assert viewer.view.center_y_m == pytest.approx(3.5)
    assert scene.hud.min_ttc_s != scene.hud.min_ttc_s  # NaN: no ego in the file


def test_a_paused_window_with_nothing_happening_is_not_redrawn():
    viewer = V.Viewer(V.LiveSource(small_world()), view=small_view())
    viewer.paused = True
    pygame.display.init()
    pygame.event.clear()
    V.run_window(viewer, max_frames=12)
    assert 1 <= len(viewer.render_ms) <= 3  # the first frame, and the window's own events
    viewer.quit = False
    pygame.display.init()
    pygame.event.clear()
    pygame.event.post(key(pygame.K_RIGHT))
    V.run_window(viewer, max_frames=2)
    assert viewer.source.cursor == 1 and len(viewer.render_ms) >= 2


def test_a_simulation_that_cannot_keep_up_is_told_and_never_changes_its_step():
    src = V.LiveSource(small_world())
    viewer = V.Viewer(src, view=small_view(), speed=32.0)
    for _ in range(30):
        assert viewer.advance(1.0, budget_s=0.0) == 1  # one step, then the budget is spent
    assert src.cursor == 30 and src.state.t_s == pytest.approx(3.0)
    assert "slower than x32" in viewer.scene().hud.status
