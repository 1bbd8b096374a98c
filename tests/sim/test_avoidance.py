"""The ego's safety layer: actuator, kinematics, scoring against forecasts, the AEB, and
closed-loop behaviour on small Euro NCAP-like and cut-in situations."""

import dataclasses
import math

import numpy as np
import pytest

from sim import avoidance as A
from sim.forecast import Prediction
from sim.road import straight_highway
from sim.spec import ActorSpec, EgoSpec, EventSpec, RoadSpec, TrafficSpec, WorldSpec
from sim.world import make_world, run

DT = 0.1
P = A.AvoidanceParams()


class ConstantVelocity:
    """A minimal forecaster for tests: the current velocity held (K = 1, no uncertainty)."""

    name = "cv_test"
    dt_s = None
    n_neighbors = 0

    def predict(self, history, horizon_steps):
        t = history.dt_s * np.arange(1, horizon_steps + 1)
        xy = history.xy[:, -1, None, :] + history.vxy[:, -1, None, :] * t[None, :, None]
        return Prediction(xy=xy[:, None], prob=np.ones((len(xy), 1)))


class Frozen:
    """A wrong forecaster: every agent stops dead where it is."""

    name = "frozen"
    dt_s = None
    n_neighbors = 0

    def predict(self, history, horizon_steps):
        xy = np.repeat(history.xy[:, -1, None, :], horizon_steps, axis=1)
        return Prediction(xy=xy[:, None], prob=np.ones((len(xy), 1)))


def track_spec(ego_kph=50.0, target_kph=0.0, gap_m=None, ttc_s=4.0, duration_s=8.0,
               n_lanes=2, events=()):
    """A test track: the ego cruising in lane 0 toward a target in its lane."""
    place = {"gap_m": gap_m} if gap_m is not None else {"ttc_s": ttc_s}
    return WorldSpec(
        road=RoadSpec("straight_highway", {"n_lanes": n_lanes, "length_m": 800.0}),
        traffic=TrafficSpec(flow_vph_per_lane=0.0, ramp_flow_vph=0.0, initial_fill=False),
        ego=EgoSpec(lane=0, station_m=100.0, speed_mps=ego_kph / 3.6,
                    desired_speed_mps=max(ego_kph, 1.0) / 3.6, driver="cruise"),
        actors=(ActorSpec(name="target", lane=0, speed_mps=target_kph / 3.6, **place),),
        events=events, duration_s=duration_s, seed=1, name="track")


def cut_in_spec(gap_m=15.0, lateral_s=4.0, cutter_kph=70.0):
    """The ego at 100 km/h in lane 1; a slower car in lane 0 cuts in when gap_m ahead."""
    return WorldSpec(
        road=RoadSpec("straight_highway", {"n_lanes": 2, "length_m": 1000.0}),
        traffic=TrafficSpec(flow_vph_per_lane=0.0, ramp_flow_vph=0.0, initial_fill=False),
        ego=EgoSpec(lane=1, station_m=100.0, speed_mps=100 / 3.6, desired_speed_mps=105 / 3.6,
                    driver="idm_lane", follow_actors="in_lane", time_gap_s=1.2),
        actors=(ActorSpec(name="cutter", lane=0, gap_m=40.0, speed_mps=cutter_kph / 3.6,
                          driver="idm_lane"),),
        events=(EventSpec(type="cut_in", actor="cutter", when_gap_m=gap_m,
                          duration_s=lateral_s),),
        duration_s=8.0, seed=3, name="cut")


def closed_loop(spec, mode, predictor=None, params=None):
    layer = A.SafetyLayer(mode, params, predictor, spec.dt_s, seed=spec.seed)
    res = run(make_world(spec), hook=layer)
    return res, layer


# ---- parameters and the actuator ------------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"max_brake_mps2": 0.0}, {"sensing_range_m": -1.0}, {"p_release": 0.2},
    {"keep_lane_accels_mps2": (2.0, -12.0)}, {"horizon_s": float("nan")},
    {"aeb_min_decel_mps2": 10.0}, {"latency_s": 5.0}, {"keep_lane_accels_mps2": ()}])
def test_params_reject_bad_values(change):
    with pytest.raises(ValueError):
        A.AvoidanceParams(**change)


