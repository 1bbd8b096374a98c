"""Log replay: recorded agents reproduce their tracks, the inserted ego drives with IDM,
reactive agents switch, roads are fitted to roadless recordings, bad settings are refused."""

import numpy as np
import pytest

from sim.collision import boxes_overlap
from sim.replay import ReplayError, ReplaySpec, fit_road, replay
from sim.spec import EgoSpec, RoadSpec, TrafficSpec, WorldSpec
from sim.tracks import Tracks, read_tracks, write_tracks
from sim.world import make_world, run

POSITION_ARRAYS = ("x", "y", "vx", "vy", "heading")


def _synthetic(agents, t_end_s=40.0, dt_s=0.1, y_of_lane=lambda k: -1.8 - 3.6 * k):
    """Tracks of agents (lane, x0_m, speed_mps[, t0_s]) driving along +x at constant speed on
    straight lanes (no road in the file, like NGSIM)."""
    t = np.round(np.arange(0.0, t_end_s + 1e-9, dt_s), 9)
    n, n_t = len(agents), len(t)
    out = {k: np.full((n, n_t), np.nan, np.float32) for k in POSITION_ARRAYS}
    for i, (lane, x0, v, *rest) in enumerate(agents):
        t0 = rest[0] if rest else 0.0
        on = t >= t0 - 1e-9
        out["x"][i, on] = x0 + v * (t[on] - t0)
        out["y"][i, on] = y_of_lane(lane)
        out["vx"][i, on] = v
        out["vy"][i, on] = 0.0
        out["heading"][i, on] = 0.0
    return Tracks(t=t, **out, length=np.full(n, 4.5, np.float32),
                  width=np.full(n, 1.8, np.float32), ids=np.arange(10, 10 + n, dtype=np.int64),
                  meta={"source": "synthetic", "dt": dt_s})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 40 s recording of highway traffic with its road, written and read back."""
    spec = WorldSpec(road=RoadSpec("straight_highway", {"n_lanes": 3, "length_m": 1500.0}),
                     traffic=TrafficSpec(flow_vph_per_lane=1500.0), ego=EgoSpec(),
                     duration_s=40.0, seed=3)
    path = tmp_path_factory.mktemp("rec") / "rec.npz"
    write_tracks(path, run(make_world(spec)).tracks)
    return read_tracks(path)


def test_pure_replay_reproduces_the_recording_exactly(recorded, tmp_path):
    res = replay(recorded)
    out = res.tracks
    for name in POSITION_ARRAYS:
        assert np.array_equal(getattr(out, name), getattr(recorded, name), equal_nan=True)
    assert np.array_equal(out.ids, recorded.ids) and out.ego == recorded.ego
    assert np.array_equal(out.lane, recorded.lane)
    assert res.ego_collisions == res.data_collisions == 0 and not res.switched
    write_tracks(tmp_path / "rep.npz", out)  # a valid track file like any run
    back = read_tracks(tmp_path / "rep.npz")
    assert back.meta["source"] == "replay" and back.road.kind == "straight_highway"


def test_the_ego_replaces_an_agent_and_the_others_stay_exact(recorded):
    agent = int(recorded.ids[20])
    row = 20
    res = replay(recorded, ReplaySpec(ego_agent=agent, ego_from_s=10.0))
    out = res.tracks
    assert out.ego == row and res.ego_id == agent and res.ego_from_s == pytest.approx(10.0)
    k = int(round(10.0 / recorded.dt_s))
    others = np.arange(recorded.n_agents) != row
    for name in POSITION_ARRAYS:
        a, b = getattr(out, name), getattr(recorded, name)
        assert np.array_equal(a[others], b[others], equal_nan=True)
        assert np.array_equal(a[row, : k + 1], b[row, : k + 1], equal_nan=True)  # until then
    # from then on it is simulated: it moves on and drives like a driver (no teleports)
    x = out.x[row, k:].astype(float)
    steps = np.diff(x[np.isfinite(x)])
    assert len(steps) > 50 and np.all(steps >= -1e-3) and np.all(steps < 4.0)


def test_inserted_ego_follows_a_slow_leader_with_idm_and_never_touches_it():
    # a slow car ahead in the right lane (fitted lane 0: y = -5.4 m), a fast one on its left
    tracks = _synthetic([(1, 120.0, 8.0), (0, 80.0, 25.0)], t_end_s=60.0)
    res = replay(tracks, ReplaySpec(ego_lane=0, ego_station_m=40.0, ego_speed_mps=20.0,
                                    ego_desired_speed_mps=25.0))
    out = res.tracks
    e = out.ego
    assert e == 2 and out.ids[e] == 12  # a new row after the recorded ones, a new id
    assert res.road_fitted and out.road.n_lanes == 2
    gap = (out.x[0] - out.x[e] - 0.5 * (out.length[0] + out.length[e])).astype(float)
    speed = np.hypot(out.vx[e], out.vy[e]).astype(float)
    assert np.nanmin(gap) > 2.0 and res.ego_collisions == 0
    # IDM steady state behind an 8 m/s leader: its speed, at (s0 + v T) / sqrt(1 - (v/v0)^4)
    assert speed[-1] == pytest.approx(8.0, abs=0.1)
    assert gap[-1] == pytest.approx((2.0 + 8.0 * 1.5) / np.sqrt(1 - (8 / 25) ** 4), abs=0.3)
    # lane keeping: it stays on its (fitted) lane's centre, which is the recorded one's
    centre = out.road.py[out.road.lane_start[0]]
    assert np.nanmax(np.abs(out.y[e] - centre)) < 0.02 and abs(centre + 5.4) < 0.1


def test_a_recorded_follower_runs_into_a_slow_ego_unless_replay_is_reactive():
    # agent 10 cruises at 8 m/s; agent 11 follows it at 8 m/s, 20 m behind. The ego replaces
    # agent 10 and wants only 4 m/s: the recorded follower runs into it.
    tracks = _synthetic([(0, 100.0, 8.0), (0, 78.0, 8.0)], t_end_s=30.0)
    plain = replay(tracks, ReplaySpec(ego_agent=10, ego_from_s=5.0, ego_desired_speed_mps=4.0))
    assert plain.ego_collisions >= 1 and plain.tracks.collided[1].any()
    assert plain.tracks.collided[0].any() and not plain.switched
    for name in POSITION_ARRAYS:  # the follower kept to its recording
        assert np.array_equal(getattr(plain.tracks, name)[1], getattr(tracks, name)[1],
                              equal_nan=True)
    reactive = replay(tracks, ReplaySpec(ego_agent=10, ego_from_s=5.0,
                                         ego_desired_speed_mps=4.0, reactive=True))
    assert reactive.ego_collisions == 0 and not reactive.tracks.collided.any()
    assert list(reactive.switched) == [11]
    k = int(round(reactive.switched[11] / tracks.dt_s))
    follower = reactive.tracks
    assert np.array_equal(follower.x[1, : k + 1], tracks.x[1, : k + 1])  # exact until it switched
    assert follower.x[1, -1] < tracks.x[1, -1] - 20.0  # then slowed down behind the ego
    assert reactive.tracks.meta["switched"] == {"11": reactive.switched[11]}


def test_lanes_are_fitted_to_a_roadless_recording():
    rng = np.random.default_rng(0)
    agents = [(lane, x0, 20.0 + rng.normal(), 0.0) for lane in range(3)
              for x0 in np.arange(0.0, 400.0, 35.0) + lane * 7.0]
    tracks = _synthetic(agents, t_end_s=20.0, y_of_lane=lambda k: -2.0 - 3.7 * k)
    noisy = tracks.y + rng.normal(0.0, 0.25, tracks.y.shape).astype(np.float32)
    tracks = Tracks(**{**tracks.__dict__, "y": noisy})
    road = fit_road(tracks)
    assert road.n_lanes == 3 and road.params["lane_width_m"] == pytest.approx(3.7, abs=0.1)
    centres = np.sort(road.py[road.lane_start[:-1]])
    assert np.allclose(centres, [-9.4, -5.7, -2.0], atol=0.1)
    assert road.py[road.lane_start[0]] == pytest.approx(-9.4, abs=0.1)  # lane 0 the rightmost
    x0, x1 = road.px[0], road.px[1]
    assert x0 < np.nanmin(tracks.x) and x1 > np.nanmax(tracks.x)


def test_ngsim_import_track_file_replay_reproduces_positions_within_a_centimetre(
        ngsim_dir, tmp_path):
    from scenarios.ngsim import read_ngsim

    src = ngsim_dir / "us101" / "us101_trajectories-0820am-0835am_subset.csv.gz"
    write_tracks(tmp_path / "ngsim.npz", read_ngsim(src))
    imported = read_tracks(tmp_path / "ngsim.npz")
    present = imported.present
    first = int(np.argmax(present.sum(axis=1)))
    t_first = float(imported.t[np.argmax(present[first])] - imported.t[0])
    res = replay(imported, ReplaySpec(ego_agent=int(imported.ids[first]),
                                      ego_from_s=t_first + 10.0, duration_s=t_first + 90.0))
    write_tracks(tmp_path / "replayed.npz", res.tracks)
    out = read_tracks(tmp_path / "replayed.npz")
    n_t = out.n_steps
    others = np.arange(imported.n_agents) != first
    for name in ("x", "y"):
        a = getattr(out, name)[others].astype(float)
        b = getattr(imported, name)[others, :n_t].astype(float)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) < 0.01
    assert res.road_fitted and out.road.n_lanes >= 3 and out.ego == first
    assert res.ego_distance_m > 100.0


def test_junction_recording_replay_keeps_its_signals(tmp_path):
    from scenarios.suite import load_scenario
    from sim import intersection as inter

    spec = load_scenario("urban_intersection").spec(0, duration_s=75.0)
    rec = run(make_world(spec)).tracks  # the north arm is red for its first 47 s
    j = inter.junction_from_description(rec.road, rec.meta["junction"])
    res = replay(rec, ReplaySpec(ego_lane=2, ego_station_m=20.0, ego_turn="straight",
                                 ego_desired_speed_mps=13.9, ego_speed_mps=10.0))
    out = res.tracks
    e = out.ego
    assert out.meta["junction"] == rec.meta["junction"]
    # the new ego (north arm, heading south) never enters the box on red
    lanes = out.lane[e]
    k_in = np.flatnonzero(out.road.in_junction[np.maximum(lanes, 0)] & (lanes >= 0))
    assert len(k_in), "the ego reached the junction"
    t_in = float(out.t[k_in[0]] - out.t[0])
    move = j.conn_move[j.conn_of_lane[lanes[k_in[0]]]]
    assert j.movement_states(t_in - 0.3)[0][move] != inter.SIG_RED
    stopped = np.hypot(out.vx[e], out.vy[e])[: k_in[0]] < 0.1
    assert stopped.any()  # it met red (the north arm starts on red) and waited


@pytest.mark.parametrize("spec, needle", [
    (dict(ego_agent=999), "ego_agent: no agent with id 999"),
    (dict(ego_agent=10, ego_from_s=35.0), "not present at 35 s"),
    (dict(ego_lane=5, ego_station_m=10.0), "ego_lane: lane 5 does not exist"),
    (dict(ego_lane=0, ego_station_m=5000.0), "ego_station_m: 5000 m is off lane 0"),
    (dict(ego_lane=0, ego_station_m=30.0), "would overlap agent 11"),  # fitted lane 0: y -5.4
])
def test_bad_replay_settings_are_refused(spec, needle):
    tracks = _synthetic([(0, 30.0, 10.0), (1, 30.0, 10.0)], t_end_s=30.0)
    with pytest.raises(ReplayError, match=needle):
        replay(tracks, ReplaySpec(**spec))


def test_replay_spec_checks_its_fields():
    with pytest.raises(ReplayError, match="not both"):
        ReplaySpec(ego_agent=3, ego_lane=1, ego_station_m=10.0)
    with pytest.raises(ReplayError, match="both ego_lane and ego_station_m"):
        ReplaySpec(ego_lane=1)
    with pytest.raises(ReplayError, match="ego_desired_speed_mps"):
        ReplaySpec(ego_agent=1, ego_desired_speed_mps=0.0)


def test_cli_run_scenario_track_file(recorded, tmp_path, capsys):
    import json

    import main

    write_tracks(tmp_path / "rec.npz", recorded)
    agent = int(recorded.ids[20])
    rc = main.main(["run", "--scenario", str(tmp_path / "rec.npz"), "--headless", "--quiet",
                    "--ego-agent", str(agent), "--ego-from", "5", "--reactive",
                    "--record", str(tmp_path / "out.npz"), "--json", str(tmp_path / "s.json")])
    assert rc == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["replay"] and summary["ego_id"] == agent and summary["ego_collisions"] == 0
    out = read_tracks(tmp_path / "out.npz")
    assert out.ids[out.ego] == agent and out.meta["ego_from_s"] == pytest.approx(5.0)
    capsys.readouterr()
    rc = main.main(["run", "--scenario", str(tmp_path / "rec.npz"), "--headless", "--quiet",
                    "--ego-agent", "999999"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "ego_agent: no agent with id 999999" in err
    rc = main.main(["run", "--headless", "--quiet", "--ego-agent", "3"])
    assert rc == 2 and "only for a log replay" in capsys.readouterr().err


def test_boxes_of_the_replayed_ego_never_overlap_a_vehicle_ahead(recorded):
    res = replay(recorded, ReplaySpec(ego_lane=1, ego_station_m=700.0, ego_from_s=2.0,
                                      ego_desired_speed_mps=33.0, reactive=True))
    out = res.tracks
    e = out.ego
    for k in range(out.n_steps):
        if not np.isfinite(out.x[e, k]):
            continue
        rows = np.flatnonzero(np.isfinite(out.x[:, k]) & (np.arange(out.n_agents) != e))
        ahead = rows[(out.x[rows, k] > out.x[e, k])]
        hit = boxes_overlap(np.full(len(ahead), float(out.x[e, k])),
                            np.full(len(ahead), float(out.y[e, k])),
                            np.full(len(ahead), float(out.heading[e, k])), out.length[e],
                            out.width[e], out.x[ahead, k].astype(float),
                            out.y[ahead, k].astype(float), out.heading[ahead, k].astype(float),
                            out.length[ahead], out.width[ahead])
        assert not hit.any()
    assert res.ego_collisions == 0


def test_a_control_hook_commands_the_replay_ego():
    from sim.events import Override

    tracks = _synthetic([(0, 200.0, 10.0)], t_end_s=20.0)
    seen = []

    def brake(state, world, index, accel):
        ego = int(np.flatnonzero(state.role == 1)[0])
        seen.append((world.dt_s, state.active.sum()))
        return Override(rows=np.array([ego]), accel_mps2=np.array([-1.0]))

    res = replay(tracks, ReplaySpec(ego_lane=0, ego_station_m=20.0, ego_speed_mps=10.0),
                 hook=brake)
    out = res.tracks
    speed = np.hypot(out.vx[out.ego], out.vy[out.ego])
    assert speed[50] == pytest.approx(5.0, abs=0.05) and speed[-1] < 0.05  # -1 m/s^2 from 10
    assert seen[0] == (pytest.approx(0.1), 2)  # the hook sees every vehicle present
