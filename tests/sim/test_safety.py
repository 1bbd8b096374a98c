"""The safety benchmark: metric definitions (collision, fault, hard brake, false alarm),
episodes and their end, aggregation, worker-count independence, and the CLI contract."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim import safety
from sim.road import straight_highway
from sim.spec import EventSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_avoidance import ConstantVelocity, Frozen, cut_in_spec, track_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _factory(mode):
    return {"cv_test": ConstantVelocity, "frozen": Frozen}[mode]()


def test_hard_brake_onsets_count_each_episode_of_hard_braking_once():
    acc = np.array([0.0, -2.0, -4.0, -6.0, -3.0, -4.5, -4.5, 0.0, -9.0])
    assert safety.hard_brake_onsets(acc, 4.0).tolist() == [2, 5, 8]
    assert safety.hard_brake_onsets(np.array([-5.0, -5.0]), 4.0).tolist() == [0]
    assert safety.hard_brake_onsets(np.zeros(5), 4.0).size == 0


def _pair(state_factory, ego, other):
    road = straight_highway(n_lanes=3, length_m=1000.0)
    return state_factory(road, [{"lane": 1, "station_m": 300.0, "speed_mps": 20.0, **ego},
                                {"speed_mps": 15.0, **other}])


@pytest.mark.parametrize("ego, other, fault, kind", [
    ({}, {"lane": 1, "station_m": 304.0}, True, "ego rear-ends"),
    ({}, {"lane": 1, "station_m": 296.0}, False, "rear-ended"),
    ({}, {"lane": 1, "station_m": 304.0, "lane_from": 0}, False, "cut in"),
    ({"lane_from": 2}, {"lane": 1, "station_m": 301.0}, True, "ego lane change"),
    ({"lane_from": 2}, {"lane": 1, "station_m": 304.0, "lane_from": 0}, True, "ego rear-ends"),
])
def test_fault_goes_to_the_one_behind_or_the_one_changing_lanes(state_factory, ego, other,
                                                                 fault, kind):
    st = _pair(state_factory, ego, other)
    assert safety.at_fault(st, 1) == (fault, kind)


def test_a_collision_ends_the_episode_with_its_impact_and_fault():
    out = safety.run_episode(track_spec(ego_kph=60.0, duration_s=10.0), "none")
    assert out["collided"] and out["ended"] == "collision"
    assert out["impact_speed_mps"] == pytest.approx(60 / 3.6, abs=1e-3)
    assert out["impact_rel_speed_mps"] == pytest.approx(60 / 3.6, abs=1e-3)
    assert out["at_fault"] and out["collision_kind"] == "ego rear-ends"
    assert out["partner_id"] == 1 and out["min_ttc_s"] == 0.0 and out["min_gap_m"] == 0.0
    assert out["collision_t_s"] == pytest.approx(4.0, abs=0.15)  # started at TTC 4 s
    assert out["hard_brakes"] == 0 and out["false_alarms"] == 0


def test_test_track_episodes_end_as_euro_ncap_tests_do():
    out = safety.run_episode(track_spec(ego_kph=50.0, duration_s=12.0), "reactive")
    assert not out["collided"] and out["ended"] == "resolved"
    assert out["duration_s"] < 8.0 and out["hard_brakes"] == 1
    assert out["false_alarms"] == 0 and out["layer_hard_brakes"] == 1  # a justified brake
    assert 0 < out["min_gap_m"] < 20 and 0 < out["min_ttc_s"] < 4.0
    full = safety.run_episode(track_spec(ego_kph=50.0, duration_s=12.0), "reactive",
                              settings=safety.SafetySettings(test_track_end=False))
    assert full["ended"] == "time" and full["duration_s"] == pytest.approx(12.0)


def test_a_needless_hard_brake_is_a_false_alarm_and_a_needed_one_is_not():
    # a lead at the ego's speed 30 m ahead: a forecaster that thinks it stops dead brakes
    # hard; re-run without the brake, nothing happens within the horizon: a false alarm
    lead = track_spec(ego_kph=90.0, target_kph=90.0, gap_m=30.0, duration_s=6.0)
    keep_going = safety.SafetySettings(test_track_end=False)
    out = safety.run_episode(lead, "frozen", Frozen(), settings=keep_going)
    assert out["hard_brakes"] >= 1 and out["false_alarms"] == out["layer_hard_brakes"] >= 1
    assert out["false_alarm_t_s"][0] < 1.0
    # the same forecaster is right about a stopped car: its hard brake is justified
    ccrs = track_spec(ego_kph=60.0, ttc_s=2.0, duration_s=10.0, n_lanes=1)
    out = safety.run_episode(ccrs, "frozen", Frozen())
    assert out["layer_hard_brakes"] >= 1 and out["false_alarms"] == 0 and not out["collided"]
    # a lead braking later: braking for it is justified too
    brake = EventSpec(type="brake", actor="target", at_s=1.0, decel_mps2=6.0, to_speed_mps=0.0)
    ccrb = track_spec(ego_kph=50.0, target_kph=50.0, gap_m=12.0, events=(brake,),
                      duration_s=8.0)
    out = safety.run_episode(ccrb, "reactive")
    assert out["layer_hard_brakes"] >= 1 and out["false_alarms"] == 0 and not out["collided"]


def test_the_counterfactual_replays_the_episode_exactly_up_to_the_brake():
    # with the layer off from the first step, the re-run is the 'none' episode itself
    spec = track_spec(ego_kph=60.0, duration_s=10.0)
    from sim.avoidance import AvoidanceParams, SafetyLayer
    from sim.world import Counters, init_state, make_world

    world = make_world(spec)
    rng = np.random.default_rng(spec.seed)
    st = init_state(world, rng)
    layer = SafetyLayer("none", AvoidanceParams(), None, spec.dt_s)
    snap = safety._Snapshot(0, st, rng.bit_generator.state, Counters(), None)
    t = safety.counterfactual_conflict(world, snap, AvoidanceParams(), safety.SafetySettings())
    none = safety.run_episode(spec, "none")
    # a conflict (0.5 m margin) comes just before the collision of the 'none' run
    assert t is not None and none["collision_t_s"] - 0.3 <= t <= none["collision_t_s"]
    assert layer.mode == "none"


def test_summaries_rates_percentiles_and_per_distance_counts():
    eps = [
        {"collided": True, "at_fault": True, "impact_speed_mps": 10.0,
         "impact_rel_speed_mps": 8.0, "min_ttc_s": 0.0, "min_gap_m": 0.0, "distance_m": 500.0,
         "duration_s": 20.0, "steps": 200, "hard_brakes": 0, "false_alarms": 0,
         "jerk_rms_mps3": 1.0, "intervention_s": 0.0},
        {"collided": False, "min_ttc_s": None, "min_gap_m": None, "distance_m": 1500.0,
         "duration_s": 60.0, "steps": 600, "hard_brakes": 2, "false_alarms": 1,
         "jerk_rms_mps3": 2.0, "intervention_s": 6.0},
    ]
    s = safety.summarize(eps)
    assert s["episodes"] == 2 and s["collisions"] == 1 and s["collision_rate"] == 0.5
    assert s["impact_speed_mps"] == 10.0 and s["at_fault_collisions"] == 1
    assert s["hard_brakes_per_100km"] == pytest.approx(100.0) and s["false_alarms"] == 1
    assert s["false_alarms_per_100km"] == pytest.approx(50.0)
    assert s["mean_speed_mps"] == pytest.approx(25.0) and s["distance_km"] == 2.0
    assert s["min_ttc_s_p5"] == 0.0 and s["min_gap_m_min"] == 0.0
    assert s["jerk_rms_mps3"] == pytest.approx(np.sqrt((200 * 1 + 600 * 4) / 800), abs=1e-4)
    assert s["intervention_share"] == pytest.approx(6.0 / 80.0)


def test_results_do_not_depend_on_the_worker_count():
    specs = [track_spec(ego_kph=40.0, duration_s=8.0), cut_in_spec(15.0, 4.0, 70.0)]
    modes = ["none", "reactive", "cv_test"]
    one = safety.benchmark(specs, modes, _factory, workers=1, by_case=True)
    two = safety.benchmark(specs, modes, _factory, workers=2, by_case=True)
    assert one["episodes"] == two["episodes"]
    assert one["results"] == two["results"] and one["by_case"] == two["by_case"]
    assert [e["mode"] for e in one["episodes"]] == modes * 2
    r = one["results"]
    assert r["none"]["collisions"] == 2 and r["cv_test"]["collisions"] == 0
    table = safety.format_table({"suite": "t", **one})
    assert "cv_test" in table and "per case" in table


def test_a_predictor_mode_needs_a_factory():
    with pytest.raises(ValueError, match="factory"):
        safety.benchmark([track_spec()], ["cv"], None, workers=1)


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_cli_benchmark_safety_writes_the_contract_json(tmp_path):
    out = tmp_path / "s.json"
    plot = tmp_path / "s.png"
    r = _cli("benchmark", "safety", "--suite", "lead_brake", "--avoidance", "none,reactive,cv",
             "--workers", "2", "--by", "case", "--json", str(out), "--plot", str(plot),
             "--quiet")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["suite"] == "lead_brake" and set(data["results"]) == {"none", "reactive", "cv"}
    for m, res in data["results"].items():
        for key in ("episodes", "collisions", "collision_rate", "min_ttc_s_p5", "hard_brakes",
                    "false_alarms", "mean_speed_mps"):
            assert key in res, (m, key)
    assert data["results"]["none"]["collisions"] == 4
    assert data["results"]["reactive"]["collisions"] == 0
    assert data["results"]["cv"]["collisions"] == 0
    assert len(data["by_case"]) == 4 and plot.stat().st_size > 10_000
    assert "collisions" in r.stdout and "per case" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--avoidance", "none,warp"], "unknown avoidance mode 'warp'"),
    (["--avoidance", "cv,cv"], "twice"),
    (["--avoidance", "oracle"], "log replay"),
    (["--suite", "no_such_suite"], "unknown suite"),
    (["--seeds", "0"], "--seeds"),
    (["--latency", "-1"], "latency_s"),
])
def test_cli_bad_input_exits_2_with_one_line(args, needle):
    r = _cli("benchmark", "safety", *args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_run_with_avoidance_headless(tmp_path):
    out = tmp_path / "run.json"
    r = _cli("run", "--scenario", "stationary_target", "--case", "40", "--avoidance", "reactive",
             "--headless", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["avoidance"]["mode"] == "reactive" and not data["avoidance"]["ego_collided"]
    assert data["avoidance"]["intervention_steps"] > 0 and data["collisions"] == 0
    r = _cli("run", "--scenario", "stationary_target", "--avoidance", "rnn", "--checkpoint",
             str(tmp_path / "missing.pt"), "--headless", "--quiet")
    assert r.returncode == 2 and "missing.pt" in r.stderr


def test_cli_benchmark_safety_runs_the_rnn_in_worker_processes(tmp_path):
    # the parent loads the checkpoint (to refuse a bad one in one line) on one torch thread,
    # then forks the workers: had it started an OpenMP pool, a forked child would hang in
    # its first forward pass (the timeout fails the test)
    out = tmp_path / "rnn.json"
    r = _cli("benchmark", "safety", "--suite", "lead_brake", "--avoidance", "rnn",
             "--workers", "2", "--json", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["results"]["rnn"]
    assert res["episodes"] == 4 and res["collisions"] == 0
