"""Scripted actors and events, executed inside the step as data.

A scenario's actors (vehicles it places, e.g. the Euro NCAP target) and events (`brake`,
`speed_change`, `stall`, `lane_change`, `cut_in`) compile into a `Script` of arrays (fixed for
a run, held by the World) and a `ScriptState` of arrays (carried in `TrafficState.script`, so
the step stays pure). Every step `control` evaluates the triggers, advances each event's phase
and returns the scripted rows' commands as an `Override`, the same type the ego's safety layer
returns through the step's hook.

Semantics (docs/scenarios.md has the user's version):

- Agents are the actors (rows and ids n_ego, n_ego + 1, ... in declaration order, n_ego = 1
  with an ego) and the ego (row and id 0) when its driver or its events need the script. An
  agent whose row was freed (it left the road) drops out and its pending events are skipped.
- Each agent has a set speed, v_set (its desired speed at the start). Drivers: "cruise" holds
  v_set and its lane, a = clip((v_set - v) / CRUISE_TAU_S, -b_comf, a_max), whatever is
  ahead; "idm_lane" drives IDM (v0 = v_set) capped by that cruise control and never changes
  lanes by itself; "idm" is the same with MOBIL lane changes.
- `brake` / `speed_change`: from its start the acceleration is exactly -decel_mps2 /
  +-accel_mps2 until the speed reaches to_speed_mps (the last step lands on it); v_set becomes
  to_speed_mps. An IDM driver never accelerates harder than its car following allows.
- `stall`: brake at decel_mps2 to a standstill, stand still for duration_s (inf: for good),
  then drive on towards v_set.
- `lane_change` / `cut_in`: a lane change (minimum-jerk lateral profile over duration_s) into
  the adjacent lane on `direction`'s side, towards `to_lane` (one lane at a time), or into the
  ego's lane (cut_in; it must be adjacent). Done when the vehicle is centred in the target
  lane. A lane change ends the agent's lateral offset.
- A new longitudinal event of an agent ends its running one; a lateral event waits while the
  agent is still changing lanes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim import behavior
from sim.road import Road
from sim.spec import DRIVERS, EVENT_TYPES, FOLLOW_ACTORS, TRIGGERS, FieldError, WorldSpec
from sim.state import KIND_CAR, KIND_TRUCK, ROLE_ACTOR, TrafficState

CRUISE_TAU_S = 1.0  # time constant of the cruise control towards the set speed
V0_MIN_MPS = 1.0  # the least IDM desired speed (IDM needs v0 > 0); v_set below it is cruise's
KEEP_CHOICE = -1  # Override.lane_change: keep the driver's own lane-change decision
NO_LANE_CHANGE = -2  # Override.lane_change: cancel a lane change the driver decided
_EPS_S = 1e-9

DRIVER_IDM, DRIVER_IDM_LANE, DRIVER_CRUISE = (DRIVERS.index(d) for d in
                                              ("idm", "idm_lane", "cruise"))
BRAKE, SPEED_CHANGE, STALL, LANE_CHANGE, CUT_IN = range(len(EVENT_TYPES))
AT, WHEN_GAP, WHEN_TTC, AFTER = range(len(TRIGGERS))
FOLLOW_ALWAYS, FOLLOW_IN_LANE, FOLLOW_NEVER = (FOLLOW_ACTORS.index(f) for f in
                                               ("always", "in_lane", "never"))
WAITING, ARMED, RUNNING, DONE, SKIPPED = range(5)
PHASES = ("waiting", "armed", "running", "done", "skipped")
KIND_CODES = {"car": KIND_CAR, "truck": KIND_TRUCK, "obstacle": -1}


@dataclass(frozen=True)
class Override:
    """Commands that replace the drivers' own for some rows (scripted events, the ego's
    safety layer). All arrays are (R,) over `rows`.

    accel_mps2: NaN keeps the driver's acceleration. lane_change: KEEP_CHOICE (-1) keeps the
    driver's lane choice, NO_LANE_CHANGE (-2) cancels it, a lane index starts a change into
    that adjacent lane now (not for rows already changing lanes). lane_change_s: duration of a
    commanded change, s (NaN: the driver's own). lateral_offset_m: offset from the lane centre
    to hold, m, left positive (NaN: the centre).
    """

    rows: np.ndarray
    accel_mps2: np.ndarray
    lane_change: np.ndarray | None = None
    lane_change_s: np.ndarray | None = None
    lateral_offset_m: np.ndarray | None = None


def apply_override(ov: Override, st: TrafficState, accel: np.ndarray, lc_rows: np.ndarray,
                   lc_target: np.ndarray, lc_s: np.ndarray | None,
                   lat_off: np.ndarray | None):
    """Merge an Override into the step's commands: accel (C,) is changed in place; lane
    changes to start (lc_rows, lc_target, durations lc_s or None for the drivers' own) and the
    lane-keeping offsets lat_off ((C,) or None) are returned updated."""
    rows = np.asarray(ov.rows, np.int64)
    a = np.asarray(ov.accel_mps2, float)
    accel[rows] = np.where(np.isnan(a), accel[rows], a)
    if ov.lane_change is not None:
        lc = np.asarray(ov.lane_change, np.int64)
        cmd = lc >= 0
        if not len(lc_rows) and not cmd.any():
            lc = None  # nothing to start and nothing to cancel
    if ov.lane_change is not None and lc is not None:
        if lc_s is None:
            lc_s = st.lane_change_s[lc_rows]
        keep = np.ones(len(lc_rows), bool)
        if len(lc_rows):
            replaced = np.zeros(st.capacity, bool)
            replaced[rows[lc != KEEP_CHOICE]] = True
            keep = ~replaced[lc_rows]
        dur = st.lane_change_s[rows[cmd]]
        if ov.lane_change_s is not None:
            given = np.asarray(ov.lane_change_s, float)[cmd]
            dur = np.where(np.isnan(given), dur, given)
        lc_rows = np.concatenate([lc_rows[keep], rows[cmd]])
        lc_target = np.concatenate([lc_target[keep], lc[cmd]])
        lc_s = np.concatenate([lc_s[keep], dur])
    if ov.lateral_offset_m is not None:
        off = np.asarray(ov.lateral_offset_m, float)
        lat_off = np.zeros(st.capacity) if lat_off is None else lat_off
        lat_off[rows] = np.where(np.isnan(off), 0.0, off)
    return accel, lc_rows, lc_target, lc_s, lat_off


# ---- the script: arrays compiled from a spec ----------------------------------------------


@dataclass(frozen=True, eq=False)
class Script:
    """Scripted agents (A,) and events (E,) of a run, fixed. Agent a is row/id ids[a].

    Agents: names, ids int64, driver int8 (index into DRIVERS), follow int8 (index into
    FOLLOW_ACTORS: whether the agent's IDM follows actors),
    set_speed_mps and lateral_offset_m (start values). actor_rows (K,): rows of the actors.
    Events: ev_type int8 (index into EVENT_TYPES), ev_agent int64 (agent index), trig int8
    (index into TRIGGERS), trig_value float (s, m or s; for `after` unused), after int64
    (event index, -1), delay_s, rate_mps2 (decel / accel magnitude, NaN for lane changes),
    to_speed_mps (NaN), duration_s (lateral manoeuvre or stall, NaN), to_lane int64 (-1),
    direction int8 (+1 left, -1 right, 0 none), labels (E,) str.
    """

    names: tuple[str, ...]
    ids: np.ndarray
    driver: np.ndarray
    follow: np.ndarray
    set_speed_mps: np.ndarray
    lateral_offset_m: np.ndarray
    actor_rows: np.ndarray
    has_ego: bool
    ev_type: np.ndarray
    ev_agent: np.ndarray
    trig: np.ndarray
    trig_value: np.ndarray
    after: np.ndarray
    delay_s: np.ndarray
    rate_mps2: np.ndarray
    to_speed_mps: np.ndarray
    duration_s: np.ndarray
    to_lane: np.ndarray
    direction: np.ndarray
    labels: tuple[str, ...]

    @property
    def n_events(self) -> int:
        return len(self.ev_type)


@dataclass(frozen=True, eq=False)
class ScriptState:
    """The script's runtime state. Agents (A,): set_speed_mps, lateral_offset_m (m left of
    the lane centre). Events (E,): phase int8 (WAITING, ARMED, RUNNING, DONE, SKIPPED),
    side0 (sign of gap - threshold when a when_gap_m trigger was first evaluated, 0 before),
    trigger_s / start_s / end_s (NaN until then), deadline_s (a speed event ends by then even
    if car following held it back), stop_s (a stall: when the vehicle stood still), target_lane
    int64 (-1), start_gap_m (the signed bumper gap to the ego when the event started, m)."""

    set_speed_mps: np.ndarray
    lateral_offset_m: np.ndarray
    phase: np.ndarray
    side0: np.ndarray
    trigger_s: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    deadline_s: np.ndarray
    stop_s: np.ndarray
    target_lane: np.ndarray
    start_gap_m: np.ndarray


def _check_position(road: Road, who: str, lane: int, field: str, station_m: float,
                    note: str) -> None:
    """FieldError unless `lane` is one of the road's and station_m lies on it (`field`
    names the key that placed it)."""
    if lane >= road.n_lanes:
        raise FieldError(f"{who}.lane", f"a lane of the road (0..{road.n_lanes - 1})")
    lo, hi = road.station_range_m[lane]
    if not lo <= station_m <= hi:
        raise FieldError(f"{who}.{field}", f"a position on lane {lane} (stations "
                         f"{lo:g}..{hi:g} m){note}")


def compile_script(spec: WorldSpec, road: Road) -> Script | None:
    """The Script of a spec, None when nothing is scripted. Checks what needs the road:
    lanes, stations and cut-in adjacency (FieldError with paths like actors[0].lane)."""
    ego = spec.ego
    n_ego = 0 if ego is None else 1
    if ego is not None:  # first: actors may be placed relative to the ego
        _check_position(road, "ego", ego.lane, "station_m", ego.station_m, "")
    for i, a in enumerate(spec.actors):
        station_m, _ = a.place(ego)
        _check_position(road, f"actors[{i}]", a.lane, a.placement, station_m,
                        f"; it puts the actor at {station_m:.1f} m")
    actor_index = {a.name: i for i, a in enumerate(spec.actors)}
    for i, e in enumerate(spec.events):
        if e.to_lane is not None and e.to_lane >= road.n_lanes:
            raise FieldError(f"events[{i}].to_lane", f"a lane of the road (0..{road.n_lanes - 1})")
        if e.type == "cut_in":
            moved = any(p.type == "lane_change" and p.actor == e.actor for p in spec.events[:i])
            lane = spec.actors[actor_index[e.actor]].lane
            if not moved and ego.lane not in (road.left[lane], road.right[lane]):
                raise FieldError(f"events[{i}].actor", f"an actor in a lane next to the ego's "
                                 f"('{e.actor}' starts in lane {lane}, the ego in {ego.lane})")
    ego_scripted = ego is not None and (ego.driver != "idm" or ego.follow_actors != "always"
                                        or any(e.actor == "ego" for e in spec.events))
    if not spec.actors and not ego_scripted:
        return None
    names, ids, driver, follow, v_set, lat = [], [], [], [], [], []
    if ego_scripted:
        names.append("ego")
        ids.append(0)
        driver.append(DRIVERS.index(ego.driver))
        follow.append(FOLLOW_ACTORS.index(ego.follow_actors))
        v_set.append(ego.desired_speed_mps)
        lat.append(0.0)
    for i, a in enumerate(spec.actors):
        names.append(a.name)
        ids.append(n_ego + i)
        driver.append(DRIVERS.index(a.driver))
        follow.append(FOLLOW_ALWAYS)
        v_set.append(a.desired_speed_mps)
        lat.append(a.place(ego)[1])
    agent = {n: k for k, n in enumerate(names)}
    event_index = {e.name: i for i, e in enumerate(spec.events) if e.name is not None}
    ev = spec.events
    nan = math.nan
    return Script(
        names=tuple(names), ids=np.asarray(ids, np.int64), driver=np.asarray(driver, np.int8),
        follow=np.asarray(follow, np.int8), set_speed_mps=np.asarray(v_set, float),
        lateral_offset_m=np.asarray(lat, float),
        actor_rows=np.arange(n_ego, n_ego + len(spec.actors), dtype=np.int64),
        has_ego=ego is not None,
        ev_type=np.asarray([EVENT_TYPES.index(e.type) for e in ev], np.int8),
        ev_agent=np.asarray([agent[e.actor] for e in ev], np.int64),
        trig=np.asarray([TRIGGERS.index(e.trigger) for e in ev], np.int8),
        trig_value=np.asarray([nan if e.trigger == "after" else float(getattr(e, e.trigger))
                               for e in ev], float),
        after=np.asarray([event_index[e.after] if e.after else -1 for e in ev], np.int64),
        delay_s=np.asarray([e.delay_s for e in ev], float),
        rate_mps2=np.asarray([e.decel_mps2 if e.decel_mps2 is not None else
                              e.accel_mps2 if e.accel_mps2 is not None else nan for e in ev],
                             float),
        to_speed_mps=np.asarray([nan if e.to_speed_mps is None else e.to_speed_mps
                                 for e in ev], float),
        duration_s=np.asarray([nan if e.duration_s is None else e.duration_s for e in ev],
                              float),
        to_lane=np.asarray([-1 if e.to_lane is None else e.to_lane for e in ev], np.int64),
        direction=np.asarray([{"left": 1, "right": -1}.get(e.direction, 0) for e in ev],
                             np.int8),
        labels=tuple(f"{e.name + ': ' if e.name else ''}{e.type}({e.actor})" for e in ev),
    )


def initial_state(script: Script) -> ScriptState:
    n = script.n_events
    nan = np.full(n, np.nan)
    return ScriptState(
        set_speed_mps=script.set_speed_mps.copy(), lateral_offset_m=script.lateral_offset_m.copy(),
        phase=np.zeros(n, np.int8), side0=np.zeros(n), trigger_s=nan.copy(),
        start_s=nan.copy(), end_s=nan.copy(), deadline_s=nan.copy(), stop_s=nan.copy(),
        target_lane=np.full(n, -1, np.int64), start_gap_m=nan.copy())


def place_actors(st: TrafficState, spec: WorldSpec, road: Road) -> None:
    """Write the spec's actors into their rows (n_ego, n_ego + 1, ...) of a fresh state, in
    place: pose (with the lateral offset), speed, size, kind, role and driver settings."""
    n_ego = 0 if spec.ego is None else 1
    for i, a in enumerate(spec.actors):
        r = n_ego + i
        station_m, d_m = a.place(spec.ego)
        lane = np.array([a.lane])
        s = road.s_at_station(lane, np.array([station_m]))
        x, y, h = road.to_world(lane, s, np.array([d_m]))
        st.ids[r], st.lane[r], st.lane_from[r], st.active[r] = r, a.lane, -1, True
        st.role[r], st.kind[r] = ROLE_ACTOR, KIND_CODES[a.kind]
        st.x[r], st.y[r], st.heading[r], st.s[r], st.d[r] = x[0], y[0], h[0], s[0], d_m
        st.station[r], st.lane_heading[r] = station_m, h[0]
        st.lane_curvature[r] = road.pose_at(lane, s)[3][0]
        st.speed[r], st.accel[r], st.tan_steer[r] = a.speed_mps, 0.0, 0.0
        st.length[r], st.width[r] = a.length_m, a.width_m
        st.v0_mps[r] = max(a.desired_speed_mps, V0_MIN_MPS)
        st.time_gap_s[r], st.min_gap_m[r] = a.time_gap_s, 2.0
        st.max_accel_mps2[r], st.comf_decel_mps2[r] = a.max_accel_mps2, a.comf_decel_mps2
        st.politeness[r], st.safe_decel_mps2[r], st.accel_threshold_mps2[r] = 0.0, 3.0, 0.2
        st.lane_change_s[r] = 4.0


# ---- the per-step control -----------------------------------------------------------------


def control(st: TrafficState, script: Script, road: Road, index: behavior.LaneIndex,
            accel: np.ndarray, dt_s: float) -> tuple[TrafficState, Override | None]:
    """One step of the script: triggers, event phases and the scripted rows' commands.

    accel (C,) holds the drivers' own (IDM) accelerations. Returns the state with the new
    ScriptState (and IDM desired speeds following the set speeds) and the Override."""
    ss: ScriptState = st.script
    rows = script.ids
    alive = st.active[rows] & (st.ids[rows] == script.ids)
    v_set = ss.set_speed_mps.copy()
    lat = ss.lateral_offset_m.copy()
    n_agents = len(rows)
    ramp = np.full(n_agents, np.nan)  # a running speed event's acceleration
    lc_cmd = np.full(n_agents, -1, np.int64)
    lc_dur = np.full(n_agents, np.nan)
    lateral_busy = np.zeros(n_agents, bool)
    if script.n_events and (ss.phase < DONE).any():
        ss = _advance_events(st, script, road, index, ss, v_set, lat, ramp, lc_cmd, lc_dur,
                             lateral_busy, alive, dt_s)
    # a lane change (scripted or the driver's own) ends a held lateral offset
    lat = np.where(alive & (st.lane_from[rows] >= 0), 0.0, lat)
    rows_a = rows[alive]
    if len(rows_a) == 0:
        return st.evolve(script=_with(ss, v_set, lat)), None
    speed = st.speed[rows]
    cruise = np.minimum(np.maximum((v_set - speed) / CRUISE_TAU_S, -st.comf_decel_mps2[rows]),
                        st.max_accel_mps2[rows])
    idm = accel[rows]
    blind = alive & (script.follow != FOLLOW_ALWAYS) & (script.driver != DRIVER_CRUISE)
    if blind.any():
        idm = idm.copy()
        for a in np.flatnonzero(blind):
            ignore = script.actor_rows
            if script.follow[a] == FOLLOW_IN_LANE:  # actors still moving over are not seen
                ignore = ignore[st.lane_from[ignore] >= 0]
            idm[a] = _accel_ignoring(st, road, index, accel, rows[a], ignore)
    is_cruise = script.driver == DRIVER_CRUISE
    base = np.where(is_cruise, cruise, np.minimum(idm, cruise))
    out = np.where(np.isnan(ramp), base, np.where(is_cruise, ramp, np.minimum(ramp, idm)))
    out = np.maximum(out, -behavior.MAX_DECEL_MPS2)
    lane_change = np.where(lc_cmd >= 0, lc_cmd,
                           np.where((script.driver == DRIVER_IDM) & ~lateral_busy,
                                    KEEP_CHOICE, NO_LANE_CHANGE))
    # IDM drivers desire their set speed
    v0 = np.where(script.driver != DRIVER_CRUISE, np.maximum(v_set, V0_MIN_MPS), st.v0_mps[rows])
    changes = {"script": _with(ss, v_set, lat)}
    if np.any(v0[alive] != st.v0_mps[rows_a]):
        v0_all = st.v0_mps.copy()
        v0_all[rows_a] = v0[alive]
        changes["v0_mps"] = v0_all
    return st.evolve(**changes), Override(rows_a, out[alive], lane_change[alive],
                                          lc_dur[alive], lat[alive] if lat.any() else None)


def _with(ss: ScriptState, v_set: np.ndarray, lat: np.ndarray) -> ScriptState:
    new = object.__new__(ScriptState)
    new.__dict__.update(ss.__dict__)
    new.__dict__.update(set_speed_mps=v_set, lateral_offset_m=lat)
    return new


def _advance_events(st, script: Script, road: Road, index: behavior.LaneIndex, ss: ScriptState,
                    v_set, lat, ramp, lc_cmd, lc_dur, lateral_busy, alive, dt_s) -> ScriptState:
    """Triggers, starts, commands and ends of the events for this step. Fills v_set, lat,
    ramp, lc_cmd, lc_dur, lateral_busy (A,) in place; returns the new ScriptState."""
    t = st.t_s
    phase = ss.phase.copy()
    side0, trigger_s = ss.side0.copy(), ss.trigger_s.copy()
    start_s, end_s = ss.start_s.copy(), ss.end_s.copy()
    deadline_s, stop_s = ss.deadline_s.copy(), ss.stop_s.copy()
    target_lane = ss.target_lane.copy()
    start_gap_m = ss.start_gap_m.copy()
    agent = script.ev_agent
    ev_rows = script.ids[agent]
    phase[(phase < DONE) & ~alive[agent]] = SKIPPED
    ego_ok = script.has_ego and bool(st.active[0]) and st.ids[0] == 0

    wait = phase == WAITING
    if wait.any():
        trig, value = script.trig, script.trig_value
        fire = wait & (trig == AT) & (t >= value - _EPS_S)
        relative = wait & ((trig == WHEN_GAP) | (trig == WHEN_TTC))
        if relative.any():
            if not ego_ok:
                phase[relative] = SKIPPED
            else:
                gap = _gap_to_ego(st, ev_rows)
                on_gap = wait & (trig == WHEN_GAP)
                side = np.sign(gap - value)
                side0 = np.where(on_gap & (side0 == 0), side, side0)
                fire |= on_gap & (side * side0 <= 0)
                closing = st.speed[0] - st.speed[ev_rows]
                with np.errstate(divide="ignore", invalid="ignore"):
                    ttc = np.where((gap > 0) & (closing > 1e-9), gap / closing, np.inf)
                fire |= wait & (trig == WHEN_TTC) & (ttc <= value)
        on_after = wait & (trig == AFTER)
        if on_after.any():
            ref_phase = phase[np.maximum(script.after, 0)]
            fire |= on_after & (ref_phase == DONE)
            phase[on_after & (ref_phase == SKIPPED)] = SKIPPED
        fire &= phase == WAITING
        phase[fire] = ARMED
        trigger_s[fire] = t

    ev_type = script.ev_type
    lateral = (ev_type == LANE_CHANGE) | (ev_type == CUT_IN)
    for e in np.flatnonzero((phase == ARMED) & (t >= trigger_s + script.delay_s - _EPS_S)):
        a, r = agent[e], ev_rows[e]
        if lateral[e]:
            if st.lane_from[r] >= 0:
                continue  # still changing lanes: start when that is done
            lane = st.lane[r]
            if ev_type[e] == CUT_IN:
                goal = st.lane[0] if ego_ok else -1
                if goal not in (road.left[lane], road.right[lane]):
                    goal = -1
                else:  # it moves in right ahead of the ego: wait while someone is between
                    lead = index.leader[0]
                    if lead >= 0 and lead != r and st.station[lead] <= st.station[r]:
                        if _gap_to_ego(st, r) < 0.0:
                            phase[e], end_s[e] = SKIPPED, t
                        continue
            elif script.to_lane[e] >= 0:
                goal = script.to_lane[e] if _next_lane(road, lane, script.to_lane[e]) >= 0 \
                    else -1
            else:
                goal = (road.left if script.direction[e] > 0 else road.right)[lane]
            if goal < 0 or goal == lane:
                phase[e] = SKIPPED
                continue
            target_lane[e] = goal
            lat[a] = 0.0
        else:
            # a new speed event of an agent ends its running one
            superseded = (phase == RUNNING) & ~lateral & (agent == a)
            phase[superseded] = DONE
            end_s[superseded] = t
            if ev_type[e] != STALL:
                v, goal_v = st.speed[r], script.to_speed_mps[e]
                v_set[a] = goal_v
                if ev_type[e] == BRAKE and v <= goal_v:
                    phase[e], start_s[e], end_s[e] = DONE, t, t
                    continue
                deadline_s[e] = t + abs(v - goal_v) / script.rate_mps2[e] + dt_s
        phase[e] = RUNNING
        start_s[e] = t
        if ego_ok:
            start_gap_m[e] = _gap_to_ego(st, r)

    for e in np.flatnonzero(phase == RUNNING):
        a, r = agent[e], ev_rows[e]
        v = st.speed[r]
        if lateral[e]:
            lateral_busy[a] = True
            if st.lane_from[r] >= 0:
                continue
            lane = st.lane[r]
            if lane == target_lane[e]:
                if start_s[e] < t:
                    phase[e], end_s[e] = DONE, t
                    lateral_busy[a] = False
                    continue
            step_lane = target_lane[e] if lane == target_lane[e] else _next_lane(
                road, lane, target_lane[e])
            if step_lane < 0:  # the target is out of reach from here
                phase[e], end_s[e] = SKIPPED, t
                continue
            if step_lane != lane:
                lc_cmd[a] = step_lane
                lc_dur[a] = script.duration_s[e]
            continue
        rate = script.rate_mps2[e]
        if ev_type[e] == STALL:
            if v > 0.0:
                ramp[a] = max(-rate, -v / dt_s)
                continue
            if np.isnan(stop_s[e]):
                stop_s[e] = t
            if t >= stop_s[e] + script.duration_s[e] - _EPS_S:
                phase[e], end_s[e] = DONE, t
                continue
            ramp[a] = 0.0
            continue
        goal_v = script.to_speed_mps[e]
        ramp[a] = min(max((goal_v - v) / dt_s, -rate), rate)
        if abs(goal_v - v) <= rate * dt_s + 1e-9 or t + _EPS_S >= deadline_s[e]:
            phase[e], end_s[e] = DONE, t + dt_s
    return ScriptState(set_speed_mps=v_set, lateral_offset_m=lat, phase=phase, side0=side0,
                       trigger_s=trigger_s, start_s=start_s, end_s=end_s,
                       deadline_s=deadline_s, stop_s=stop_s, target_lane=target_lane,
                       start_gap_m=start_gap_m)


def _gap_to_ego(st: TrafficState, rows):
    """Signed bumper gap of rows to the ego (row 0) along the road, m: positive with the row
    ahead (its rear to the ego's front), negative side by side or behind."""
    return st.station[rows] - st.station[0] - 0.5 * (st.length[rows] + st.length[0])


def _next_lane(road: Road, lane: int, goal: int) -> int:
    """The adjacent lane on the way from lane to goal (-1 if goal is not reachable sideways)."""
    if lane == goal:
        return lane
    for side in (road.left, road.right):
        k, first = lane, -1
        for _ in range(road.n_lanes):
            k = side[k]
            if k < 0:
                break
            if first < 0:
                first = k
            if k == goal:
                return int(first)
    return -1


def _accel_ignoring(st: TrafficState, road: Road, index: behavior.LaneIndex,
                    accel: np.ndarray, row: int, ignore: np.ndarray) -> float:
    """IDM acceleration of `row` as if the vehicles in rows `ignore` were not there, m/s^2."""
    near = np.array([index.leader[row], index.leader_from[row]])
    if not np.isin(near[near >= 0], ignore).any():
        return float(accel[row])
    active = st.active.copy()
    active[ignore] = False
    blind = st.evolve(active=active)
    blind_index = behavior.build_lane_index(st.lane, st.lane_from, st.station, active)
    return float(behavior.longitudinal_accel(blind, road, blind_index)[row])


# ---- reporting ----------------------------------------------------------------------------


def event_log(script: Script | None, ss: ScriptState | None) -> list[dict]:
    """One dict per event: label, type, actor, phase, its times (s) and the actor's signed
    bumper gap to the ego when it started (m), None where not reached."""
    if script is None or ss is None:
        return []

    def time(v):
        return None if np.isnan(v) else round(float(v), 4)

    return [{"label": script.labels[e], "type": EVENT_TYPES[script.ev_type[e]],
             "actor": script.names[script.ev_agent[e]], "phase": PHASES[ss.phase[e]],
             "trigger_s": time(ss.trigger_s[e]), "start_s": time(ss.start_s[e]),
             "end_s": time(ss.end_s[e]), "start_gap_m": time(ss.start_gap_m[e])}
            for e in range(script.n_events)]
