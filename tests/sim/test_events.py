"""Scripted actors and events (sim/events.py): they happen when and how declared, obey physics,
and keep the step pure."""

import math

import numpy as np
import pytest

from sim import events
from sim.spec import ActorSpec, EgoSpec, EventSpec, FieldError, RoadSpec, TrafficSpec, WorldSpec
from sim.world import Override, init_state, make_world, run, step

NO_TRAFFIC = TrafficSpec(flow_vph_per_lane=0.0, ramp_flow_vph=0.0, initial_fill=False)
KPH = 1 / 3.6


def spec(actors=(), evs=(), ego=None, lanes=2, length_m=1500.0, duration_s=12.0,
         traffic=NO_TRAFFIC, **kw):
    ego = ego or EgoSpec(lane=0, station_m=100.0, speed_mps=20.0, desired_speed_mps=20.0,
                         driver="cruise")
    return WorldSpec(road=RoadSpec("straight_highway", {"n_lanes": lanes, "length_m": length_m}),
                     traffic=traffic, ego=ego, actors=tuple(actors), events=tuple(evs),
                     duration_s=duration_s, **kw)


def simulate(s, **kw):
    res = run(make_world(s), **kw)
    tr = res.tracks
    return res, tr, np.hypot(tr.vx, tr.vy).astype(float)


def log(tr):
    return {e["label"]: e for e in tr.meta["events"]}


def test_brake_at_a_time_decelerates_exactly_to_the_speed_and_holds_it():
    s = spec([ActorSpec("lead", 0, gap_m=200.0, speed_mps=20.0)],
             [EventSpec("brake", "lead", at_s=2.0, decel_mps2=4.0, to_speed_mps=8.0)])
    res, tr, v = simulate(s)
    lead = v[1]
    dv = np.diff(lead) / 0.1
    t = tr.t[:-1]
    assert np.all(np.abs(dv[t < 2.0 - 1e-9]) < 1e-5)  # steady before
    braking = (t >= 2.0 - 1e-9) & (t < 4.9)
    assert np.allclose(dv[braking], -4.0, atol=1e-3)  # exactly the declared rate
    assert lead[-1] == pytest.approx(8.0, abs=1e-4)  # lands on the speed and holds it
    assert np.all(lead >= 8.0 - 1e-4)
    e = log(tr)["brake(lead)"]
    assert e["phase"] == "done" and e["start_s"] == pytest.approx(2.0)
    assert e["end_s"] == pytest.approx(2.0 + 12.0 / 4.0, abs=0.1 + 1e-9)
    assert np.allclose(v[0], 20.0, atol=1e-4)  # the cruising ego ignores everything


def test_brake_triggered_by_the_gap_to_the_ego_fires_when_the_gap_reaches_it():
    # ego 20 m/s closes on a 10 m/s actor from 100 m: 10 m/s closing speed
    s = spec([ActorSpec("slow", 1, gap_m=100.0, speed_mps=10.0)],
             [EventSpec("brake", "slow", when_gap_m=40.0, decel_mps2=2.0)])
    res, tr, v = simulate(s)
    e = log(tr)["brake(slow)"]
    assert e["trigger_s"] == pytest.approx(6.0, abs=0.1 + 1e-9)
    assert 39.0 <= e["start_gap_m"] <= 40.0  # at most one step of closing late


def test_ttc_trigger_and_after_chain_with_delay():
    s = spec([ActorSpec("t", 0, gap_m=120.0, speed_mps=10.0)],
             [EventSpec("brake", "t", when_ttc_s=5.0, decel_mps2=3.0, to_speed_mps=5.0,
                        name="b1"),
              EventSpec("speed_change", "t", after="b1", delay_s=1.0, to_speed_mps=15.0,
                        accel_mps2=1.0, name="go")], duration_s=20.0)
    res, tr, v = simulate(s)
    b1, go = log(tr)["b1: brake(t)"], log(tr)["go: speed_change(t)"]
    # TTC = gap / 10 m/s: 5 s once the gap is 50 m, after (120 - 50) / 10 = 7 s
    assert b1["trigger_s"] == pytest.approx(7.0, abs=0.1 + 1e-9)
    assert go["trigger_s"] >= b1["end_s"] - 1e-9
    assert go["start_s"] == pytest.approx(go["trigger_s"] + 1.0, abs=1e-6)
    k = np.searchsorted(tr.t, go["start_s"] + 0.5)
    assert v[1, k + 1] - v[1, k] == pytest.approx(0.1, abs=1e-3)  # +1 m/s^2
    assert go["phase"] == "done" and v[1, -1] == pytest.approx(15.0, abs=1e-4)