def test_actuator_delays_then_ramps_at_the_jerk_limit():
    act = A.Actuator.idle(P, DT)
    assert len(act.pending_mps2) == 2  # 0.2 s at 0.1 s steps
    applied = []
    for _ in range(8):
        act = A.actuator_step(act, -9.0, P, DT)
        applied.append(act.applied_mps2)
    # nothing for 0.2 s, then 3 m/s^2 per step (30 m/s^3) down to the limit
    assert applied == pytest.approx([0.0, 0.0, -3.0, -6.0, -9.0, -9.0, -9.0, -9.0])
    for _ in range(3):
        act = A.actuator_step(act, 5.0, P, DT)
    assert act.applied_mps2 == pytest.approx(-6.0)  # released at the same rate
    for _ in range(10):
        act = A.actuator_step(act, 5.0, P, DT)
    assert act.applied_mps2 == pytest.approx(P.max_accel_mps2)  # capped at +3


def test_actuator_response_matches_stepping_the_actuator():
    rng = np.random.default_rng(0)
    for _ in range(20):
        act = A.Actuator(rng.uniform(-9, 3, 2), float(rng.uniform(-9, 3)))
        commands = rng.uniform(-9, 3, 5)
        rolled = A.actuator_response(act, commands, 25, P, DT)
        for c, row in zip(commands, rolled):
            a, seq = act, []
            for _ in range(25):
                a = A.actuator_step(a, c, P, DT)
                seq.append(a.applied_mps2)
            assert row == pytest.approx(seq)


def test_speed_profile_never_reverses_and_stops_at_the_braking_distance():
    v, dist = A.speed_profile(20.0, np.full((1, 60), -5.0), DT)
    assert v.min() == 0.0 and np.all(np.diff(v[0]) <= 0)
    assert dist[0, -1] == pytest.approx(20.0 ** 2 / (2 * 5.0), abs=0.5)
    v, _ = A.speed_profile(0.0, np.concatenate([np.full((1, 5), -3.0),
                                                np.full((1, 5), 1.0)], 1), DT)
    assert v[0, 5] == 0.0 and v[0, -1] == pytest.approx(0.5)  # starts again from rest


# ---- the reactive AEB ------------------------------------------------------------------------


def test_required_decel_matches_hand_computed_cases():
    # a stopped target 40 m ahead at 20 m/s: v^2 / 2d
    assert A.required_decel(40.0, 20.0, 0.0, 0.0, 0.0, 0.0) == pytest.approx(5.0)
    # 0.5 s of delay eats 10 m of the 40
    assert A.required_decel(40.0, 20.0, 0.0, 0.0, 0.5, 0.0) == pytest.approx(400 / 60)
    # a lead at constant 10 m/s: shed the 10 m/s difference within 20 m
    assert A.required_decel(20.0, 20.0, 10.0, 0.0, 0.0, 0.0) == pytest.approx(2.5)
    # slower than the lead, nothing to do; a gap already too small, nothing suffices
    assert A.required_decel(5.0, 10.0, 15.0, 0.0, 0.0, 0.0) == 0.0
    assert math.isinf(A.required_decel(-1.0, 10.0, 0.0, 0.0, 0.0, 0.0))
    # a lead braking 6 m/s^2 from 14 m/s, 12 m ahead, both at 14 m/s: stop behind its stop
    lead_stop = 14.0 ** 2 / 12.0
    assert A.required_decel(12.0, 14.0, 14.0, -6.0, 0.0, 0.0) == pytest.approx(
        14.0 ** 2 / (2 * (12.0 + lead_stop)))


def test_reactive_command_brakes_only_when_needed_and_holds_until_not_closing():
    decel, braking, ttc = A.reactive_command(100.0, 20.0, 0.0, 0.0, False, P)
    assert decel is None and not braking and ttc == pytest.approx(5.0)
    decel, braking, _ = A.reactive_command(30.0, 20.0, 0.0, 0.0, False, P)
    assert braking and P.aeb_min_decel_mps2 <= decel <= P.max_brake_mps2
    # while braking it goes on until the ego no longer closes in
    decel, braking, _ = A.reactive_command(30.0, 8.0, 0.0, 0.0, True, P)
    assert braking and decel >= P.aeb_min_decel_mps2
    decel, braking, _ = A.reactive_command(30.0, 10.0, 10.0, 0.0, True, P)
    assert not braking and decel is None


