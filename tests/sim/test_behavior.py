import numpy as np
import pytest

from sim import behavior
from sim.road import curved_highway, straight_highway
from sim.spec import EgoSpec, RoadSpec, TrafficSpec, WorldSpec
from sim.state import KIND_TRUCK
from sim.world import Counters, Override, World, step

NO_TRAFFIC = TrafficSpec(flow_vph_per_lane=0.0, ramp_flow_vph=0.0, initial_fill=False)


def _world(road):
    spec = WorldSpec(road=RoadSpec("straight_highway", {}), traffic=NO_TRAFFIC, ego=None)
    return World(spec=spec, road=road)


def _drive(st, world, seconds, watch=None):
    rng = np.random.default_rng(0)
    counters = Counters()
    states = [st]
    for _ in range(int(round(seconds / world.dt_s))):
        st, counters = step(st, world, rng, counters)
        states.append(st)
    return st, counters, states


def test_idm_free_road_reaches_desired_speed():
    a = behavior.idm_accel(np.array([0.0, 30.0]), np.zeros(2), np.full(2, np.inf),
                           np.full(2, 30.0), 1.5, 2.0, 1.5, 2.0)
    np.testing.assert_allclose(a, [1.5, 0.0])


def test_idm_car_stops_behind_a_stalled_one_at_about_s0(state_factory):
    road = straight_highway(n_lanes=1, length_m=2000.0)
    st = state_factory(road, [
        dict(lane=0, station_m=100.0, speed_mps=25.0, min_gap_m=2.0, length=4.5),
        dict(lane=0, station_m=400.0, speed_mps=0.0, v0_mps=0.001, max_accel_mps2=0.0001,
             length=4.5),
    ])
    st, c, states = _drive(st, _world(road), 60.0)
    gap = st.station[1] - st.station[0] - 4.5
    assert gap == pytest.approx(2.0, abs=0.3)
    assert st.speed[0] < 0.05
    assert min(float(s.speed[0]) for s in states) >= 0.0
    assert c.collisions == 0


def test_mobil_overtakes_a_slow_truck_and_keeps_right_afterwards(state_factory):
    road = straight_highway(n_lanes=2, length_m=5000.0)
    st = state_factory(road, [
        dict(lane=0, station_m=100.0, speed_mps=30.0, v0_mps=33.0),
        dict(lane=0, station_m=250.0, speed_mps=20.0, v0_mps=20.0, kind=KIND_TRUCK,
             length=15.0, width=2.5, max_accel_mps2=0.5),
    ])
    st, c, states = _drive(st, _world(road), 60.0)
    lanes = [int(s.lane[0]) for s in states]
    assert 1 in lanes, "the car never pulled out"
    assert st.station[0] > st.station[1] + 20.0, "the car did not pass the truck"
    assert lanes[-1] == 0, "the car did not return to the right lane"
    assert c.lane_changes >= 2 and c.collisions == 0


@pytest.mark.parametrize("speed_mps, duration_s, road", [
    (30.0, 4.0, straight_highway(n_lanes=2, length_m=3000.0)),
    (40.0, 3.5, straight_highway(n_lanes=2, length_m=3000.0)),
    (12.0, 5.0, straight_highway(n_lanes=2, length_m=3000.0)),
    (30.0, 4.0, curved_highway(n_lanes=2)),
])
def test_lane_change_is_smooth_lateral_motion(state_factory, speed_mps, duration_s, road):
    st = state_factory(road, [dict(lane=1, station_m=300.0, speed_mps=speed_mps,
                                   v0_mps=speed_mps, lane_change_s=duration_s)])
    world = _world(road)
    rng = np.random.default_rng(0)

    def command(state, world, index, accel):  # change right once, at the start
        if state.step == 0:
            return Override(np.array([0]), np.array([np.nan]), np.array([0]))
        return None

    d, lane, xy = [], [], []
    for _ in range(120):
        st, _ = step(st, world, rng, None, command)
        d.append(float(st.d[0]))
        lane.append(int(st.lane[0]))
        xy.append((float(st.x[0]), float(st.y[0])))
    d = np.array(d)
    assert set(lane) == {0}
    assert d[0] == pytest.approx(3.7, abs=0.1)  # starts one lane width left of its target
    lateral_accel = np.diff(d, 2) / world.dt_s**2
    assert np.max(np.abs(lateral_accel)) <= 2.0
    assert np.max(np.abs(np.diff(d))) < 0.25  # never a jump
    moving = np.flatnonzero(np.abs(d) > 0.1)
    assert 3.0 <= (moving[-1] + 1) * world.dt_s <= duration_s + 0.5
    assert np.min(d) > -0.15  # no real overshoot
    assert abs(d[-1]) < 0.05
    assert st.lane_from[0] == -1


def test_lane_change_waits_for_a_safe_gap(state_factory):
    road = straight_highway(n_lanes=2, length_m=3000.0)
    # a fast car right behind in the target lane: changing would make it brake hard
    st = state_factory(road, [
        dict(lane=0, station_m=200.0, speed_mps=20.0, v0_mps=33.0),
        dict(lane=0, station_m=240.0, speed_mps=15.0, v0_mps=15.0),
        dict(lane=1, station_m=185.0, speed_mps=32.0, v0_mps=32.0),
    ])
    index = behavior.build_lane_index(st.lane, st.lane_from, st.station, st.active)
    acc = behavior.longitudinal_accel(st, road, index)
    rows, tgt = behavior.mobil_decisions(st, road, index, acc, behavior.BehaviorParams(), 0.1)
    assert 0 not in rows


def test_behavior_params_validation():
    with pytest.raises(ValueError):
        behavior.BehaviorParams(heading_gain_1ps=1.0, lateral_gain_1ps=1.0)


def test_ego_drives_with_its_own_desired_speed():
    spec = WorldSpec(road=RoadSpec("straight_highway", {"n_lanes": 2, "length_m": 3000.0}),
                     traffic=NO_TRAFFIC, ego=EgoSpec(lane=0, station_m=50.0, speed_mps=10.0,
                                                     desired_speed_mps=20.0))
    from sim.world import make_world, run

    res = run(make_world(spec), duration_s=60.0, record_every=None)
    assert res.state.role[0] == 1
    assert res.state.speed[0] == pytest.approx(20.0, abs=0.5)