def test_a_gap_trigger_that_starts_beyond_its_value_fires_on_crossing_only():
    # the actor pulls away: the gap never comes down to 10 m, so the event never fires
    s = spec([ActorSpec("fast", 1, gap_m=30.0, speed_mps=25.0)],
             [EventSpec("brake", "fast", when_gap_m=10.0, decel_mps2=2.0)])
    res, tr, v = simulate(s)
    assert log(tr)["brake(fast)"]["phase"] == "waiting"
    # and one that starts behind and overtakes fires when it is 15 m ahead
    s = spec([ActorSpec("fast", 1, offset_m=-20.0, speed_mps=25.0)],
             [EventSpec("brake", "fast", when_gap_m=15.0, decel_mps2=2.0)])
    res, tr, v = simulate(s)
    e = log(tr)["brake(fast)"]
    assert e["phase"] in ("running", "done") and 15.0 <= e["start_gap_m"] <= 15.6


def test_stall_stops_stands_still_then_drives_on():
    s = spec([ActorSpec("car", 1, gap_m=50.0, speed_mps=15.0)],
             [EventSpec("stall", "car", at_s=1.0, decel_mps2=5.0, duration_s=4.0)],
             duration_s=15.0)
    res, tr, v = simulate(s)
    car = v[1]
    stopped = np.flatnonzero(car < 1e-6)
    assert tr.t[stopped[0]] == pytest.approx(1.0 + 3.0, abs=0.1 + 1e-9)  # 15 m/s at 5 m/s^2
    assert tr.t[stopped[-1]] - tr.t[stopped[0]] == pytest.approx(4.0, abs=0.11)
    assert np.min(np.diff(car) / 0.1) >= -5.0 - 1e-6  # never harder than declared
    assert car[-1] > 10.0  # drives on towards its set speed
    forever = spec([ActorSpec("car", 1, gap_m=50.0, speed_mps=15.0)],
                   [EventSpec("stall", "car", at_s=1.0)], duration_s=15.0)
    res, tr, v = simulate(forever)
    assert v[1, -50:].max() == 0.0 and log(tr)["stall(car)"]["phase"] == "running"


def test_lane_change_by_direction_and_to_a_lane_two_over():
    s = spec([ActorSpec("a", 0, gap_m=60.0, speed_mps=20.0)],
             [EventSpec("lane_change", "a", at_s=1.0, to_lane=2, duration_s=3.0, name="lc"),
              EventSpec("lane_change", "a", after="lc", direction="right", duration_s=2.0)],
             lanes=3, duration_s=16.0)
    res, tr, v = simulate(s)
    lanes = tr.lane[1]
    seen = [int(lanes[0])] + [int(b) for a, b in zip(lanes[:-1], lanes[1:]) if a != b]
    assert seen == [0, 1, 2, 1]  # one lane at a time, then back right
    lc = log(tr)["lc: lane_change(a)"]
    assert lc["phase"] == "done" and lc["end_s"] - lc["start_s"] == pytest.approx(6.0, abs=1.0)
    road = res.tracks.road
    _, _, d = road.locate(tr.x[1, -1:].astype(float), tr.y[1, -1:].astype(float))
    assert abs(d[0]) < 0.1  # centred at the end
    lateral_speed = np.diff(tr.y[1].astype(float)) / 0.1
    assert np.abs(lateral_speed).max() < 3.7 / 2.0 * 1.875 + 0.3  # min-jerk peak of 2 s