# ---- plans and their scores --------------------------------------------------------------------


def _layer_state(state_factory, vehicles, mode="cv"):
    road = straight_highway(n_lanes=3, length_m=2000.0)
    st = state_factory(road, vehicles)
    layer = A.SafetyLayer(mode, P, ConstantVelocity() if mode != "reactive" else None, DT)
    layer.actuator = A.Actuator.idle(P, DT)
    return road, st, layer


def test_candidates_cover_braking_and_lane_changes_where_lanes_exist(state_factory):
    road, st, layer = _layer_state(state_factory, [
        {"lane": 1, "station_m": 300.0, "speed_mps": 25.0, "length": 4.7, "width": 1.9}])
    cand = A.plan_candidates(st, road, 0.5, layer.actuator, P, DT, full=True)
    keep = cand.side == A.KEEP
    assert cand.accel_mps2[0] == 0.5 and np.all(cand.accel_mps2[1:][keep[1:]] < 0.5)
    assert cand.accel_mps2[keep].min() == -P.max_brake_mps2
    assert {A.LEFT, A.RIGHT} <= set(cand.side.tolist())
    assert cand.s.shape == (cand.n, 30) and cand.rel_heading.shape == (cand.n, 30)
    # harder braking drives less; lane changes end a lane over (3.7 m)
    assert np.all(np.diff(cand.dist[keep][1:, -1]) <= 1e-9)
    left = np.flatnonzero(cand.side == A.LEFT)[0]
    lateral = cand.world_xy(road, left)[-1, 1] - cand.world_xy(road, 0)[-1, 1]
    assert lateral == pytest.approx(3.7, abs=0.05)
    # in the left lane, no lane to the left
    _, st2, _ = _layer_state(state_factory, [{"lane": 2, "station_m": 300.0, "speed_mps": 25}])
    assert set(A.lane_change_targets(st2, road, P)) == {A.RIGHT}


def test_lane_changes_need_a_gap_in_the_target_lane(state_factory):
    road = straight_highway(n_lanes=3, length_m=2000.0)
    ego = {"lane": 1, "station_m": 300.0, "speed_mps": 25.0, "length": 4.7, "width": 1.9}
    free = state_factory(road, [ego, {"lane": 2, "station_m": 400.0, "speed_mps": 25.0},
                                {"lane": 0, "station_m": 200.0, "speed_mps": 25.0}])
    assert set(A.lane_change_targets(free, road, P)) == {A.LEFT, A.RIGHT}
    # a car alongside on the left, a faster one closing from behind on the right
    busy = state_factory(road, [ego, {"lane": 2, "station_m": 302.0, "speed_mps": 25.0},
                                {"lane": 0, "station_m": 270.0, "speed_mps": 35.0}])
    assert A.lane_change_targets(busy, road, P) == {}


def test_scores_flag_a_stopped_car_ahead_but_not_a_car_in_the_next_lane(state_factory):
    road, st, layer = _layer_state(state_factory, [
        {"lane": 1, "station_m": 300.0, "speed_mps": 25.0, "length": 4.7, "width": 1.9},
        {"lane": 1, "station_m": 365.0, "speed_mps": 0.0},  # stopped, 60 m ahead
        {"lane": 2, "station_m": 310.0, "speed_mps": 25.0}])  # beside, same speed
    layer.buffer.push(st)
    fc = layer.forecast(st, st, np.array([1, 2]), road)
    cand = A.plan_candidates(st, road, 0.0, layer.actuator, P, DT, full=True)
    sc = A.score_plans(cand, fc, road, 4.7, 1.9, P, DT)
    assert sc.p_collision[0] > 0.99  # holding 25 m/s runs into it
    assert sc.p_agent[0, 1] < 1e-3  # the neighbour is no threat
    hardest = np.argmin(np.where(cand.side == A.KEEP, cand.accel_mps2, np.inf))
    assert sc.p_collision[hardest] < 1e-3 and sc.p_margin[hardest] < sc.p_margin[0]
    cost = A.plan_costs(cand, sc, 0.0, 30.0, P, DT)
    best, kind = A.choose(sc, cost, cand, False, P)
    assert best != 0 and kind in ("comfortable", "safe", "restore")


