"""The ego's safety layer in log replay: the `oracle` (the recorded future), an ego that is not
row 0, replay episodes in the safety benchmark, and the command line around them."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from predictor.baselines import ConstantVelocity
from sim.avoidance import AvoidanceParams, SafetyLayer
from sim.forecast import HistoryBuffer
from sim.replay import RecordedFuture, ReplaySpec, fit_road, replay, substep_s
from sim.safety import ReplayEpisode, benchmark, replay_episodes, run_replay_episode
from sim.tracks import Tracks, time_window, write_tracks

REPO = Path(__file__).resolve().parents[2]
NO_LC = dataclasses.replace(AvoidanceParams(), lane_changes=False)


def cut_in_recording(t_move_s: float = 4.0, dt: float = 0.1, late_s: float = 0.0) -> Tracks:
    """20 s on two straight lanes (y = 0 and y = 3.6 m, no road in the file). Row 0 (id 11)
    starts 60 m ahead in the left lane at 15 m/s and cuts into the right lane over 2 s from
    t_move_s; row 1 (id 12) drives far ahead in the left lane (recorded from late_s); row 2
    (id 10), the agent the ego replaces, drives in the right lane at 25 m/s from x = 0."""
    t = np.round(np.arange(0.0, 20.0 + 1e-9, dt), 9)
    arr = {k: np.zeros((3, len(t)), np.float32) for k in ("x", "y", "vx", "vy", "heading")}
    u = np.clip((t - t_move_s) / 2.0, 0.0, 1.0)
    y = 3.6 * (1.0 - (10 * u ** 3 - 15 * u ** 4 + 6 * u ** 5))
    vy = np.gradient(y, dt)
    arr["x"][0], arr["y"][0], arr["vx"][0], arr["vy"][0] = 60.0 + 15.0 * t, y, 15.0, vy
    arr["heading"][0] = np.arctan2(vy, 15.0)
    arr["x"][1], arr["y"][1], arr["vx"][1] = 400.0 + 25.0 * t, 3.6, 25.0
    arr["x"][2], arr["y"][2], arr["vx"][2] = 25.0 * t, 0.0, 25.0
    for name in arr:
        arr[name][1, t < late_s - 1e-9] = np.nan
    return Tracks(t=t, **arr, length=np.full(3, 4.5, np.float32),
                  width=np.full(3, 1.8, np.float32), ids=np.array([11, 12, 10]),
                  meta={"source": "synthetic", "dt": dt})


def _replay_with(mode: str, tracks: Tracks):
    dt = substep_s(tracks)
    predictor = {"oracle": RecordedFuture(tracks, dt), "cv": ConstantVelocity()}.get(mode)
    layer = SafetyLayer(mode, NO_LC, predictor, dt, keep_plans=10 ** 6, draw_plans=False)
    res = replay(tracks, ReplaySpec(ego_agent=10, ego_from_s=2.0, ego_desired_speed_mps=25.0),
                 hook=layer)
    return res, layer


def test_recorded_future_is_the_recording_then_its_last_velocity():
    tracks = cut_in_recording()
    cut = time_window(tracks, 0, 120)  # the recording ends at 12 s
    oracle = RecordedFuture(cut, 0.1)
    buf = HistoryBuffer(3, 0.1)
    state = dataclasses.make_dataclass("S", ["t_s", "ids", "active", "x", "y", "vx", "vy",
                                             "heading", "length", "width", "kind"])
    for k in range(80, 111):  # push frames up to 11 s
        buf.push(state(float(cut.t[k]), cut.ids, np.ones(3, bool),
                       *(getattr(cut, n)[:, k].astype(float) for n in ("x", "y", "vx", "vy",
                                                                        "heading")),
                       cut.length, cut.width, np.zeros(3, np.int8)))
    now = state(float(cut.t[110]), cut.ids, np.ones(3, bool),
                *(getattr(cut, n)[:, 110].astype(float) for n in ("x", "y", "vx", "vy",
                                                                   "heading")),
                cut.length, cut.width, np.zeros(3, np.int8))
    pred = oracle.predict(buf.history(now, np.array([0, 1])), 20)
    assert pred.xy.shape == (2, 1, 20, 2) and np.all(pred.prob == 1.0)
    assert np.all(pred.sigma_m == 0.0)
    # within the recording: its positions at the next frames
    np.testing.assert_allclose(pred.xy[:, 0, :10, 0], cut.x[:2, 111:121], atol=1e-4)
    np.testing.assert_allclose(pred.xy[:, 0, :10, 1], cut.y[:2, 111:121], atol=1e-4)
    # after it: on from the last recorded point at the last recorded velocity
    last = cut.x[:2, 120].astype(float)
    np.testing.assert_allclose(pred.xy[:, 0, 10:, 0],
                               last[:, None] + cut.vx[:2, 120, None] * 0.1 * np.arange(1, 11),
                               atol=1e-3)
    stranger = dataclasses.replace(buf.history(now, np.array([0])), ids=np.array([99]))
    with pytest.raises(ValueError, match="agent 99 is not in the recording"):
        oracle.predict(stranger, 5)


def test_the_oracle_avoids_a_cut_in_that_the_idm_ego_runs_into():
    tracks = cut_in_recording()
    none, _ = _replay_with("none", tracks)
    assert none.ego_collisions == 1 and none.ego_front_collisions == 1
    contact = none.ego_contacts[0]
    assert contact["partner_id"] == 11 and contact["ran_into"] and 5.0 < contact["t_s"] < 8.0
    first = {}
    gaps = {}
    for mode in ("cv", "oracle"):
        res, layer = _replay_with(mode, tracks)
        assert res.ego_collisions == 0, mode
        out = res.tracks
        e = out.ego
        assert e == 2 and out.ids[e] == 10  # the ego is row 2, not row 0
        first[mode] = min(k for k, p in layer.plans.items() if p.intervening)
        same_lane = np.abs(out.y[0] - out.y[e]) < 1.8
        gaps[mode] = float(np.nanmin(np.where(same_lane, out.x[0] - out.x[e] - 4.5, np.inf)))
    # the oracle knows the cut-in before it starts (it has watched the recording for the 2 s
    # before the takeover, so it acts at once); CV sees it once the car moves across
    assert first["oracle"] == 20 and first["cv"] >= 40
    assert gaps["oracle"] > gaps["cv"] + 3.0


def test_a_replay_episode_on_its_time_window_equals_the_full_replay():
    tracks = cut_in_recording()
    eps = replay_episodes(tracks, "cut.npz", 5, min_drive_s=10.0)
    assert [e.ego_agent for e in eps] == [11, 12, 10]  # every agent, in order of appearance
    assert eps[2] == ReplayEpisode("cut.npz", 2, 10, 2.0, 20.0)
    assert [e.ego_agent for e in replay_episodes(tracks, "c", 2)] == [11, 10]
    e = run_replay_episode(eps[2], tracks, "oracle", params=AvoidanceParams())
    assert not e["collided"] and e["false_alarms"] is None and e["steps"] == 180
    res, layer = _replay_with("oracle", tracks)
    speed = np.hypot(res.tracks.vx[2, 21:], res.tracks.vy[2, 21:]).astype(float)
    assert e["distance_m"] == pytest.approx(float(np.sum(speed[:180]) * 0.1), rel=0.02)
    assert e["intervention_s"] == pytest.approx(
        0.1 * sum(p.intervening for p in layer.plans.values()), abs=1e-9)
    none = run_replay_episode(eps[2], tracks, "none")
    assert none["collided"] and none["at_fault"] and none["partner_id"] == 11
    assert none["collision_kind"] == "ego rear-ends" and 5.0 < none["collision_t_s"] < 8.0


def test_the_benchmark_runs_replay_episodes_with_the_oracle():
    tracks = cut_in_recording()
    eps = [e for e in replay_episodes(tracks, "cut.npz", 5) if e.ego_agent == 10]
    out = benchmark(eps, ["none", "oracle"], None, workers=1,
                    recordings={"cut.npz": tracks})
    assert out["results"]["none"]["collisions"] == 1
    assert out["results"]["none"]["at_fault_collisions"] == 1
    assert out["results"]["oracle"]["collisions"] == 0
    assert out["results"]["oracle"]["false_alarms"] is None
    with pytest.raises(ValueError, match="log-replay"):
        from scenarios.suite import episodes

        benchmark(episodes("lead_brake")[:1], ["oracle"], None, workers=1)


def _cli(*args):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_cli_replay_with_avoidance_and_the_replay_benchmark(tmp_path):
    rec = tmp_path / "cut.npz"
    write_tracks(rec, cut_in_recording())
    r = _cli("run", "--scenario", rec, "--headless", "--ego-agent", "10", "--ego-from", "2",
             "--ego-desired-speed", "25", "--avoidance", "oracle", "--json", "-", "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["ego_collisions"] == 0 and s["avoidance"]["mode"] == "oracle"
    assert s["avoidance"]["intervention_steps"] > 0
    out = tmp_path / "b.json"
    r = _cli("benchmark", "safety", "--suite", rec, "--egos", "3", "--avoidance",
             "none,cv,oracle", "--workers", "2", "--by", "case", "--json", out, "--quiet")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["suite"] == str(rec) and data["seeds"] is None
    assert {m: v["episodes"] for m, v in data["results"].items()} == {"none": 3, "cv": 3,
                                                                       "oracle": 3}
    assert data["results"]["none"]["collisions"] >= 1
    assert data["results"]["oracle"]["collisions"] == 0
    assert len(data["by_case"]) == 3 and "cut.npz #2 (ego_agent=10" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["run", "--scenario", "highway_cruise", "--headless", "--avoidance", "oracle"],
     "log replay"),
    (["benchmark", "safety", "--suite", "lead_brake", "--egos", "3"], "--egos"),
    (["run", "--scenario", "{rec}", "--headless", "--avoidance", "cv"], "needs an ego"),
    (["benchmark", "safety", "--suite", "{rec}", "--seeds", "2"], "not for a recording"),
])
def test_cli_refuses_replay_avoidance_misuse_in_one_line(tmp_path, args, needle):
    rec = tmp_path / "cut.npz"
    write_tracks(rec, cut_in_recording())
    r = _cli(*[a.format(rec=rec) for a in args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and needle in lines[0], r.stderr


def test_a_time_window_replays_exactly_like_the_whole_recording():
    # an agent that appears late (row 1, at 4 s) replaced from 6 s: the same ego path, with
    # the layer on, whether the replay gets the whole recording or only the episode's frames
    tracks = cut_in_recording(late_s=4.0)
    ep = [e for e in replay_episodes(tracks, "late.npz", 5) if e.ego_agent == 12][0]
    assert ep.from_s == 6.0 and ep.to_s == 20.0
    paths = []
    road = fit_road(tracks)  # a roadless recording: the road fitted to the whole (as the
    for rec in (tracks, time_window(tracks, 40, 200)):  # benchmark does)
        dt = substep_s(rec)
        layer = SafetyLayer("oracle", NO_LC, RecordedFuture(rec, dt), dt, draw_plans=False)
        off = float(rec.t[0] - tracks.t[0])
        res = replay(rec, ReplaySpec(ego_agent=12, ego_from_s=ep.from_s - off,
                                     duration_s=ep.to_s - off), road=road, hook=layer)
        e = res.tracks.ego
        k0 = int(round((ep.from_s - off) / 0.1))
        paths.append(np.stack([res.tracks.x[e, k0:], res.tracks.y[e, k0:]]))
    assert paths[0].shape == paths[1].shape and np.array_equal(paths[0], paths[1])


def test_a_time_window_keeps_the_recordings_signal_clock():
    from scenarios.suite import load_scenario
    from sim.world import make_world, run

    spec = load_scenario("urban_intersection").spec(0, duration_s=60.0)
    rec = run(make_world(spec)).tracks
    pres = rec.present
    first = np.argmax(pres, axis=1)
    late = [r for r in np.flatnonzero(pres.any(axis=1) & (first >= 80))
            if pres[r, first[r]:].sum() > 300][:3]
    assert late, "agents that appear after 8 s"
    for r in late:
        k0 = int(first[r])
        ego, frm = int(rec.ids[r]), round(float(k0 + 10) * 0.1, 6)
        whole = replay(rec, ReplaySpec(ego_agent=ego, ego_from_s=frm)).tracks
        part = time_window(rec, k0, rec.n_steps - 1)
        assert part.meta["recording_t0_s"] == 0.0
        cut = replay(part, ReplaySpec(ego_agent=ego, ego_from_s=round(frm - k0 * 0.1, 6))
                     ).tracks
        assert np.array_equal(whole.x[whole.ego, k0:], cut.x[cut.ego], equal_nan=True)
        assert np.array_equal(whole.y[whole.ego, k0:], cut.y[cut.ego], equal_nan=True)


def test_latency_sees_old_positions_even_when_the_state_is_updated_in_place():
    tracks = cut_in_recording()
    params = dataclasses.replace(NO_LC, latency_s=0.5)
    layer = SafetyLayer("cv", params, ConstantVelocity(), 0.1, draw_plans=False)
    seen_x = []

    class Spy:
        def observe(self, st, world):
            layer.observe(st, world)

        def __call__(self, st, world, index, accel):
            ov = layer(st, world, index, accel)
            seen_x.append((st.t_s, float(layer._sensed[0].x[0]), float(st.x[0])))
            return ov

    replay(tracks, ReplaySpec(ego_agent=10, ego_from_s=2.0), hook=Spy())
    t_s, x_seen, x_now = seen_x[0]
    assert t_s == pytest.approx(2.0)
    # row 0 drives at 15 m/s: what the layer sees is 0.5 s (7.5 m) old
    assert x_seen == pytest.approx(x_now - 7.5, abs=1e-4)


def test_the_layer_watches_the_recording_before_the_takeover():
    tracks = cut_in_recording()
    layer = SafetyLayer("cv", NO_LC, ConstantVelocity(), 0.1, draw_plans=False)
    watched, first = [], []

    class Spy:
        def observe(self, st, world):
            watched.append(round(st.t_s, 3))
            layer.observe(st, world)

        def __call__(self, st, world, index, accel):
            if not first:
                h = layer.buffer.history(layer._sensed[-1], np.array([0]))
                first.append(int(h.valid.sum()))
            return layer(st, world, index, accel)

    replay(tracks, ReplaySpec(ego_agent=10, ego_from_s=2.0), hook=Spy())
    assert watched == [round(0.1 * k, 3) for k in range(20)]  # 0 .. 1.9 s
    assert first == [11]  # at the takeover the forecaster gets the 1 s of past it asks for


def test_cli_refuses_a_forecaster_made_for_another_time_step(tmp_path):
    rec = tmp_path / "fast.npz"
    write_tracks(rec, cut_in_recording(dt=0.04))
    r = _cli("benchmark", "safety", "--suite", rec, "--egos", "1", "--avoidance", "none,rnn",
             "--workers", "1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "steps of 0.1 s, the replay at 0.04 s" in lines[0], r.stderr


def test_the_viewer_follows_a_replay_ego_once_it_takes_over():
    from sim import viewer as V

    tracks = cut_in_recording(late_s=4.0)
    out = replay(tracks, ReplaySpec(ego_agent=12, ego_from_s=6.0)).tracks
    assert out.ego == 1 and not np.isfinite(out.x[1, 0])  # no ego on the first frame
    vw = V.Viewer(V.ReplaySource(out, "late"), headless=True)
    vw.draw()
    assert vw.selected_id != 12  # it follows a stand-in until the ego is there
    vw.source.seek_index(100)  # 10 s
    vw.draw()
    assert vw.selected_id == -1
    v = vw.frame().vehicles
    assert vw._target_row(v) == int(np.flatnonzero(v.ids == 12)[0]) and v.ego[vw._target_row(v)]