def test_cut_in_moves_into_the_egos_lane_at_the_declared_gap():
    ego = EgoSpec(lane=1, station_m=100.0, speed_mps=25.0, desired_speed_mps=25.0,
                  driver="cruise")
    s = spec([ActorSpec("cutter", 0, gap_m=40.0, speed_mps=20.0)],
             [EventSpec("cut_in", "cutter", when_gap_m=15.0, duration_s=2.0)], ego=ego)
    res, tr, v = simulate(s)
    e = log(tr)["cut_in(cutter)"]
    assert e["start_s"] == pytest.approx(5.0, abs=0.1 + 1e-9)  # (40 - 15) / 5 m/s
    assert 14.5 <= e["start_gap_m"] <= 15.0
    k = np.searchsorted(tr.t, e["end_s"])
    assert tr.lane[1, k] == 1 and e["end_s"] - e["start_s"] == pytest.approx(2.0, abs=0.3)
    assert tr.collided[0].any()  # a cruising ego closing at 5 m/s on 15 m: the suite bites


def test_cut_in_waits_while_someone_is_between_and_never_cuts_into_a_bystander():
    ego = EgoSpec(lane=1, station_m=100.0, speed_mps=25.0, desired_speed_mps=25.0,
                  driver="cruise")
    s = spec([ActorSpec("between", 1, gap_m=5.0, speed_mps=25.0),
              ActorSpec("cutter", 0, gap_m=20.0, speed_mps=25.0)],
             [EventSpec("cut_in", "cutter", at_s=1.0),
              EventSpec("lane_change", "between", at_s=3.0, direction="left")],
             lanes=3, ego=ego)
    res, tr, v = simulate(s)
    e = log(tr)["cut_in(cutter)"]
    # it waits for the bystander to leave the ego's lane (it moves over from 3 s)
    assert e["start_s"] > 3.0 and e["phase"] == "done"
    assert res.counters.collisions == 0


def test_cruise_ignores_a_stopped_car_idm_lane_stops_behind_it_idm_changes_lanes():
    for driver, expect in (("cruise", "hit"), ("idm_lane", "stops"), ("idm", "passes")):
        ego = EgoSpec(lane=0, station_m=100.0, speed_mps=20.0, desired_speed_mps=20.0,
                      driver=driver)
        s = spec([ActorSpec("stopped", 0, gap_m=150.0, kind="obstacle", length_m=4.0)],
                 ego=ego, duration_s=25.0)
        res, tr, v = simulate(s)
        hit = tr.collided[0].any()
        if expect == "hit":
            assert hit and np.allclose(v[0], 20.0, atol=1e-4)
        elif expect == "stops":
            assert not hit and v[0, -1] < 0.1 and set(tr.lane[0].tolist()) == {0}
        else:
            assert not hit and set(tr.lane[0].tolist()) >= {0, 1}
        assert np.all(v[1] == 0.0)  # the obstacle never moves


@pytest.mark.parametrize("follow, collides", [("always", False), ("in_lane", False),
                                               ("never", True)])
def test_follow_actors_sets_whether_the_ego_s_nominal_driving_answers_actors(follow, collides):
    ego = EgoSpec(lane=1, station_m=100.0, speed_mps=25.0, desired_speed_mps=25.0,
                  driver="idm_lane", follow_actors=follow, time_gap_s=1.2)
    # a mild cut-in (30 m ahead, 5 m/s slower, 3 s over): ACC-like following copes with it
    s = spec([ActorSpec("cutter", 0, gap_m=60.0, speed_mps=20.0)],
             [EventSpec("cut_in", "cutter", when_gap_m=30.0, duration_s=3.0)], ego=ego,
             duration_s=20.0)
    res, tr, v = simulate(s)
    assert tr.collided[0].any() == collides
    e = log(tr)["cut_in(cutter)"]
    k0, k1 = np.searchsorted(tr.t, [e["start_s"], e["end_s"]])
    decel = -np.diff(v[0]) / 0.1
    if follow == "in_lane":  # no reaction while it moves over, then it follows
        assert decel[k0:k1 - 1].max() < 0.5 and decel[k1:].max() > 0.5
    if follow == "always":  # reacts as soon as the cut-in starts
        assert decel[k0:k0 + 15].max() > 0.5