def test_a_driver_braking_hard_is_eased_only_where_a_gentler_plan_is_safe(state_factory):
    # the driver (nominal) brakes at 6 m/s^2; a car 60 m ahead at 22 m/s leaves room for
    # braking gently, a stopped car 40 m ahead does not
    roomy = [{"lane": 1, "station_m": 300.0, "speed_mps": 25.0, "length": 4.7, "width": 1.9},
             {"lane": 1, "station_m": 365.0, "speed_mps": 22.0}]
    tight = [roomy[0], {"lane": 1, "station_m": 345.0, "speed_mps": 0.0}]
    chosen = {}
    for name, vehicles in (("roomy", roomy), ("tight", tight)):
        road, st, layer = _layer_state(state_factory, vehicles)
        layer.buffer.push(st)
        fc = layer.forecast(st, st, np.array([1]), road)
        cand = A.plan_candidates(st, road, -6.0, layer.actuator, P, DT, full=True,
                                 ease_to_mps2=0.0)
        keep = cand.accel_mps2[cand.side == A.KEEP]
        assert np.any((keep > -6.0) & (keep < 0.0)) and keep.max() < 0.0  # gentler, no coasting
        sc = A.score_plans(cand, fc, road, 4.7, 1.9, P, DT)
        best, kind = A.choose(sc, A.plan_costs(cand, sc, -6.0, 30.0, P, DT), cand, False, P)
        chosen[name] = float(cand.accel_mps2[best])
        # without easing the layer never brakes less than the driver
        c2 = A.plan_candidates(st, road, -6.0, layer.actuator, P, DT, full=True)
        assert np.all(c2.accel_mps2[c2.side == A.KEEP] <= -6.0) and not c2.easing
    assert chosen["roomy"] > -P.ease_from_mps2  # no hard brake needed
    assert chosen["tight"] <= -6.0  # the driver's braking (or harder) is needed


def test_only_braking_for_the_car_ahead_is_eased(state_factory):
    from sim import behavior

    road = straight_highway(n_lanes=3, length_m=2000.0)
    ego = {"lane": 1, "station_m": 300.0, "speed_mps": 25.0, "length": 4.7, "width": 1.9,
           "v0_mps": 30.0, "time_gap_s": 1.5, "min_gap_m": 2.0, "max_accel_mps2": 1.5,
           "comf_decel_mps2": 2.0}
    lead = {"lane": 1, "station_m": 320.0, "speed_mps": 20.0, "length": 4.7, "width": 1.9}

    def limit(vehicles, nominal=None, params=P):
        st = state_factory(road, vehicles)
        index = behavior.build_lane_index(st.lane, st.lane_from, st.station, st.active)
        if nominal is None:  # the driver's own IDM command
            nominal = float(behavior.longitudinal_accel(st, road, index)[0])
        return A.ease_limit(st, road, index, nominal, params), nominal

    eased, nominal = limit([ego, lead])  # 15 m behind a slower car: IDM brakes at its limit
    assert nominal <= -P.ease_from_mps2 and eased == 0.0
    assert limit([ego, lead], params=dataclasses.replace(P, ease_driver_braking=False))[0] is None
    assert limit([ego])[0] is None  # nobody ahead: the hard brake is for something else
    # braking harder than the car ahead explains (a red light, a lane's end): not eased
    assert limit([ego, {**lead, "station_m": 400.0}], nominal=-6.0)[0] is None
    # a lower speed limit (v0 well below the speed) brakes hard on its own: not eased
    assert limit([{**ego, "v0_mps": 12.0}, lead])[0] is None
    # a milder one: eased no further than the driver's free-road braking
    slow, _ = limit([{**ego, "v0_mps": 22.0}, lead])
    assert slow is not None and -P.ease_from_mps2 < slow < 0.0
    # a car ahead that would brake the driver harder than it does is not what brakes it
    assert limit([ego, {**lead, "station_m": 313.0, "speed_mps": 0.0}], nominal=-5.0)[0] is None
    # at a junction (signals, yielding) or in a lane that ends: never eased
    st = state_factory(road, [ego, lead])
    index = behavior.build_lane_index(st.lane, st.lane_from, st.station, st.active)
    nominal = float(behavior.longitudinal_accel(st, road, index)[0])
    assert A.ease_limit(st, road, index, nominal, P, junction=object()) is None


