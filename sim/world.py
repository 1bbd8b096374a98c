"""The closed loop: a WorldSpec becomes a state, a pure step advances it, a recorder keeps it.

`step(state, world, rng) -> state` runs inflow, car following, lane changes, lane keeping,
bicycle dynamics, lane bookkeeping and collision checks for every vehicle at once. Only
`run` holds "the current state".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from sim import behavior, collision, dynamics, events, intersection
from sim.events import Override  # noqa: F401  (the hook's return type, re-exported)
from sim.road import LANE_DEAD_END, TURN_NAMES, Road
from sim.spec import FieldError, WorldSpec
from sim.state import (
    KIND_TRUCK,
    ROLE_BACKGROUND,
    ROLE_EGO,
    TrafficState,
    empty_state,
    sample_vehicles,
    wheelbase_m,
)
from sim.tracks import Tracks

TRUCK_MAX_LANE = 1  # trucks keep to the two right lanes of roads with three or more lanes


@dataclass(frozen=True)
class Counters:
    """Cumulative event counts of a run."""

    entered: int = 0
    exited: int = 0
    lane_changes: int = 0
    merges: int = 0  # lane changes out of a lane that ends (on-ramp merges)
    collisions: int = 0  # pairs that start to overlap
    inflow_waiting: int = 0  # arrival-steps that waited for room at a lane's start
    red_light_runs: int = 0  # fronts crossing a stop line on red (junction roads)
    movements: tuple[int, int, int] = (0, 0, 0)  # junction entries going straight, left, right


@dataclass(frozen=True, eq=False)
class World:
    """What stays fixed during a run: the spec, its road and the behaviour settings."""

    spec: WorldSpec
    road: Road
    behavior: behavior.BehaviorParams = field(default_factory=behavior.BehaviorParams)
    script: events.Script | None = None  # the scenario's actors and events (sim/events.py)
    junction: intersection.Junction | None = None  # control of a road with connector lanes

    @property
    def dt_s(self) -> float:
        return self.spec.dt_s

    def inflow_vph(self) -> np.ndarray:
        """(L,) arrival rate at each entry lane, veh/h (0 where no traffic enters)."""
        road, traffic = self.road, self.spec.traffic
        flow = np.where(road.end_kind == LANE_DEAD_END, traffic.ramp_flow_vph,
                        traffic.flow_vph_per_lane)
        if traffic.lane_flows_vph:
            flow[self.main_entry_lanes] = traffic.lane_flows_vph
        return np.where(road.entry, flow, 0.0)

    @property
    def main_entry_lanes(self) -> np.ndarray:
        """Lanes where traffic enters that do not end (the lanes per-lane settings list)."""
        return np.flatnonzero(self.road.entry & (self.road.end_kind != LANE_DEAD_END))

    def fill_density_vpkm(self) -> np.ndarray:
        """(L,) initial fill density, veh/km; NaN where the inflow sets the spacing."""
        out = np.full(self.road.n_lanes, np.nan)
        density = self.spec.traffic.density_vpkm_per_lane
        if density:
            out[self.main_entry_lanes] = density
        return out

    def min_fill_spacing_m(self) -> float:
        """Shortest centre-to-centre spacing of a density fill: the longest vehicle that can be
        drawn plus the largest jam distance, m."""
        traffic = self.spec.traffic
        kinds = [traffic.car] + ([traffic.truck] if traffic.truck_share > 0 else [])
        return max(d.length_m.hi for d in kinds) + max(d.min_gap_m.hi for d in kinds)


# ---- initial state ------------------------------------------------------------------------


def make_world(spec: WorldSpec, road: Road | None = None) -> World:
    """Build the road of a spec (or take `road`, built from spec.road) and compile its
    script. ValueError on bad road parameters; FieldError (naming e.g. ego.lane,
    actors[0].gap_m) on what the road cannot hold."""
    road = spec.road.build() if road is None else road
    if spec.ego is not None and spec.ego.lane >= road.n_lanes:
        raise FieldError("ego.lane", f"an existing lane (ego lane {spec.ego.lane} does not "
                         f"exist: the road has {road.n_lanes} lanes)")
    world = World(spec=spec, road=road)
    traffic, n_main = spec.traffic, len(world.main_entry_lanes)
    for name, values in (("lane_flows_vph", traffic.lane_flows_vph),
                         ("density_vpkm_per_lane", traffic.density_vpkm_per_lane)):
        if len(values) not in ((0, n_main) if name == "lane_flows_vph" else (0, 1, n_main)):
            raise FieldError(f"traffic.{name}", f"one value per main entry lane ({n_main})")
    if traffic.density_vpkm_per_lane:
        most = 1000.0 / world.min_fill_spacing_m()
        if max(traffic.density_vpkm_per_lane) > most:
            raise FieldError("traffic.density_vpkm_per_lane", f"at most {most:.0f} veh/km "
                             "(the longest vehicle drawn plus its jam distance per vehicle)")
    if road.in_junction.any():
        world = replace(world, junction=intersection.build_junction(
            spec.intersection, road, world.inflow_vph(), _largest_vehicle_m(spec)))
        ego = spec.ego
        turn = TURN_NAMES.index(spec.intersection.ego_turn)
        if ego is not None and not road.allows_turn(np.array([ego.lane]), np.array([turn]))[0]:
            can = [TURN_NAMES[t] for t in range(3)
                   if road.allows_turn(np.array([ego.lane]), np.array([t]))[0]]
            raise FieldError("intersection.ego_turn", f"a movement the ego's lane {ego.lane} "
                             f"leads to ({' or '.join(can)})")
    return replace(world, script=events.compile_script(spec, road))


def _largest_vehicle_m(spec: WorldSpec) -> tuple[float, float]:
    """Longest and widest vehicle a spec can put on the road (m): its drivers' size bounds,
    the ego's and the scripted actors'."""
    traffic = spec.traffic
    kinds = [traffic.car] + ([traffic.truck] if traffic.truck_share > 0 else [])
    length = max(d.length_m.hi for d in kinds)
    width = max(d.width_m.hi for d in kinds)
    if spec.ego is not None:
        length, width = max(length, spec.ego.length_m), max(width, spec.ego.width_m)
    for a in spec.actors:
        length = max(length, a.length_m or 0.0)
        width = max(width, a.width_m or 0.0)
    return length, width


def init_state(world: World, rng: np.random.Generator) -> TrafficState:
    """Populate the road at the inflow density (if asked), place the ego, schedule arrivals."""
    road, traffic = world.road, world.spec.traffic
    flows = world.inflow_vph()
    density = world.fill_density_vpkm()
    lanes, stations = [], []
    if traffic.initial_fill:
        for k in np.flatnonzero((flows > 0) | (density > 0)):
            lo, hi = road.station_range_m[k]
            if road.end_kind[k] == LANE_DEAD_END:
                hi = min(hi, road.change_from_m[k])
            if np.isnan(density[k]):
                mean_gap = 3600.0 / flows[k] * 28.0
                n = int(math.ceil((hi - lo) / max(mean_gap * 0.5, 5.0))) + 2
                gaps = _headways_s(rng, n, flows[k], traffic.min_headway_s) * 28.0
            else:  # shifted exponential spacings with the mean the density asks for
                mean_gap, min_gap = 1000.0 / density[k], world.min_fill_spacing_m()
                n = int(math.ceil((hi - lo) / min_gap)) + 2
                gaps = min_gap + rng.exponential(1.0, n) * max(mean_gap - min_gap, 0.0)
            st = hi - 10.0 - np.cumsum(gaps)
            st = st[st > lo + 5.0]
            lanes.append(np.full(len(st), k, np.int64))
            stations.append(st)
    lane = np.concatenate(lanes) if lanes else np.empty(0, np.int64)
    station = np.concatenate(stations) if stations else np.empty(0)
    ego = world.spec.ego
    if ego is not None:
        # clear room around the ego in its lane
        keep = ~((lane == ego.lane) & (station > ego.station_m - 25.0 - 1.2 * ego.speed_mps)
                 & (station < ego.station_m + 20.0 + 1.5 * ego.speed_mps))
        lane, station = lane[keep], station[keep]
    actors = world.spec.actors
    for a in actors:  # and around the scripted actors
        at_m = a.place(ego)[0]
        keep = ~((lane == a.lane) & (station > at_m - 25.0 - 1.2 * a.speed_mps)
                 & (station < at_m + 20.0 + 1.5 * a.speed_mps))
        lane, station = lane[keep], station[keep]
    n_bg = len(lane)
    n_ego = 0 if ego is None else 1
    n_fixed = n_ego + len(actors)  # rows (and ids) of the ego and the actors come first
    capacity = max(64, int(1.3 * (n_bg + n_fixed)) + 32)
    st = empty_state(capacity, road.n_lanes)
    bg = np.arange(n_fixed, n_fixed + n_bg)
    draw = sample_vehicles(rng, n_bg, truck_share(road, lane, traffic.truck_share),
                           traffic.car, traffic.truck)
    _write_rows(st, bg, draw)
    st.ids[bg] = np.arange(n_fixed, n_fixed + n_bg)
    st.lane[bg] = lane
    st.active[bg] = True
    st.role[bg] = ROLE_BACKGROUND
    s = road.s_at_station(lane, station)
    x, y, h = road.to_world(lane, s, np.zeros(n_bg))
    st.x[bg], st.y[bg], st.heading[bg], st.s[bg], st.station[bg] = x, y, h, s, station
    st.lane_heading[bg], st.lane_curvature[bg] = h, road.pose_at(lane, s)[3]
    junction = world.junction
    if junction is not None:
        st.turn[bg] = junction.draw_turns(rng, lane)
    if ego is not None:
        st.ids[0], st.lane[0], st.active[0], st.role[0] = 0, ego.lane, True, ROLE_EGO
        st.length[0], st.width[0] = ego.length_m, ego.width_m
        st.v0_mps[0], st.time_gap_s[0] = ego.desired_speed_mps, ego.time_gap_s
        st.politeness[0] = ego.politeness
        st.min_gap_m[0], st.max_accel_mps2[0], st.comf_decel_mps2[0] = 2.0, 1.5, 2.0
        st.safe_decel_mps2[0], st.accel_threshold_mps2[0], st.lane_change_s[0] = 3.0, 0.2, 4.0
        s0 = road.s_at_station(np.array([ego.lane]), np.array([ego.station_m]))
        x, y, h = road.to_world(np.array([ego.lane]), s0, np.zeros(1))
        st.x[0], st.y[0], st.heading[0], st.s[0] = x[0], y[0], h[0], s0[0]
        st.lane_heading[0], st.lane_curvature[0] = h[0], road.pose_at(st.lane[:1], s0)[3][0]
        st.station[0] = ego.station_m
        st.speed[0] = ego.speed_mps
        if junction is not None:
            st.turn[0] = TURN_NAMES.index(world.spec.intersection.ego_turn)
    if actors:
        events.place_actors(st, world.spec, road)
    # speeds: as fast as desired, but no faster than the gap ahead allows (IDM equilibrium)
    index = behavior.build_lane_index(st.lane, st.lane_from, st.station, st.active)
    lead = index.leader[bg]
    has = lead >= 0
    lc = np.where(has, lead, 0)
    gap = np.where(has, st.station[lc] - st.station[bg] - 0.5 * (st.length[lc] + st.length[bg]),
                   np.inf)
    lead_v2 = np.where(has, 0.0, np.inf)  # leader speed squared is added below
    if junction is not None:  # the first vehicle of an approach lane treats its line as stopped
        at_line = ~has & junction.is_approach[lane]
        gap = np.where(at_line, road.length_m[lane] - st.s[bg] - 0.5 * st.length[bg]
                       - intersection.STOP_MARGIN_M, gap)
        lead_v2 = np.where(at_line, 0.0, lead_v2)
    room = np.maximum(gap - st.min_gap_m[bg], 0.0)
    speed = np.minimum(room / st.time_gap_s[bg], st.v0_mps[bg])
    # no faster than lets a driver stop behind its leader braking comfortably (front to back)
    for _ in range(1000):
        st.speed[bg] = speed
        limit = np.sqrt(np.where(has, st.speed[lc] ** 2, 0.0) + lead_v2
                        + 2.0 * st.comf_decel_mps2[bg] * room)
        if np.all(speed <= limit + 1e-9):
            break
        speed = np.minimum(speed, limit)
    _set_velocity(st, np.arange(st.capacity))
    nxt = np.where(flows > 0, _headways_s(rng, road.n_lanes, np.maximum(flows, 1.0),
                                          traffic.min_headway_s), np.inf)
    script = None if world.script is None else events.initial_state(world.script)
    return replace(st, next_id=n_fixed + n_bg, inflow_next_s=nxt, script=script)


def truck_share(road: Road, lane: np.ndarray, share: float) -> np.ndarray:
    """(N,) share of trucks among arrivals in each lane: none left of TRUCK_MAX_LANE on roads
    with three or more main lanes."""
    if road.has_successors:  # junction arms: trucks may use every lane (they turn from them)
        return np.full(np.shape(lane), share, float)
    n_main = int(np.count_nonzero(road.end_kind != LANE_DEAD_END))
    banned = (n_main >= 3) & (lane > TRUCK_MAX_LANE) & (road.end_kind[lane] != LANE_DEAD_END)
    return np.where(banned, 0.0, share)


def _headways_s(rng, n, flow_vph, min_headway_s) -> np.ndarray:
    """(n,) time headways, s: shifted exponential with mean 3600 / flow."""
    mean = 3600.0 / np.asarray(flow_vph, float)
    return min_headway_s + rng.exponential(1.0, n) * np.maximum(mean - min_headway_s, 0.0)


def _write_rows(st: TrafficState, rows: np.ndarray, draw: dict[str, np.ndarray]) -> None:
    for name, values in draw.items():
        getattr(st, name)[rows] = values


def _set_velocity(st: TrafficState, rows: np.ndarray) -> None:
    st.vx[rows] = st.speed[rows] * np.cos(st.heading[rows])
    st.vy[rows] = st.speed[rows] * np.sin(st.heading[rows])


# ---- the step -----------------------------------------------------------------------------


ControlHook = Callable[[TrafficState, "World", behavior.LaneIndex, np.ndarray], Override | None]


def step(state: TrafficState, world: World, rng: np.random.Generator,
         counters: Counters | None = None, hook: ControlHook | None = None):
    """Advance every vehicle by one step of world.dt_s. Returns (new state, new counters).

    The scenario's script (world.script: actors and events, sim/events.py) commands its rows
    first; then hook(state, world, lane_index, accel) may return an Override (sim.events) for
    some rows, e.g. the ego's safety layer, which wins over the script.
    """
    road, dt = world.road, world.dt_s
    counters = counters or Counters()
    st = state
    index = behavior.build_lane_index(st.lane, st.lane_from, st.station, st.active)
    junction = world.junction
    if junction is None:
        accel = behavior.longitudinal_accel(st, road, index)
    else:
        jc = intersection.control(st, junction, index)
        accel = behavior.longitudinal_accel(st, road, index,
                                            extra=(jc.rows, jc.gap_m, jc.lead_speed_mps))
        accel = intersection.apply(accel, jc, behavior.MAX_DECEL_MPS2)
    accel = behavior.merge_cooperation(st, road, index, accel, world.behavior)
    lc_rows, lc_target = behavior.mobil_decisions(st, road, index, accel, world.behavior, dt)
    if len(lc_rows):
        keep = (st.kind[lc_rows] != KIND_TRUCK) | (truck_share(road, lc_target, 1.0) > 0)
        if road.has_successors:  # stay in lanes that lead where the driver is going
            keep &= road.allows_turn(lc_target, st.turn[lc_rows])
        lc_rows, lc_target = lc_rows[keep], lc_target[keep]
    lc_s = lat_off = None  # durations of commanded lane changes, lane-keeping offsets (C,)
    if world.script is not None:
        st, ov = events.control(st, world.script, road, index, accel, dt)
        if ov is not None:
            accel, lc_rows, lc_target, lc_s, lat_off = events.apply_override(
                ov, st, accel, lc_rows, lc_target, lc_s, lat_off)
    if hook is not None:
        ov = hook(st, world, index, accel)
        if ov is not None:
            accel, lc_rows, lc_target, lc_s, lat_off = events.apply_override(
                ov, st, accel, lc_rows, lc_target, lc_s, lat_off)

    # start lane changes: the target lane becomes the vehicle's lane, offset measured from it
    n_merges = 0
    if len(lc_rows):
        lane, lane_from = st.lane.copy(), st.lane_from.copy()
        s, d = st.s.copy(), st.d.copy()
        lc_elapsed, lc_d0 = st.lc_elapsed_s.copy(), st.lc_d0_m.copy()
        lc_duration = st.lc_duration_s.copy()
        n_merges = int(np.count_nonzero(road.end_kind[lane[lc_rows]] == LANE_DEAD_END))
        s_new = road.s_at_station(lc_target, st.station[lc_rows])
        s_new, d_new, _, h_new, k_new = road.project(lc_target, s_new, st.x[lc_rows],
                                                     st.y[lc_rows])
        lane_from[lc_rows] = lane[lc_rows]
        lane[lc_rows] = lc_target
        s[lc_rows], d[lc_rows], lc_d0[lc_rows] = s_new, d_new, d_new
        lane_heading, lane_curv = st.lane_heading.copy(), st.lane_curvature.copy()
        lane_heading[lc_rows], lane_curv[lc_rows] = h_new, k_new
        lc_elapsed[lc_rows] = 0.0
        lc_duration[lc_rows] = st.lane_change_s[lc_rows] if lc_s is None else lc_s
        st = st.evolve(lane=lane, lane_from=lane_from, s=s, d=d, lc_elapsed_s=lc_elapsed,
                     lc_d0_m=lc_d0, lc_duration_s=lc_duration, lane_heading=lane_heading,
                     lane_curvature=lane_curv)
    if lat_off is not None and lat_off.any():  # hold offsets: keep to a shifted centre line
        tan_steer = behavior.lateral_steer(st.evolve(d=st.d - lat_off), world.behavior)
    else:
        tan_steer = behavior.lateral_steer(st, world.behavior)

    x, y, heading, speed, vx, vy = dynamics.bicycle_step(
        st.x, st.y, st.heading, st.speed, accel, tan_steer, wheelbase_m(st.length), dt)

    # lane bookkeeping: Frenet coordinates, finished lane changes, successors and exits
    lane, lane_from = st.lane, st.lane_from
    lane_c = np.maximum(lane, 0)
    s_guess = st.s + 0.5 * (st.speed + speed) * dt
    s, d, station, lane_heading, lane_curv = road.project(lane_c, s_guess, x, y)
    changing = lane_from >= 0
    lc_elapsed = st.lc_elapsed_s
    if changing.any():
        # sideways motion needs forward motion: the profile advances with speed
        progress = np.minimum(speed / world.behavior.lane_change_min_speed_mps, 1.0)
        lc_elapsed = np.where(changing, lc_elapsed + dt * progress, 0.0)
        done = (lc_elapsed >= st.lc_duration_s) & (np.abs(d) < 0.3)
        lane_from = np.where(done, -1, lane_from)
    active = st.active
    past_end = active & (s > road.length_m[lane_c])
    n_exited = 0
    ids = st.ids
    turn = st.turn
    movements = counters.movements
    if past_end.any():
        lane, lane_from, active = lane.copy(), lane_from.copy(), active.copy()
        ends = np.flatnonzero(past_end)
        succ = np.full(st.capacity, -1, np.int64)
        succ[ends] = road.next_lane(lane_c[ends], st.turn[ends])
        moves = past_end & (succ >= 0)
        if moves.any():
            r = np.flatnonzero(moves)
            lane[r] = succ[r]
            lane_from[r] = -1
            (s[r], d[r], station[r], lane_heading[r],
             lane_curv[r]) = road.project(lane[r], s[r] - road.length_m[lane_c[r]], x[r], y[r])
            into = r[road.in_junction[lane[r]]]
            if len(into):  # entering a junction: the connector taken is the route's turn
                turn = turn.copy()
                turn[into] = road.turn[lane[into]]
                movements = tuple(int(a + b) for a, b in zip(
                    movements, np.bincount(turn[into], minlength=3)))
        leaves = np.flatnonzero(past_end & (succ < 0))
        n_exited = len(leaves)
        active[leaves] = False
        lane[leaves] = -1
        lane_from[leaves] = -1
        ids = ids.copy()
        ids[leaves] = -1

    # collisions among vehicles on the road
    rows = np.flatnonzero(active)
    pi, pj = collision.overlapping_pairs(x[rows], y[rows], heading[rows], st.length[rows],
                                         st.width[rows], road.wider_than_tall)
    collided = np.zeros(st.capacity, bool)
    collided[rows[pi]] = True
    collided[rows[pj]] = True
    new_pairs = int(np.count_nonzero(~(st.collided[rows[pi]] & st.collided[rows[pj]])))

    n_red = 0
    if junction is not None:
        n_red = intersection.red_light_runs(junction, jc, st.lane, lane, s, st.length)

    new = st.evolve(
        t_s=st.t_s + dt, step=st.step + 1, x=x, y=y, heading=heading, speed=speed,
        vx=vx, vy=vy, accel=accel, tan_steer=tan_steer, lane=lane, s=s, d=d, station=station,
        lane_heading=lane_heading, lane_curvature=lane_curv, lane_from=lane_from,
        lc_elapsed_s=lc_elapsed, active=active, collided=collided, ids=ids, turn=turn)
    new, n_in, n_wait = _inflow(new, world, rng)
    counters = replace(
        counters, entered=counters.entered + n_in, exited=counters.exited + n_exited,
        lane_changes=counters.lane_changes + len(lc_rows), merges=counters.merges + n_merges,
        collisions=counters.collisions + new_pairs,
        inflow_waiting=counters.inflow_waiting + n_wait,
        red_light_runs=counters.red_light_runs + n_red, movements=movements)
    return new, counters


def _inflow(st: TrafficState, world: World, rng: np.random.Generator):
    """Let due arrivals enter at their lane's start when there is room; grow capacity if
    every row is taken. Returns (state, entered, waiting)."""
    due = np.flatnonzero(st.inflow_next_s <= st.t_s)
    if len(due) == 0:
        return st, 0, 0
    road, traffic = world.road, world.spec.traffic
    draw = sample_vehicles(rng, len(due), truck_share(road, due, traffic.truck_share),
                           traffic.car, traffic.truck)
    speeds = draw["v0_mps"].copy()
    room = np.ones(len(due), bool)
    for i, k in enumerate(due):
        r = np.flatnonzero(st.active & ((st.lane == k) | (st.lane_from == k)))
        if len(r) == 0:
            continue
        first = r[np.argmin(st.station[r])]
        gap = (st.station[first] - 0.5 * st.length[first] - road.station_range_m[k, 0]
               - 0.5 * draw["length"][i])
        s0, tg, v0 = draw["min_gap_m"][i], draw["time_gap_s"][i], draw["v0_mps"][i]
        # enter no faster than the equilibrium speed of the gap, and only once that is close
        # to the speed of the traffic ahead (as SUMO's departSpeed="max")
        lead_speed = st.speed[first]
        speeds[i] = min(v0, (gap - s0) / tg, lead_speed + 3.0)
        room[i] = gap >= s0 + 2.0 and speeds[i] >= max(0.8 * min(v0, lead_speed), 1.0)
    n_in = int(np.count_nonzero(room))
    if n_in == 0:
        return st, 0, len(due)
    lanes = due[room]
    # rows are written in place below. Earlier states may share these arrays, so the ones
    # that say which rows are vehicles (and which) are copied; the other fields of a row that
    # was free in an earlier state are don't-care there, so writing them changes nothing.
    st = st.evolve(**{k: getattr(st, k).copy() for k in _ROW_IDENTITY})
    free = np.flatnonzero(~st.active)
    while len(free) < n_in:
        st = _grow(st)
        free = np.flatnonzero(~st.active)
    rows = free[:n_in]
    _write_rows(st, rows, {k: v[room] for k, v in draw.items()})
    st.ids[rows] = st.next_id + np.arange(n_in)
    st.lane[rows], st.lane_from[rows] = lanes, -1
    st.active[rows], st.role[rows], st.collided[rows] = True, ROLE_BACKGROUND, False
    st.lc_elapsed_s[rows] = 0.0
    if world.junction is not None:
        st.turn[rows] = world.junction.draw_turns(rng, lanes)
    s = np.zeros(n_in)
    x, y, h, curv, station = road.pose_at(lanes, s)
    st.x[rows], st.y[rows], st.heading[rows], st.s[rows], st.d[rows] = x, y, h, s, 0.0
    st.lane_heading[rows], st.lane_curvature[rows], st.station[rows] = h, curv, station
    st.speed[rows], st.accel[rows], st.tan_steer[rows] = speeds[room], 0.0, 0.0
    _set_velocity(st, rows)
    nxt = st.inflow_next_s.copy()
    nxt[lanes] += _headways_s(rng, n_in, world.inflow_vph()[lanes], traffic.min_headway_s)
    return st.evolve(next_id=st.next_id + n_in, inflow_next_s=nxt), n_in, len(due) - n_in


_ROW_IDENTITY = ("active", "ids", "lane", "lane_from", "role", "kind", "collided")


def _grow(st: TrafficState) -> TrafficState:
    """The same state with 50 % more (free) rows."""
    extra = empty_state(max(16, st.capacity // 2), len(st.inflow_next_s))
    values = {}
    for name, value in vars(st).items():
        if isinstance(value, np.ndarray) and name != "inflow_next_s":
            values[name] = np.concatenate([value, getattr(extra, name)])
    return replace(st, **values)


# ---- running and recording ----------------------------------------------------------------


class Recorder:
    """Collects the active rows of every recorded step and assembles a Tracks at the end."""

    def __init__(self, every: int = 1):
        if every < 1:
            raise ValueError("record every must be >= 1")
        self.every = every
        self._t: list[float] = []
        self._cols: dict[str, list[np.ndarray]] = {k: [] for k in (
            "step", "ids", "x", "y", "vx", "vy", "heading", "lane", "collided")}
        self._static: dict[int, tuple[float, float, int]] = {}
        self._max_id = -1

    def append(self, st: TrafficState) -> None:
        if st.step % self.every:
            return
        rows = np.flatnonzero(st.active)
        k = len(self._t)
        self._t.append(st.t_s)
        c = self._cols
        c["step"].append(np.full(len(rows), k, np.int64))
        c["ids"].append(st.ids[rows])
        for name in ("x", "y", "vx", "vy", "heading"):
            c[name].append(getattr(st, name)[rows].astype(np.float32))
        c["lane"].append(st.lane[rows].astype(np.int16))
        c["collided"].append(st.collided[rows])
        for r in rows[st.ids[rows] > self._max_id]:  # ids grow with arrival order
            self._static[int(st.ids[r])] = (float(st.length[r]), float(st.width[r]),
                                            int(st.kind[r]))
        if len(rows):
            self._max_id = max(self._max_id, int(st.ids[rows].max()))

    def tracks(self, road: Road | None, meta: dict, ego_id: int | None = 0) -> Tracks:
        """The recorded episode as Tracks (agents sorted by id)."""
        t = np.round(np.asarray(self._t, np.float64), 9)
        c = {k: np.concatenate(v) if v else np.empty(0) for k, v in self._cols.items()}
        ids, agent = np.unique(c["ids"].astype(np.int64), return_inverse=True)
        n, n_t = len(ids), len(t)
        col = c["step"].astype(np.int64)
        out = {}
        for name in ("x", "y", "vx", "vy", "heading"):
            arr = np.full((n, n_t), np.nan, np.float32)
            arr[agent, col] = c[name]
            out[name] = arr
        lane = np.full((n, n_t), -1, np.int16)
        lane[agent, col] = c["lane"]
        collided = np.zeros((n, n_t), bool)
        collided[agent, col] = c["collided"]
        static = np.array([self._static[int(i)] for i in ids]).reshape(n, 3)
        ego_rows = np.flatnonzero(ids == ego_id) if ego_id is not None else []
        meta = {**meta, "dt": float(t[1] - t[0]) if n_t > 1 else meta.get("dt", 0.0)}
        return Tracks(t=t, **out, length=static[:, 0].astype(np.float32),
                      width=static[:, 1].astype(np.float32), ids=ids, meta=meta,
                      kind=static[:, 2].astype(np.int8), lane=lane,
                      ego=int(ego_rows[0]) if len(ego_rows) else -1, collided=collided,
                      road=road)


@dataclass
class RunResult:
    state: TrafficState
    counters: Counters
    steps: int
    vehicle_steps: int
    min_speed_mps: float
    mean_speed_mps: float
    tracks: Tracks | None = None

    def inflow_delay_s(self, world: World) -> list[float]:
        """Per entry lane (the lanes with inflow, in lane order), how far arrivals lag behind
        their schedule at the end, s: how long traffic queues upstream of the road when
        demand exceeds what it can take."""
        entry = world.inflow_vph() > 0
        lag = self.state.t_s - self.state.inflow_next_s[entry]
        return [round(float(v), 1) for v in np.maximum(lag, 0.0)]


def run(world: World, duration_s: float | None = None, record_every: int | None = 1,
        progress: Callable[[int, int], None] | None = None,
        hook: ControlHook | None = None) -> RunResult:
    """Simulate from the spec's seed for duration_s (default: the spec's) and optionally
    record every n-th step. Same spec and seed, same result, bit for bit."""
    spec = world.spec
    rng = np.random.default_rng(spec.seed)
    st = init_state(world, rng)
    counters = Counters()
    n_steps = int(round((duration_s or spec.duration_s) / spec.dt_s))
    rec = Recorder(record_every) if record_every else None
    if rec:
        rec.append(st)
    vehicle_steps = 0
    min_speed = math.inf
    speed_sum = 0.0
    for i in range(n_steps):
        st, counters = step(st, world, rng, counters, hook)
        vehicle_steps += st.n_active
        if st.active.any():
            speeds = st.speed[st.active]
            min_speed = min(min_speed, float(speeds.min()))
            speed_sum += float(speeds.sum())
        if rec:
            rec.append(st)
        if progress:
            progress(i + 1, n_steps)
    tracks = None
    if rec:
        meta = {"source": "drivecast", "scenario": spec.name, "seed": spec.seed,
                "dt": spec.dt_s * rec.every}
        if world.junction is not None:  # enough to show and obey the signals in a replay
            meta["junction"] = world.junction.describe()
        if spec.case is not None:
            meta["case"] = spec.case
            meta["case_params"] = dict(spec.case_params)
        if world.script is not None:  # who the actors are and when their events happened
            meta["actors"] = {n: int(i) for n, i in zip(world.script.names, world.script.ids)}
            meta["events"] = events.event_log(world.script, st.script)
        tracks = rec.tracks(world.road, meta, 0 if spec.ego is not None else None)
    return RunResult(st, counters, n_steps, vehicle_steps, min_speed,
                     speed_sum / max(vehicle_steps, 1), tracks)


def benchmark_throughput(vehicles: int, steps: int, road_kind: str = "straight_highway",
                         seed: int = 0, repeats: int = 3, n_lanes: int = 4) -> dict:
    """Vehicle-steps per second of the full step (IDM, MOBIL, lane keeping, bicycle dynamics,
    collision checks, inflow and outflow) on a road long enough to hold about `vehicles`
    vehicles at 1,800 veh/h/lane. Each repeat times `steps` steps after 20 warm-up steps."""
    from sim.spec import RoadSpec, TrafficSpec

    density_per_m = n_lanes / (3600.0 / 1800.0 * 28.0)  # the initial fill's spacing
    length_m = max(500.0, vehicles / density_per_m)
    if road_kind == "straight_highway":
        params = {"n_lanes": n_lanes, "length_m": length_m}
    elif road_kind == "curved_highway":
        unit = [(300.0, 0.0), (500.0, 800.0), (300.0, 0.0), (500.0, -800.0), (400.0, 0.0)]
        params = {"n_lanes": n_lanes, "pieces": unit * max(1, int(math.ceil(length_m / 2000.0)))}
    elif road_kind == "on_ramp_highway":
        params = {"n_lanes": n_lanes, "length_m": max(length_m, 1200.0)}
    else:
        raise ValueError(f"unknown road kind {road_kind}")
    spec = WorldSpec(road=RoadSpec(road_kind, params),
                     traffic=TrafficSpec(flow_vph_per_lane=1800.0), ego=None, seed=seed,
                     name="benchmark")
    world = make_world(spec)
    rng = np.random.default_rng(seed)
    st = init_state(world, rng)
    counters = Counters()
    for _ in range(20):
        st, counters = step(st, world, rng, counters)
    rates, walls, active = [], [], []
    for _ in range(repeats):
        vehicle_steps = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            st, counters = step(st, world, rng, counters)
            vehicle_steps += st.n_active
        wall = time.perf_counter() - t0
        rates.append(vehicle_steps / wall)
        walls.append(wall)
        active.append(vehicle_steps / steps)
    best = int(np.argmax(rates))
    return {
        "vehicles": vehicles, "steps": steps, "dt": spec.dt_s, "road": road_kind,
        "n_lanes": n_lanes, "repeats": repeats,
        "vehicle_steps_per_s": round(rates[best]), "wall_s": round(walls[best], 4),
        "vehicle_steps_per_s_median": round(float(np.median(rates))),
        "steps_per_s": round(steps / walls[best], 1),
        "mean_active": round(float(np.mean(active)), 1),
        "collisions": counters.collisions, "lane_changes": counters.lane_changes,
    }