def test_overlap_places_the_target_beside_the_egos_centre_line_and_holds_it():
    ego = EgoSpec(lane=0, station_m=100.0, speed_mps=15.0, desired_speed_mps=15.0,
                  driver="cruise", width_m=1.9)
    for overlap in (50.0, -75.0):
        s = spec([ActorSpec("t", 0, ttc_s=4.0, overlap_pct=overlap, width_m=1.8)], ego=ego,
                 duration_s=6.0)
        res, tr, v = simulate(s)
        dy = tr.y[1].astype(float) - tr.y[0].astype(float)  # straight road along +x
        left_e, right_e = tr.y[0] + 0.95, tr.y[0] - 0.95
        left_t, right_t = tr.y[1] + 0.9, tr.y[1] - 0.9
        share = (np.minimum(left_e, left_t) - np.maximum(right_e, right_t)) / 1.9
        assert np.allclose(share, abs(overlap) / 100.0, atol=1e-3)
        assert np.sign(dy[0]) == -np.sign(overlap)  # positive: the target to the ego's right
        assert np.ptp(dy) < 1e-3  # held while both drive
        assert tr.collided[0].any()  # the overlapping corner is hit


def test_scripted_vehicles_keep_physics_speed_never_negative_and_rates_bounded():
    s = spec([ActorSpec("a", 1, gap_m=30.0, speed_mps=5.0, driver="idm_lane")],
             [EventSpec("brake", "a", at_s=0.5, decel_mps2=9.0, to_speed_mps=0.0),
              EventSpec("speed_change", "a", at_s=3.0, to_speed_mps=30.0, accel_mps2=5.0)],
             duration_s=12.0)
    res, tr, v = simulate(s)
    assert v.min() >= 0.0
    acc = np.diff(v[1]) / 0.1
    assert acc.min() >= -9.0 - 1e-6 and acc.max() <= 1.5 + 1e-6  # IDM caps the speed-up