def test_easing_the_driver_turns_a_cut_in_into_fewer_hard_brakes():
    # the cutter 25 m ahead: the driver (IDM, 1.2 s time gap) brakes at 9 m/s^2 once it is in
    # the lane; the forecast shows that 3 m/s^2 keeps every safety limit
    spec = cut_in_spec(gap_m=25.0, lateral_s=2.5, cutter_kph=80.0)
    applied = {}
    for ease in (True, False):
        params = dataclasses.replace(P, ease_driver_braking=ease)
        res, layer = closed_loop(spec, "cv", ConstantVelocity(), params)
        assert not res.tracks.collided[res.tracks.ego].any()
        e = res.tracks.ego
        speed = np.hypot(res.tracks.vx[e], res.tracks.vy[e])
        applied[ease] = np.diff(speed[np.isfinite(speed)]) / spec.dt_s
        if ease:
            assert any(p.action.startswith("ease braking") for p in layer.plans.values())
    assert applied[False].min() < -8.0 and applied[True].min() > -P.ease_from_mps2


def test_uncertainty_turns_a_near_miss_into_a_risk(state_factory):
    road, st, layer = _layer_state(state_factory, [
        {"lane": 1, "station_m": 300.0, "speed_mps": 20.0, "length": 4.7, "width": 1.9},
        {"lane": 2, "station_m": 320.0, "speed_mps": 10.0, "d": -1.2}])  # hugging our lane
    layer.buffer.push(st)
    fc = layer.forecast(st, st, np.array([1]), road)
    cand = A.plan_candidates(st, road, 0.0, layer.actuator, P, DT, full=False)
    tight = A.score_plans(cand, fc, road, 4.7, 1.9, A.AvoidanceParams(sigma_floor_m=0.05), DT)
    wide = A.score_plans(cand, dataclasses.replace(fc, sigma=fc.sigma * 8.0), road, 4.7, 1.9,
                         P, DT)
    assert wide.p_collision[0] > tight.p_collision[0] + 0.05


# ---- closed loop ---------------------------------------------------------------------------------


def test_ccrs_none_collides_reactive_and_forecasts_stop_in_time():
    spec = track_spec(ego_kph=60.0, duration_s=10.0)
    res, _ = closed_loop(spec, "none")
    assert res.tracks.collided[res.tracks.ego].any()
    for mode, pred in (("reactive", None), ("cv", ConstantVelocity())):
        res, layer = closed_loop(spec, mode, pred)
        tr = res.tracks
        assert not tr.collided[tr.ego].any(), mode
        assert res.state.speed[0] < 0.1  # stopped behind the target
        assert any(p.intervening for p in layer.plans.values())
        # the applied deceleration never exceeds the limit nor jumps faster than the jerk limit
        acc = np.array([p.applied_mps2 for p in layer.plans.values()])
        assert acc.min() >= -P.max_brake_mps2 - 1e-9
        assert np.abs(np.diff(acc)).max() <= P.jerk_limit_mps3 * DT + 1e-9


def test_forecasts_brake_earlier_and_gentler_than_the_aeb():
    spec = track_spec(ego_kph=50.0)
    first, hardest = {}, {}
    for mode, pred in (("reactive", None), ("cv", ConstantVelocity())):
        _, layer = closed_loop(spec, mode, pred)
        plans = list(layer.plans.values())
        first[mode] = next(p.t_s for p in plans if p.intervening)
        hardest[mode] = min(p.applied_mps2 for p in plans)
    assert first["cv"] < first["reactive"] - 1.0
    assert hardest["cv"] > hardest["reactive"] + 2.0


def test_the_layer_stops_and_holds_behind_a_standing_car_instead_of_creeping():
    spec = track_spec(ego_kph=10.0, duration_s=12.0)  # the cruise driver would drive into it
    gaps, speeds = {}, {}
    for below in (1.0, 0.0):  # 0: never stop and hold, nor match
        params = dataclasses.replace(P, stop_below_mps=below, match_below_mps=below)
        res, layer = closed_loop(spec, "cv", ConstantVelocity(), params)
        tr = res.tracks
        assert not tr.collided[tr.ego].any()
        speed = np.hypot(tr.vx[tr.ego], tr.vy[tr.ego])
        gaps[below] = float(tr.x[1, -1] - tr.x[tr.ego, -1])
        speeds[below] = speed
        if below:
            held = [p for p in layer.plans.values() if p.action.startswith("stop and hold")]
            assert held and all(p.command_mps2 == -P.stop_decel_mps2 for p in held)
    stopped = np.flatnonzero(speeds[1.0] < 1e-6)
    assert len(stopped) and np.all(speeds[1.0][stopped[0]:] < 1e-6)  # stopped, and stays
    # it drives on once the car ahead moves off
    go = EventSpec(type="speed_change", actor="target", at_s=8.0, to_speed_mps=5.0)
    res, layer = closed_loop(dataclasses.replace(spec, events=(go,)), "cv", ConstantVelocity())
    speed = np.hypot(res.tracks.vx[res.tracks.ego], res.tracks.vy[res.tracks.ego])
    assert speed[int(7.5 / spec.dt_s)] < 1e-6 and speed[-1] > 2.0
    # without it the ego creeps on at walking pace and stands still later, closer
    creep = np.flatnonzero(speeds[0.0] < 1e-6)
    assert len(creep) == 0 or creep[0] >= stopped[0] + 5
    assert gaps[1.0] > gaps[0.0] + 0.2


def test_the_layer_matches_a_slower_cars_speed_instead_of_creeping_up_on_it():
    # Euro NCAP CCRm: the cruise driver holds 50 km/h behind a car at 20 km/h
    spec = track_spec(ego_kph=50.0, target_kph=20.0, duration_s=12.0)
    v_target = 20.0 / 3.6
    end = {}
    for below in (1.0, 0.0):  # match_below_mps 0: never match
        params = dataclasses.replace(P, match_below_mps=below)
        res, layer = closed_loop(spec, "cv", ConstantVelocity(), params)
        tr = res.tracks
        assert not tr.collided[tr.ego].any()
        speed = np.hypot(tr.vx[tr.ego], tr.vy[tr.ego])
        end[below] = (speed[-1], float(tr.x[1, -1] - tr.x[tr.ego, -1]))
        matched = [p for p in layer.plans.values() if p.action.startswith("match speed")]
        assert bool(matched) == bool(below)
    assert end[1.0][0] <= v_target + 0.05  # down to its speed: the test's end
    assert end[0.0][0] > v_target + 0.05  # without: still closing in when the time is up
    assert end[1.0][1] > end[0.0][1]  # and further back


def test_lead_braking_hard_is_avoided_with_constant_velocity_forecasts():
    brake = EventSpec(type="brake", actor="target", at_s=2.0, decel_mps2=6.0, to_speed_mps=0.0)
    spec = track_spec(ego_kph=50.0, target_kph=50.0, gap_m=12.0, events=(brake,),
                      duration_s=10.0)
    res, _ = closed_loop(spec, "none")
    assert res.tracks.collided[res.tracks.ego].any()
    for mode, pred in (("reactive", None), ("cv", ConstantVelocity())):
        res, _ = closed_loop(spec, mode, pred)
        assert not res.tracks.collided[res.tracks.ego].any(), mode


def test_a_forecast_sees_a_cut_in_coming_that_the_aeb_sees_too_late():
    spec = cut_in_spec(gap_m=15.0, lateral_s=4.0, cutter_kph=70.0)
    for mode in ("none", "reactive"):
        res, _ = closed_loop(spec, mode)
        assert res.tracks.collided[res.tracks.ego].any(), mode
    res, layer = closed_loop(spec, "cv", ConstantVelocity())
    assert not res.tracks.collided[res.tracks.ego].any()
    plan = next(p for p in layer.plans.values() if p.intervening)
    assert plan.reacts_to_id == 1 and 1 in plan.threat_ids  # the cutter


class TwoModes:
    """A multimodal forecaster: keep going (probability 1 - p_cut), or move 3.7 m to the
    left over 2 s (p_cut), both at the current speed."""

    name = "two_modes"
    dt_s = None
    n_neighbors = 0
    history_steps = 5

    def __init__(self, p_cut):
        self.p_cut = p_cut

    def predict(self, history, horizon_steps):
        t = history.dt_s * np.arange(1, horizon_steps + 1)
        keep = history.xy[:, -1, None, :] + history.vxy[:, -1, None, :] * t[None, :, None]
        cut = keep.copy()
        cut[..., 1] += 3.7 * np.minimum(t / 2.0, 1.0)
        prob = np.tile([1.0 - self.p_cut, self.p_cut], (len(keep), 1))
        return Prediction(xy=np.stack([keep, cut], axis=1), prob=prob,
                          sigma_m=np.full((len(keep), 2, horizon_steps, 2), 0.2))