def test_the_step_is_pure_the_script_state_travels_in_the_traffic_state():
    s = spec([ActorSpec("t", 0, gap_m=30.0, speed_mps=20.0)],
             [EventSpec("brake", "t", at_s=0.0, decel_mps2=3.0)])
    world = make_world(s)
    st0 = init_state(world, np.random.default_rng(0))
    a, _ = step(st0, world, np.random.default_rng(1))
    b, _ = step(st0, world, np.random.default_rng(1))
    assert st0.script.phase[0] == events.WAITING  # the input state is untouched
    assert a.script.phase[0] == events.RUNNING and b.script.phase[0] == events.RUNNING
    for name in ("x", "y", "speed", "heading"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def test_events_of_an_actor_that_left_the_road_are_skipped():
    s = spec([ActorSpec("leaver", 1, station_m=1450.0, speed_mps=30.0)],
             [EventSpec("brake", "leaver", at_s=5.0, decel_mps2=2.0)], duration_s=8.0)
    res, tr, v = simulate(s)
    assert log(tr)["brake(leaver)"]["phase"] == "skipped"


def test_hook_overrides_win_and_lane_change_codes_keep_or_cancel_the_drivers_choice():
    """The hook (e.g. the safety layer) overrides the script; KEEP_CHOICE keeps MOBIL's lane
    change, NO_LANE_CHANGE cancels it."""
    traffic = TrafficSpec(flow_vph_per_lane=0.0, ramp_flow_vph=0.0, initial_fill=False)
    ego = EgoSpec(lane=0, station_m=100.0, speed_mps=25.0, desired_speed_mps=30.0)
    s = spec([ActorSpec("slow", 0, gap_m=40.0, speed_mps=10.0, kind="truck")], ego=ego,
             traffic=traffic, duration_s=8.0)
    for code, changes in ((events.KEEP_CHOICE, True), (events.NO_LANE_CHANGE, False)):
        def hook(st, world, index, accel, code=code):
            return Override(np.array([0]), np.array([np.nan]), np.array([code]))
        res = run(make_world(s), hook=hook)
        assert (0 in res.tracks.lane[0]) and ((1 in res.tracks.lane[0]) == changes)

    def brake_hard(st, world, index, accel):
        return Override(np.array([1]), np.array([-3.0]))
    res = run(make_world(spec([ActorSpec("t", 1, gap_m=40.0, speed_mps=20.0)])),
              hook=brake_hard, duration_s=2.0)
    v = np.hypot(res.tracks.vx[1], res.tracks.vy[1])
    assert v[-1] == pytest.approx(20.0 - 3.0 * 2.0, abs=1e-3)


def test_a_background_queue_forms_behind_an_obstacle_without_collisions():
    traffic = TrafficSpec(flow_vph_per_lane=1200.0, ramp_flow_vph=0.0, truck_share=0.0)
    s = spec([ActorSpec("debris", 0, station_m=900.0, kind="obstacle")], traffic=traffic,
             ego=EgoSpec(lane=1, station_m=100.0, speed_mps=25.0), duration_s=60.0)
    res, tr, v = simulate(s, record_every=10)
    assert res.counters.collisions == 0
    assert res.counters.lane_changes > 10  # drivers move out of the blocked lane


def test_road_dependent_checks_name_the_field():
    with pytest.raises(FieldError, match=r"actors\[0\].lane"):
        make_world(spec([ActorSpec("a", 5, gap_m=10.0)]))
    with pytest.raises(FieldError, match=r"actors\[0\].gap_m.*puts the actor at"):
        make_world(spec([ActorSpec("a", 0, gap_m=5000.0)]))
    with pytest.raises(FieldError, match=r"events\[0\].actor.*next to the ego"):
        make_world(spec([ActorSpec("a", 2, gap_m=10.0)], [EventSpec("cut_in", "a", at_s=1.0)],
                        lanes=3, ego=EgoSpec(lane=0, station_m=100.0)))
    with pytest.raises(FieldError, match=r"events\[0\].to_lane"):
        make_world(spec([ActorSpec("a", 0, gap_m=10.0)],
                        [EventSpec("lane_change", "a", at_s=1.0, to_lane=4)]))


@pytest.mark.parametrize("kwargs, field", [
    (dict(name="ego", lane=0, gap_m=1.0), "name"),
    (dict(name="a", lane=0), "station_m"),
    (dict(name="a", lane=0, gap_m=1.0, ttc_s=2.0), "ttc_s"),
    (dict(name="a", lane=0, gap_m=-1.0), "gap_m"),
    (dict(name="a", lane=0, gap_m=1.0, overlap_pct=120.0), "overlap_pct"),
    (dict(name="a", lane=0, gap_m=1.0, overlap_pct=50.0, lateral_offset_m=0.5), "overlap_pct"),
    (dict(name="a", lane=0, gap_m=1.0, kind="obstacle", speed_mps=3.0), "speed_mps"),
    (dict(name="a", lane=0, gap_m=1.0, speed_mps=math.nan), "speed_mps"),
])
def test_actor_spec_checks(kwargs, field):
    with pytest.raises(FieldError) as err:
        ActorSpec(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("kwargs, field", [
    (dict(type="jump", actor="a", at_s=1.0), "type"),
    (dict(type="brake", actor="a", decel_mps2=2.0), "at_s"),
    (dict(type="brake", actor="a", at_s=1.0, when_gap_m=3.0, decel_mps2=2.0), "when_gap_m"),
    (dict(type="brake", actor="a", at_s=1.0), "decel_mps2"),
    (dict(type="brake", actor="a", at_s=1.0, decel_mps2=12.0), "decel_mps2"),
    (dict(type="brake", actor="a", at_s=1.0, decel_mps2=2.0, duration_s=3.0), "duration_s"),
    (dict(type="lane_change", actor="a", at_s=1.0), "direction"),
    (dict(type="lane_change", actor="a", at_s=1.0, direction="up"), "direction"),
    (dict(type="cut_in", actor="ego", at_s=1.0), "actor"),
    (dict(type="cut_in", actor="a", at_s=1.0, duration_s=0.2), "duration_s"),
])
def test_event_spec_checks(kwargs, field):
    with pytest.raises(FieldError) as err:
        EventSpec(**kwargs)
    assert err.value.field == field


def test_world_spec_cross_checks_name_the_path():
    a = ActorSpec("a", 0, gap_m=10.0)
    with pytest.raises(FieldError, match=r"actors\[1\].name"):
        spec([a, a])
    with pytest.raises(FieldError, match=r"events\[0\].actor"):
        spec([a], [EventSpec("brake", "b", at_s=1.0, decel_mps2=1.0)])
    with pytest.raises(FieldError, match=r"events\[0\].after"):
        spec([a], [EventSpec("brake", "a", after="later", decel_mps2=1.0),
                   EventSpec("brake", "a", at_s=1.0, decel_mps2=1.0, name="later")])
    with pytest.raises(FieldError, match=r"actors\[0\].ttc_s"):
        spec([ActorSpec("a", 0, ttc_s=4.0, speed_mps=30.0)])
    with pytest.raises(FieldError, match=r"actors\[0\].overlap_pct"):
        spec([ActorSpec("a", 1, gap_m=4.0, overlap_pct=50.0)])
    with pytest.raises(FieldError, match=r"actors\[0\].gap_m"):
        WorldSpec(ego=None, actors=(a,))


def test_per_lane_flows_and_a_density_fill():
    traffic = TrafficSpec(flow_vph_per_lane=1000.0, lane_flows_vph=(1800.0, 900.0, 300.0),
                          density_vpkm_per_lane=(30.0,), truck_share=0.0)
    s = spec(traffic=traffic, lanes=3, length_m=3000.0, ego=EgoSpec(lane=1, station_m=100.0))
    world = make_world(s)
    assert world.inflow_vph().tolist() == [1800.0, 900.0, 300.0]
    st = init_state(world, np.random.default_rng(3))
    counts = np.bincount(st.lane[st.active & (st.ids > 0)], minlength=3)
    assert np.all(np.abs(counts / 3.0 - 30.0) < 4.0)  # veh/km per lane, minus the start
    bad = TrafficSpec(lane_flows_vph=(1800.0, 900.0))
    with pytest.raises(FieldError, match="lane_flows_vph"):
        make_world(spec(traffic=bad, lanes=3))
    with pytest.raises(FieldError, match="density_vpkm_per_lane"):
        make_world(spec(traffic=TrafficSpec(density_vpkm_per_lane=(120.0,)), lanes=3))


def test_a_lane_change_of_its_own_ends_an_actors_lateral_offset():
    # an IDM actor held 0.8 m off centre behind a slow truck overtakes by MOBIL and finishes
    s = spec([ActorSpec("a", 0, gap_m=30.0, speed_mps=25.0, desired_speed_mps=30.0,
                        driver="idm", lateral_offset_m=0.8),
              ActorSpec("truck", 0, gap_m=70.0, speed_mps=15.0, kind="truck")],
             ego=EgoSpec(lane=1, station_m=50.0, speed_mps=10.0, desired_speed_mps=10.0,
                         driver="cruise"), duration_s=15.0)
    res, tr, v = simulate(s)
    assert 1 in tr.lane[1] and res.counters.collisions == 0
    world = make_world(s)
    st = init_state(world, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    changing, d = [], []
    for _ in range(120):
        st, _ = step(st, world, rng)
        changing.append(st.lane_from[1] >= 0)
        d.append(st.d[1])
    first_end = np.flatnonzero(np.diff(np.asarray(changing, int)) == -1)
    assert len(first_end), "the lane change never finished"
    k = first_end[0] + 1
    assert st.lane[1] == 1 or changing[-1]
    assert np.abs(d[k:k + 20]).max() < 0.3  # centred in the new lane, the offset is gone