def test_mode_probabilities_weigh_the_risk():
    # a slower car in the right lane, 20 m ahead: the layer slows for it only if the mode
    # in which it moves over is likely
    spec = WorldSpec(
        road=RoadSpec("straight_highway", {"n_lanes": 2, "length_m": 1000.0}),
        traffic=TrafficSpec(flow_vph_per_lane=0.0, ramp_flow_vph=0.0, initial_fill=False),
        ego=EgoSpec(lane=1, station_m=100.0, speed_mps=25.0, desired_speed_mps=25.0,
                    driver="cruise"),
        actors=(ActorSpec(name="slow", lane=0, gap_m=20.0, speed_mps=18.0),),
        duration_s=1.5, seed=0, name="modes")
    _, unlikely = closed_loop(spec, "two_modes", TwoModes(0.01))
    _, likely = closed_loop(spec, "two_modes", TwoModes(0.9))
    assert not any(p.intervening for p in unlikely.plans.values())
    late = [p for p in likely.plans.values() if p.t_s > 0.6]  # tracked long enough
    assert late and all(p.intervening for p in late) and 1 in late[-1].threat_ids


def test_latency_delays_the_reaction_and_noise_is_deterministic():
    brake = EventSpec(type="brake", actor="target", at_s=2.0, decel_mps2=6.0, to_speed_mps=0.0)
    spec = track_spec(ego_kph=50.0, target_kph=50.0, gap_m=40.0, events=(brake,),
                      duration_s=6.0)
    times = []
    for latency in (0.0, 0.5):
        _, layer = closed_loop(spec, "cv", ConstantVelocity(), A.AvoidanceParams(
            latency_s=latency))
        times.append(next(p.t_s for p in layer.plans.values() if p.intervening))
    assert times[0] > 2.0
    assert times[1] == pytest.approx(times[0] + 0.5, abs=0.15)
    noisy = A.AvoidanceParams(sensor_noise_pos_m=0.3, sensor_noise_vel_mps=0.3)
    runs = [closed_loop(spec, "cv", ConstantVelocity(), noisy)[0] for _ in range(2)]
    assert np.array_equal(runs[0].tracks.x, runs[1].tracks.x)
    clean = closed_loop(spec, "cv", ConstantVelocity())[0]
    assert not np.array_equal(runs[0].tracks.x, clean.tracks.x)


def test_plan_for_gives_the_viewer_the_plan_of_a_state():
    spec = track_spec(ego_kph=50.0, duration_s=3.0)
    layer = A.SafetyLayer("cv", P, ConstantVelocity(), DT)
    res = run(make_world(spec), hook=layer)
    plan = layer.plan_for(res.state)  # the newest state: the latest plan
    assert plan is layer.last_plan and plan.plan_xy.shape == (30, 2)
    assert plan.mode == "cv" and plan.action
    # a restart (an earlier state) resets the layer
    run(make_world(spec), duration_s=0.5, hook=layer)
    assert max(layer.plans) == 4


def test_predictor_modes_need_a_forecaster_of_the_right_step():
    with pytest.raises(ValueError, match="forecaster"):
        A.SafetyLayer("cv", P, None, DT)

    class Slow(ConstantVelocity):
        dt_s = 0.5

    with pytest.raises(ValueError, match="steps of 0.5"):
        A.SafetyLayer("slow", P, Slow(), DT)


def test_a_wrong_forecast_brakes_needlessly():
    # a lead at the ego's speed; a forecaster that thinks it stops dead makes the layer brake
    spec = track_spec(ego_kph=90.0, target_kph=90.0, gap_m=30.0, duration_s=4.0)
    _, layer = closed_loop(spec, "frozen", Frozen())
    assert min(p.applied_mps2 for p in layer.plans.values()) <= -4.0
    _, layer = closed_loop(spec, "cv", ConstantVelocity())
    assert not any(p.intervening for p in layer.plans.values())
