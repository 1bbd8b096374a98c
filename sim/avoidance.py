"""The ego's safety layer: forecasts of the agents around it -> a checked plan -> its command.

Every step the layer (a `SafetyLayer`, passed to the step as its hook) takes the nominal
driver's acceleration for the ego (IDM / cruise, from the step) and decides what the ego does:

- mode "none": the nominal command, through the ego's actuator (below), nothing else;
- mode "reactive": a classic AEB that sees only current states: the vehicle ahead in the
  ego's path (footprints overlapping laterally now), its time to collision and the
  deceleration the ego needs to avoid it (`reactive_command`);
- a predictor mode (e.g. "cv", "kalman", "rnn"): the agents within sensing range are
  forecast (K modes, probabilities, uncertainty); a set of ego candidate plans (keep the lane
  with a constant acceleration command from +1 down to -9 m/s^2, change lanes left or right
  where a lane exists with the simulator's minimum-jerk lateral profile) is rolled out over
  the horizon through the actuator model and scored against the predicted occupancy
  (`score_plans`): probability of collision (footprints inflated by the forecast's
  uncertainty), an RSS-style safe distance along the forecast and on current states, a
  comfortable distance, time to collision, comfort and progress. The nominal plan is
  followed while it is acceptable; otherwise the cheapest acceptable plan (`choose`); when
  none is, the ego brakes at its limit.

The actuator (all modes): a command reaches the wheels after `actuation_delay_s` and with a
jerk limit (brake build-up), within [-max_brake_mps2, max_accel_mps2] (`actuator_step`).

Scoring is vectorised over candidates x agents x modes x time (numpy; no Python loop over
agents, modes or steps; one pass per distinct lane the plans drive in, at most three).
`sim/` never imports a forecaster: main.py (or a benchmark worker) builds one by name and
passes it in (any sim.forecast.Predictor). docs/safety.md has the definitions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np
from scipy.special import ndtr

from sim import behavior
from sim.events import KEEP_CHOICE, NO_LANE_CHANGE, Override
from sim.forecast import HistoryBuffer, Predictor
from sim.road import LANE_DEAD_END, Road
from sim.state import TrafficState

BUILTIN_MODES = ("none", "reactive")  # every other mode names a forecaster
EGO = 0  # the ego's row (sim/state.py: row 0, id 0)
KEEP, LEFT, RIGHT = 0, 1, -1  # candidate lateral manoeuvres
_SIDE_NAMES = {LEFT: "left", RIGHT: "right"}


@dataclass(frozen=True)
class AvoidanceParams:
    """Everything the safety layer uses, with units. Defaults: a passenger car with a
    production-like brake system and a 150 m sensor."""

    # sensing
    sensing_range_m: float = 150.0  # agents whose centre is this close to the ego's
    sensor_noise_pos_m: float = 0.0  # std of the position noise per axis, m (0: exact)
    sensor_noise_vel_mps: float = 0.0  # std of the velocity noise per axis, m/s
    latency_s: float = 0.0  # the layer sees the agents as they were this long ago
    history_s: float = 1.0  # past handed to the forecaster (or what it needs, if more)
    min_track_s: float = 0.5  # agents seen for less follow their lane at their speed
    # the vehicle (its actuator)
    max_brake_mps2: float = 9.0
    max_accel_mps2: float = 3.0
    jerk_limit_mps3: float = 30.0  # brake build-up: 0 to 9 m/s^2 in 0.3 s
    actuation_delay_s: float = 0.2  # a command acts this much later
    # candidate plans
    horizon_s: float = 3.0
    keep_lane_accels_mps2: tuple[float, ...] = (1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5,
                                                -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0)
    lane_change_accels_mps2: tuple[float, ...] = (0.0, -2.0, -4.0)
    # the driver braking harder than this (its hard brake): gentler braking commands are
    # candidates too, and the layer follows one that keeps every safety limit (a forecast
    # showing that the vehicle ahead leaves room); ease_driver_braking=False: the layer
    # only ever brakes harder than the driver
    ease_driver_braking: bool = True
    ease_from_mps2: float = 4.0
    ease_match_mps2: float = 0.25  # a vehicle's IDM term this close to the driver's braking
    # stop and hold, match: holding the ego back behind the vehicle in its path (within
    # aeb_hold_m) that is why, the layer does not let it creep up on that vehicle: at a crawl
    # (below stop_below_mps) behind one standing (slower than 0.5 m/s) it brakes to a stop
    # at stop_decel_mps2 and holds until that vehicle moves off; closing in on it slower than
    # match_below_mps it brakes the closing speed away over match_s (at most
    # stop_decel_mps2)
    stop_below_mps: float = 1.0
    stop_decel_mps2: float = 1.0
    match_below_mps: float = 1.0
    match_s: float = 1.0
    accel_hold_s: float = 1.0  # a plan accelerating (the driver's too) does so this long
    lane_changes: bool = True  # evasive lane changes among the candidates
    lane_change_s: float = 3.0  # duration of an evasive lane change (minimum-jerk profile)
    min_lane_change_speed_mps: float = 8.0
    # predicted occupancy
    margin_long_m: float = 0.5  # the ego's footprint is inflated by this, front and back
    margin_lat_m: float = 0.2  # and by this on each side
    sigma_floor_m: float = 0.1  # least position std of a forecast
    sigma_long_growth_mps: float = 0.5  # std growth along / across an agent's course, m per
    sigma_lat_growth_mps: float = 0.15  # s: for forecasters without uncertainty, and beyond
    # their horizon (continued at the last predicted velocity)
    # safe distance (docs/safety.md): all along a plan the ego must be able to stop behind
    # an agent ahead that brakes agent_brake_mps2 from its predicted speed, braking
    # fallback_brake_mps2 itself after its reaction (a planning step, the actuation delay and
    # half the brake build-up); in a lane change the new follower must be able to stay behind
    # the ego, reacting after follower_reaction_s and braking follower_brake_mps2
    fallback_brake_mps2: float = 8.0
    agent_brake_mps2: float = 6.0
    follower_reaction_s: float = 1.0
    follower_brake_mps2: float = 4.0
    # the comfortable distance: the same with both braking comfort_brake_mps2; the nominal
    # plan is followed only while it keeps it, so the layer slows early and gently when a
    # forecast shows a conflict coming
    comfort_brake_mps2: float = 3.5
    comfort_time_gap_s: float = 1.0  # and keeping at least this time gap (or the reaction)
    # decisions
    p_accept: float = 0.05  # a plan is acceptable up to this probability of collision
    p_release: float = 0.02  # an intervention ends once the nominal plan is this safe
    p_margin_accept: float = 0.2  # the safe distance along a forecast, up to this
    p_comfort_accept: float = 0.3  # slowing for comfort answers likely conflicts only
    rear_weight: float = 0.2  # risk from followers (keep-lane plans) counts this much
    ttc_ref_s: float = 3.0  # predicted time to collision below this costs
    w_risk: float = 20.0
    w_margin: float = 10.0  # per expected second with the safe distance violated
    w_comfort: float = 2.0  # per expected second with the comfortable distance violated
    w_ttc: float = 1.0
    w_accel: float = 0.3  # per (a / comfort_accel_mps2)^2
    w_jerk: float = 0.3  # per (change of the command / comfort_accel_mps2)^2
    w_progress: float = 1.0  # per share of the desired-speed distance not driven
    w_lane_change: float = 1.5
    comfort_accel_mps2: float = 3.0
    # reactive AEB (mode "reactive")
    aeb_trigger_mps2: float = 4.0  # brake once avoiding needs this deceleration
    aeb_gain: float = 1.3  # command = gain x the deceleration needed (at least aeb_min)
    aeb_min_decel_mps2: float = 5.0
    aeb_lat_margin_m: float = 0.2  # path corridor: the ego's width plus this each side
    aeb_gap_m: float = 1.5  # the gap the AEB aims to keep at standstill
    aeb_release_closing_mps: float = 0.2  # braking ends when no longer closing faster
    aeb_hold_m: float = 25.0  # brought to a standstill, it holds the brake while the target is
    # this close in its path

    def __post_init__(self) -> None:
        positive = ("sensing_range_m", "history_s", "max_brake_mps2", "max_accel_mps2",
                    "jerk_limit_mps3", "horizon_s", "lane_change_s", "sigma_floor_m",
                    "fallback_brake_mps2", "agent_brake_mps2", "follower_brake_mps2",
                    "comfort_brake_mps2", "stop_decel_mps2", "match_s",
                    "ttc_ref_s",
                    "comfort_accel_mps2", "aeb_trigger_mps2", "aeb_gain",
                    "aeb_min_decel_mps2")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"AvoidanceParams.{f.name} must be finite, got {v}")
            if isinstance(v, float) and v < 0:
                raise ValueError(f"AvoidanceParams.{f.name} must be >= 0, got {v}")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"AvoidanceParams.{name} must be positive")
        if not 0 < self.p_release <= self.p_accept < 1:
            raise ValueError("need 0 < p_release <= p_accept < 1")
        if not (0 < self.p_margin_accept < 1 and 0 < self.p_comfort_accept < 1):
            raise ValueError("p_margin_accept and p_comfort_accept must be in (0, 1)")
        for name in ("keep_lane_accels_mps2", "lane_change_accels_mps2"):
            values = getattr(self, name)
            if not values and name == "keep_lane_accels_mps2":
                raise ValueError(f"{name} must not be empty")
            for a in values:
                if not -self.max_brake_mps2 <= a <= self.max_accel_mps2:
                    raise ValueError(f"{name}: {a} is outside [-max_brake_mps2, "
                                     "max_accel_mps2]")
        if self.aeb_min_decel_mps2 > self.max_brake_mps2:
            raise ValueError("aeb_min_decel_mps2 must not exceed max_brake_mps2")
        if self.actuation_delay_s > 2.0 or self.latency_s > 2.0:
            raise ValueError("actuation_delay_s and latency_s must be at most 2 s")

    def steps(self, seconds: float, dt_s: float) -> int:
        return int(round(seconds / dt_s))


# ---- the actuator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Actuator:
    """The ego's longitudinal actuator state: commands issued but not yet acting (oldest
    first, (D,) m/s^2, D = actuation_delay_s / dt_s) and the acceleration acting now."""

    pending_mps2: np.ndarray
    applied_mps2: float

    @staticmethod
    def idle(params: AvoidanceParams, dt_s: float, accel_mps2: float = 0.0) -> Actuator:
        d = params.steps(params.actuation_delay_s, dt_s)
        return Actuator(np.full(d, float(accel_mps2)), float(accel_mps2))


def actuator_step(act: Actuator, command_mps2: float, params: AvoidanceParams,
                  dt_s: float) -> Actuator:
    """Issue a command: the one issued D steps ago takes effect, reached no faster than the
    jerk limit allows and within the braking and acceleration limits."""
    queue = np.append(act.pending_mps2, float(command_mps2))
    target, queue = queue[0], queue[1:]
    step = params.jerk_limit_mps3 * dt_s
    a = min(max(target, act.applied_mps2 - step), act.applied_mps2 + step)
    a = min(max(a, -params.max_brake_mps2), params.max_accel_mps2)
    return Actuator(queue, float(a))


def actuator_response(act: Actuator, commands_mps2: np.ndarray, n_steps: int,
                      params: AvoidanceParams, dt_s: float) -> np.ndarray:
    """(C, n_steps) accelerations acting over the next steps when each of the (C,) commands
    is issued now and held: the pending commands act first, then the new one, every change
    jerk-limited. Column 0 is what acts during this step."""
    step = params.jerk_limit_mps3 * dt_s
    lo, hi = -params.max_brake_mps2, params.max_accel_mps2
    c = np.minimum(np.maximum(np.asarray(commands_mps2, float), lo), hi)
    d = len(act.pending_mps2)
    head = []
    a = act.applied_mps2
    for target in act.pending_mps2[:n_steps]:  # D commands already issued (D ~ 2)
        a = min(max(target, a - step), a + step)
        head.append(min(max(a, lo), hi))
        a = head[-1]
    out = np.empty((len(c), n_steps))
    out[:, :len(head)] = head
    rest = n_steps - len(head)
    if rest > 0:
        k = np.arange(1, rest + 1) * step
        out[:, d:] = a + np.clip(c[:, None] - a, -k, k)
    return out


def speed_profile(v0_mps: float, accel: np.ndarray, dt_s: float):
    """Speeds (C, F + 1) and distances driven (C, F) under accelerations (C, F), m/s and m.
    Vehicles do not reverse: the speed is held at zero while braking at a standstill (the
    running sum reflected at zero)."""
    raw = v0_mps + np.cumsum(accel * dt_s, axis=1)
    raw = np.concatenate([np.full((len(accel), 1), float(v0_mps)), raw], axis=1)
    v = raw - np.minimum(np.minimum.accumulate(raw, axis=1), 0.0)
    dist = np.cumsum(0.5 * (v[:, 1:] + v[:, :-1]) * dt_s, axis=1)
    return v, dist


def fallback_stop_m(act: Actuator, commands_mps2: np.ndarray, v0_mps: float,
                    params: AvoidanceParams, dt_s: float) -> np.ndarray:
    """(C,) m driven to a standstill when each command is issued now and, from the next step
    on, that command or fallback_brake_mps2, whichever brakes harder (through the actuator:
    pending commands, delay, jerk limit)."""
    c = np.minimum(np.maximum(np.asarray(commands_mps2, float), -params.max_brake_mps2),
                   params.max_accel_mps2)
    d = len(act.pending_mps2)
    n = d + 2 + int(math.ceil((v0_mps / params.fallback_brake_mps2 + 1.0) / dt_s))
    first = actuator_response(act, c, d + 1, params, dt_s)  # pending, then the command
    step = params.jerk_limit_mps3 * dt_s
    k = np.arange(1, n - d) * step
    a = first[:, -1:]
    later = np.minimum(c, -params.fallback_brake_mps2)[:, None]
    rest = a + np.clip(later - a, -k, k)
    _, dist = speed_profile(v0_mps, np.concatenate([first, rest], axis=1), dt_s)
    return dist[:, -1]


# ---- the ego's candidate plans ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Candidates:
    """C candidate plans: command accel_mps2 (C,), side (C,) int8 (KEEP, LEFT, RIGHT), lane
    (C,) int64 (the lane each is driven in), and their rollouts over F steps in that lane's
    Frenet frame: s, d (C, F) m (arc length, offset left of the centre line), rel_heading
    (C, F) rad (relative to the lane), speed (C, F) m/s, dist (C, F) m driven, applied
    (C, F) m/s^2 the acceleration acting over each step. fallback_stop_m (C,): the distance
    to a standstill issuing the plan's command now and fallback_brake_mps2 from the next
    step. s0, d0, rel_heading0: the ego now in the first plan's lane. turn: the ego's route
    (for paths through junctions). Candidate 0 is the nominal plan."""

    accel_mps2: np.ndarray
    side: np.ndarray
    lane: np.ndarray
    applied: np.ndarray
    s: np.ndarray
    d: np.ndarray
    rel_heading: np.ndarray
    speed: np.ndarray
    dist: np.ndarray
    fallback_stop_m: np.ndarray
    s0: float
    d0: float
    rel_heading0: float
    turn: int = -1

    @property
    def n(self) -> int:
        return len(self.accel_mps2)

    @property
    def easing(self) -> bool:
        """Some keep-lane plan brakes more gently than the driver (see `ease_limit`)."""
        keep = self.side[1:] == KEEP
        return bool(np.any(self.accel_mps2[1:][keep] > self.accel_mps2[0]))

    def world_xy(self, road: Road, i: int) -> np.ndarray:
        """(F, 2) m: the ego's planned centre positions of candidate i (for drawing)."""
        lane = np.full(self.s.shape[1], self.lane[i])
        return _path_points(road, lane, self.s[i], self.d[i], self.turn)[0]


def lane_change_targets(st: TrafficState, road: Road, params: AvoidanceParams,
                        ego: int = EGO) -> dict:
    """{LEFT: lane, RIGHT: lane} the ego may swerve into now: not while changing lanes, not
    into a lane that ends or that ends before the manoeuvre would be done, and only into a
    gap (gap acceptance on current states, as a driver checks the mirror): no vehicle in or
    moving into the target lane closer behind than it needs to stay behind the ego
    (follower_reaction_s, follower_brake_mps2), nor closer ahead than the ego's own safe
    distance to it."""
    out = {}
    if not params.lane_changes or st.lane_from[ego] >= 0 or st.lane[ego] < 0:
        return out
    v_e = float(st.speed[ego])
    if v_e < params.min_lane_change_speed_mps:
        return out
    lane, station = int(st.lane[ego]), float(st.station[ego])
    finish = station + v_e * params.lane_change_s
    others = np.flatnonzero(st.active)
    others = others[others != ego]
    react_s = (params.actuation_delay_s + 0.5 * params.max_brake_mps2 / params.jerk_limit_mps3
               + 0.1)
    for side, links in ((LEFT, road.left), (RIGHT, road.right)):
        tgt = int(links[lane])
        if tgt < 0 or road.end_kind[tgt] == LANE_DEAD_END:
            continue
        lo, hi = road.station_range_m[tgt]
        if not (lo + st.length[ego] <= station and finish <= hi):
            continue
        there = others[(st.lane[others] == tgt) | (st.lane_from[others] == tgt)]
        gap = (np.abs(st.station[there] - station)
               - 0.5 * (st.length[there] + st.length[ego]))
        v = st.speed[there]
        behind = st.station[there] < station
        need = np.where(
            behind,
            v * params.follower_reaction_s
            + np.maximum(v * v - v_e * v_e, 0.0) / (2.0 * params.follower_brake_mps2),
            v_e * react_s + np.maximum(v_e * v_e / (2.0 * params.fallback_brake_mps2)
                                       - v * v / (2.0 * params.agent_brake_mps2), 0.0))
        if np.all(gap > np.maximum(need, params.margin_long_m)):
            out[side] = tgt
    return out


def ease_limit(st: TrafficState, road: Road, index, nominal_mps2: float,
               params: AvoidanceParams, ego: int = EGO, junction=None) -> float | None:
    """The gentlest command the layer may weigh instead of a driver braking hard (m/s^2,
    at most 0), or None: not easing. The layer eases only braking for a vehicle ahead (what
    it forecasts): the driver brakes at least ease_from_mps2; nothing but vehicles and its
    speed can brake it (no junction, `junction` given; no routed road; not in a lane that
    ends); and its IDM term for such a vehicle (the leader in its lane or in the lane it is
    leaving, by the step's sim.behavior.LaneIndex `index`, or the nearest vehicle in its
    path, as the AEB finds it), clipped at the braking limit, is within ease_match_mps2 of
    the driver's command: that vehicle is what brakes it. The eased command still slows as
    the driver's free-road term wants (a lower speed limit)."""
    if not params.ease_driver_braking or nominal_mps2 > -params.ease_from_mps2:
        return None
    lane = int(st.lane[ego])
    if (junction is not None or road.has_successors or lane < 0
            or road.end_kind[lane] == LANE_DEAD_END):
        return None
    leads = [-1]  # the free road first, then the lane index's leaders
    if index is not None:
        leads += sorted({int(index.leader[ego]), int(index.leader_from[ego])} - {-1})
    a = behavior.follow_accel(st, np.full(len(leads), ego), np.array(leads))
    rows = np.flatnonzero(st.active)
    rows = rows[rows != ego]
    i, gap, v_lead, _, _ = in_path_target(st, road, rows, st.x[rows], st.y[rows], st.vx[rows],
                                          st.vy[rows], params.aeb_lat_margin_m, ego=ego)
    if i >= 0:
        a = np.append(a, behavior.idm_accel(st.speed[ego], v_lead, gap, st.v0_mps[ego],
                                            st.time_gap_s[ego], st.min_gap_m[ego],
                                            st.max_accel_mps2[ego], st.comf_decel_mps2[ego]))
    a = np.maximum(a, -behavior.MAX_DECEL_MPS2)
    if a[0] <= -params.ease_from_mps2:
        return None
    if not np.any(np.abs(a[1:] - nominal_mps2) <= params.ease_match_mps2):
        return None
    return min(0.0, float(a[0]))


def plan_candidates(st: TrafficState, road: Road, nominal_mps2: float, act: Actuator,
                    params: AvoidanceParams, dt_s: float, full: bool,
                    lateral_gain_1ps: float = 1.5, ego: int = EGO,
                    ease_to_mps2: float | None = None) -> Candidates:
    """The nominal plan (and, when `full`, the others) rolled out over the horizon.

    Keep-lane plans hold an acceleration command below the nominal one (the layer brakes
    harder than the driver wants; a positive command lasts accel_hold_s, as a driver
    re-decides), and, with ease_to_mps2 (`ease_limit`: the driver brakes hard), the
    commands gentler than the driver's up to it; lane-change plans move into an adjacent lane with
    the minimum-jerk profile of sim/behavior.py over lane_change_s. The path follows the lane
    centre line (and its successor where it ends) at the ego's lateral offset, which decays
    as the lane keeping makes it; an ongoing lane change continues its profile.
    """
    f = params.steps(params.horizon_s, dt_s)
    a_nom = min(max(nominal_mps2, -params.max_brake_mps2), params.max_accel_mps2)
    accel, side, lane = [a_nom], [KEEP], [int(st.lane[ego])]
    if full:
        ease = ease_to_mps2 is not None
        for a in params.keep_lane_accels_mps2:
            gentler = ease and a_nom + 1e-6 < a <= ease_to_mps2 + 1e-9 and a < 0.0
            if a < a_nom - 1e-6 or gentler:
                accel.append(a)
                side.append(KEEP)
                lane.append(int(st.lane[ego]))
        for s_, tgt in lane_change_targets(st, road, params, ego).items():
            for a in params.lane_change_accels_mps2:
                accel.append(a)
                side.append(s_)
                lane.append(tgt)
    accel = np.asarray(accel, float)
    side = np.asarray(side, np.int8)
    lane = np.asarray(lane, np.int64)
    u = actuator_response(act, accel, f, params, dt_s)
    hold = params.steps(params.accel_hold_s, dt_s) + len(act.pending_mps2)
    if hold < f and np.any(accel > 0):  # a driver accelerates only for a while
        u[:, hold:] = np.where((accel > 0)[:, None], np.minimum(u[:, hold:], 0.0),
                               u[:, hold:])
    v, dist = speed_profile(float(st.speed[ego]), u, dt_s)
    t = dt_s * np.arange(1, f + 1)
    # lateral offset from each plan's lane centre over time (C, F)
    x0, y0 = np.full(len(lane), st.x[ego]), np.full(len(lane), st.y[ego])
    s0, d0 = _frenet(road, lane, float(st.station[ego]), x0, y0)
    decay = np.exp(-lateral_gain_1ps * t)  # lane keeping pulls an offset back
    if st.lane_from[ego] >= 0:  # an ongoing change: its profile (slower below 6 m/s)
        dur = max(float(st.lc_duration_s[ego]), 1e-6)
        prog = min(float(st.speed[ego]) / 6.0, 1.0)
        elapsed = float(st.lc_elapsed_s[ego])
        profile = float(st.lc_d0_m[ego]) * (1.0 - behavior.minimum_jerk(
            np.append(elapsed, elapsed + t * prog) / dur)[0])
        d_keep = profile[1:] + (float(st.d[ego]) - profile[0]) * decay
    else:
        d_keep = float(st.d[ego]) * decay
    blend, _ = behavior.minimum_jerk(t / params.lane_change_s)
    d = np.where((side == KEEP)[:, None], d_keep[None, :], d0[:, None] * (1.0 - blend)[None, :])
    s = s0[:, None] + dist
    dd = np.diff(np.concatenate([d0[:, None], d], axis=1), axis=1) / dt_s
    rel_heading = np.arctan(dd / np.maximum(v[:, 1:], 1.0))
    stop = fallback_stop_m(act, accel, float(st.speed[ego]), params, dt_s)
    return Candidates(accel, side, lane, u, s, d, rel_heading, v[:, 1:], dist, stop,
                      float(s0[0]), float(d0[0]),
                      float(behavior.wrap_angle(np.array([st.heading[ego]
                                                          - st.lane_heading[ego]]))[0]),
                      int(st.turn[ego]))


def _frenet(road: Road, lane: np.ndarray, station_m: float, x: np.ndarray, y: np.ndarray):
    """(s, d) of points on lanes, searching near the station."""
    s_guess = road.s_at_station(lane, np.full(len(lane), station_m))
    s, d, _, _, _ = road.project(lane, s_guess, x, y)
    return s, d


def _path_points(road: Road, lane: np.ndarray, s: np.ndarray, d: np.ndarray, turn: int):
    """World points (..., 2) and lane headings (...) of Frenet points, continuing onto the
    successor lane (by the ego's turn) past a lane's end, up to three lanes ahead."""
    lane, s = lane.copy(), s.copy()
    for _ in range(3):
        past = s > road.length_m[lane]
        if not past.any():
            break
        nxt = road.next_lane(lane[past], np.full(int(past.sum()), turn, np.int8))
        ok = nxt >= 0
        idx = np.flatnonzero(past.ravel())[ok]
        flat_s, flat_l = s.reshape(-1), lane.reshape(-1)
        flat_s[idx] -= road.length_m[flat_l[idx]]
        flat_l[idx] = nxt[ok]
        if not ok.any():
            break
    x, y, h = road.to_world(lane.ravel(), s.ravel(), d.ravel())
    return np.stack([x, y], -1).reshape(*s.shape, 2), h.reshape(s.shape)


# ---- the agents' predicted occupancy ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Forecast:
    """A agents' futures at the plan's F times: xy (A, K, F, 2) m, heading (A, K, F) rad,
    sigma (A, K, F, 2) m (world x, y), prob (A, K), length, width (A,) m, ids (A,),
    alongside (A,) bool: agents not entirely ahead of the ego now (followers, and vehicles
    beside it): if the ego keeps its lane, avoiding them is theirs to do;
    xy_now, v_now (A, 2), heading_now, station_now (A,): position m, velocity m/s, heading
    rad and road station m as perceived now."""

    xy: np.ndarray
    heading: np.ndarray
    sigma: np.ndarray
    prob: np.ndarray
    length: np.ndarray
    width: np.ndarray
    ids: np.ndarray
    alongside: np.ndarray
    xy_now: np.ndarray
    v_now: np.ndarray
    heading_now: np.ndarray
    station_now: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


def default_sigma(t_s: np.ndarray, heading: np.ndarray, params: AvoidanceParams,
                  extra_m: float = 0.0) -> np.ndarray:
    """(A, F, 2) world x, y position std of a forecast without its own uncertainty: growing
    linearly along (sigma_long_growth_mps) and across (sigma_lat_growth_mps) the course
    `heading` (A,), from sigma_floor_m (and `extra_m`, e.g. sensor noise, in quadrature)."""
    floor = math.hypot(params.sigma_floor_m, extra_m)
    lon = floor + params.sigma_long_growth_mps * t_s
    lat = floor + params.sigma_lat_growth_mps * t_s
    c2, s2 = np.cos(heading)[:, None] ** 2, np.sin(heading)[:, None] ** 2
    return np.stack([np.sqrt(c2 * lon ** 2 + s2 * lat ** 2),
                     np.sqrt(s2 * lon ** 2 + c2 * lat ** 2)], axis=-1)


def extend(xy: np.ndarray, sigma: np.ndarray, n_steps: int, v_now: np.ndarray,
           dt_s: float, growth_mps: float) -> tuple[np.ndarray, np.ndarray]:
    """Continue forecasts (A, K, F, 2) to F + n_steps at each mode's last velocity (v_now
    (A, 2) when F = 1), the std growing by growth_mps per second in quadrature."""
    if n_steps <= 0:
        return xy, sigma
    if xy.shape[2] >= 2:
        v = (xy[:, :, -1] - xy[:, :, -2]) / dt_s
    else:
        v = np.broadcast_to(v_now[:, None], xy[:, :, -1].shape)
    t = dt_s * np.arange(1, n_steps + 1)
    more = xy[:, :, -1:, :] + v[:, :, None, :] * t[None, None, :, None]
    more_sig = np.sqrt(sigma[:, :, -1:, :] ** 2 + (growth_mps * t)[None, None, :, None] ** 2)
    return np.concatenate([xy, more], axis=2), np.concatenate([sigma, more_sig], axis=2)


def lane_following(road: Road, lane: np.ndarray, station_m: np.ndarray, xy: np.ndarray,
                   v: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """(A, F, 2) m: agents driving on along their lane (A,) at their offset from its centre
    and their current speed along it, at times t_s (F,)."""
    lane = np.maximum(lane, 0)
    s, d, _, h, _ = road.project(lane, road.s_at_station(lane, station_m), xy[:, 0], xy[:, 1])
    v_along = np.maximum(v[:, 0] * np.cos(h) + v[:, 1] * np.sin(h), 0.0)
    s_t = s[:, None] + v_along[:, None] * t_s[None, :]
    n = len(t_s)
    x, y, _ = road.to_world(np.repeat(lane, n), s_t.ravel(), np.repeat(d, n))
    return np.stack([x, y], -1).reshape(len(lane), n, 2)


def _run_length(valid: np.ndarray) -> np.ndarray:
    """(S,) contiguous valid steps ending now. valid: (S, H) bool."""
    bad = ~valid[:, ::-1]
    return np.where(bad.any(axis=1), np.argmax(bad, axis=1), valid.shape[1])


def footprint_heading(xy: np.ndarray, heading_now: np.ndarray, xy_now: np.ndarray) -> np.ndarray:
    """(A, K, F) rad: the direction of each predicted step's motion, the current heading
    where an agent hardly moves (under 5 cm a step)."""
    prev = np.concatenate([np.broadcast_to(xy_now[:, None, None, :],
                                           (*xy.shape[:2], 1, 2)), xy[:, :, :-1]], axis=2)
    step = xy - prev
    moving = np.hypot(step[..., 0], step[..., 1]) > 0.05
    h = np.arctan2(step[..., 1], step[..., 0])
    return np.where(moving, h, heading_now[:, None, None])


# ---- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scores:
    """Per candidate (C,): p_collision, the probability of a collision the ego would cause
    (with agents ahead of it; with anyone in a lane change); p_rear, with agents beside or
    behind it (keep-lane plans: theirs to avoid); p_margin, the largest probability over the
    plan (from the first step a new command can act) that the safe distance to some agent is
    violated; margin_s, the expected seconds with it violated (summed over agents);
    p_comfort, comfort_s: the same for the comfortable distance;
    ttc_term (0..1), min_ttc_s: predicted time to collision with agents in its path; p_now,
    the probability that the safe distance to an agent in the path now is violated even if
    the ego brakes from the next step (forecast-free). Per candidate and agent (C, A):
    p_agent, the larger of the collision and safe-distance probabilities, p_agent_comfort
    the comfortable-distance one (0 for agents whose risk is theirs)."""

    p_now: np.ndarray
    p_collision: np.ndarray
    p_rear: np.ndarray
    p_margin: np.ndarray
    margin_s: np.ndarray
    p_comfort: np.ndarray
    comfort_s: np.ndarray
    ttc_term: np.ndarray
    min_ttc_s: np.ndarray
    p_agent: np.ndarray
    p_agent_comfort: np.ndarray


def score_plans(cand: Candidates, fc: Forecast, road: Road, ego_length_m: float,
                ego_width_m: float, params: AvoidanceParams, dt_s: float) -> Scores:
    """Collision probability, safe distance and time to collision of every candidate against
    every agent's every mode at every step: arrays (C, A, K, F), no Python loops over them.

    Geometry is in the Frenet frame of each plan's lane (so "in the path" follows the road
    around bends): the agents' predicted centres are projected on it; along (lon) and across
    (lat) are arc-length and offset differences to the ego's planned position at the same
    step. Overlap: the agent's footprint (rotated by its heading relative to the lane) and
    the ego's (inflated by the margins) overlap when the relative centre lies within the sum
    of their half extents; with the forecast's position std projected on the lane's axes,
    its probability is a product of two normal-CDF differences. A mode's collision
    probability is its largest over the horizon.
    Safe distance: an agent ahead in the path (footprints overlapping laterally) needs
    gap >= v_e tau + v_e^2 / (2 fallback_brake) - v_a^2 / (2 agent_brake), tau the ego's
    reaction (shorter while the plan already brakes hard); in a lane-change plan a follower
    in the path needs gap >= v_f follower_reaction_s + (v_f^2 - v_e^2) / (2 follower_brake).
    Modes weigh by their probability; agents combine as independent.
    """
    c_n, a_n = cand.n, fc.n
    if a_n == 0:
        z = np.zeros(c_n)
        return Scores(z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
                      z.copy(), np.full(c_n, np.inf), np.zeros((c_n, 0)), np.zeros((c_n, 0)))
    if np.all(cand.lane == cand.lane[0]):  # the usual case: every plan keeps the lane
        lanes, which = cand.lane[:1], None
    else:
        lanes, which = np.unique(cand.lane, return_inverse=True)
    xy = fc.xy
    prev = np.empty_like(xy)
    prev[:, :, 0] = fc.xy_now[:, None, :]
    prev[:, :, 1:] = xy[:, :, :-1]
    steps = xy - prev  # (A, K, F, 2)
    travelled = np.cumsum(np.hypot(steps[..., 0], steps[..., 1]), axis=-1)
    vxy = steps / dt_s
    # per lane the plans drive in: the agents' Frenet coordinates and what depends on them
    # alone, eight arrays (L, A, K, F), then taken for each plan (C, A, K, F) (one lane: kept
    # (1, A, K, F), broadcast against the plans)
    b_a, b_c = 2.0 * params.agent_brake_mps2, 2.0 * params.comfort_brake_mps2
    floor = params.sigma_floor_m
    sx2, sy2 = fc.sigma[..., 0] ** 2, fc.sigma[..., 1] ** 2
    per_lane = []
    for lane in lanes:
        s_a, d_a, h_l = _frenet_points(road, int(lane), fc, travelled)
        ch, sh = np.cos(h_l), np.sin(h_l)
        v_a = vxy[..., 0] * ch + vxy[..., 1] * sh  # along the lane
        va2 = np.maximum(v_a, 0.0) ** 2
        per_lane.append((s_a, d_a, fc.heading - h_l,
                         np.maximum(np.sqrt(ch * ch * sx2 + sh * sh * sy2), floor),
                         np.maximum(np.sqrt(sh * sh * sx2 + ch * ch * sy2), floor),
                         v_a, va2 / b_a, va2 / b_c))
    if which is None:
        g = [x[None] for x in per_lane[0]]
    else:
        g = [np.stack(x)[which] for x in zip(*per_lane)]
    lon = g[0] - cand.s[:, None, None, :]  # (C, A, K, F)
    lat = g[1] - cand.d[:, None, None, :]
    dh = g[2] - cand.rel_heading[:, None, None, :]
    sig_lon, sig_lat, v_a = g[3], g[4], g[5]
    cd, sd = np.abs(np.cos(dh)), np.abs(np.sin(dh))
    la, wa = fc.length[None, :, None, None], fc.width[None, :, None, None]
    body_l = 0.5 * ego_length_m + 0.5 * (la * cd + wa * sd)
    hw = 0.5 * ego_width_m + params.margin_lat_m + 0.5 * (la * sd + wa * cd)
    p_lat = _interval_prob(lat, hw, sig_lat)  # laterally in the path
    p = p_lat * _interval_prob(lon, body_l + params.margin_long_m, sig_lon)  # overlapping
    v_e = cand.speed[:, None, None, :]
    # safe distance along the plan (forecast): at each step t the ego, braking
    # fallback_brake_mps2 after its reaction, stops behind an agent ahead that brakes
    # agent_brake_mps2 from its predicted state at t; in a lane change a follower in the path
    # can stay behind the ego
    react_s = (dt_s + params.actuation_delay_s
               + 0.5 * params.max_brake_mps2 / params.jerk_limit_mps3)
    tau = react_s * (1.0 - np.clip(-cand.applied / params.fallback_brake_mps2, 0.0, 1.0))
    ahead = lon > 0.0
    gap = np.abs(lon) - body_l  # bumper to bumper along the road
    lc = (cand.side != KEEP)[:, None, None, None]
    act = min(params.steps(params.actuation_delay_s, dt_s) + 1, lon.shape[-1] - 1)
    need_back = (np.maximum(v_a, 0.0) * params.follower_reaction_s
                 + np.maximum(np.maximum(v_a, 0.0) ** 2 - v_e ** 2, 0.0)
                 / (2.0 * params.follower_brake_mps2))
    t_c = max(react_s, params.comfort_time_gap_s)
    ve2 = v_e ** 2
    viol = p_lat * ndtr(np.where(ahead, v_e * tau[:, None, None, :]
                                 + ve2 / (2.0 * params.fallback_brake_mps2) - gap - g[6],
                                 need_back - gap) / sig_lon)
    comfy = p_lat * ndtr(np.where(ahead, v_e * t_c + ve2 / b_c - gap - g[7],
                                  need_back - gap) / sig_lon)
    counts = ahead | lc  # overlap always counts; the distances ahead, and behind in a change
    viol = np.where(counts, np.maximum(viol, p), p)[..., act:]
    comfy = np.where(counts, np.maximum(comfy, p), p)[..., act:]
    prob = fc.prob
    p_coll_a = np.einsum("cak,ak->ca", p.max(axis=-1), prob)
    p_viol_a = np.einsum("cak,ak->ca", viol.max(axis=-1), prob)
    p_comf_a = np.einsum("cak,ak->ca", comfy.max(axis=-1), prob)
    margin_s = np.einsum("cakf,ak->ca", viol, prob) * dt_s
    comfort_s = np.einsum("cakf,ak->ca", comfy, prob) * dt_s
    front = ~((cand.side == KEEP)[:, None] & fc.alongside[None, :])
    # safe distance now (no forecast): issuing this plan's command now and braking
    # fallback_brake_mps2 from the next step, the ego stops behind where an agent in its path
    # now would stop braking agent_brake_mps2 from now
    lane0 = np.full(a_n, int(cand.lane[0]))
    s_now, d_now, h_now = _frenet_rows_xy(road, lane0, fc.station_now, fc.xy_now)
    dh0 = (fc.heading_now - h_now) - cand.rel_heading0
    cd0, sd0 = np.abs(np.cos(dh0)), np.abs(np.sin(dh0))
    lon0, lat0 = s_now - cand.s0, d_now - cand.d0
    body0 = (0.5 * ego_length_m + params.margin_long_m
             + 0.5 * (fc.length * cd0 + fc.width * sd0))
    hw0 = 0.5 * ego_width_m + params.margin_lat_m + 0.5 * (fc.length * sd0 + fc.width * cd0)
    sig0 = math.hypot(params.sigma_floor_m, params.sensor_noise_pos_m)
    v0 = np.maximum(fc.v_now[:, 0] * np.cos(h_now) + fc.v_now[:, 1] * np.sin(h_now), 0.0)
    room0 = lon0 - body0 + v0 ** 2 / b_a  # (A,)
    in_path0 = (lon0 > 0.0) * _interval_prob(lat0, hw0, sig0)
    viol0 = in_path0[None, :] * ndtr((cand.fallback_stop_m[:, None] - room0[None, :]) / sig0)
    margin_s += viol0 * dt_s
    # time to collision with agents in the path (mean footprints overlapping laterally)
    closing = v_e - v_a
    with np.errstate(divide="ignore", invalid="ignore"):
        ttc = np.where((np.abs(lat) < hw) & ahead & (closing > 0.1),
                       np.maximum(gap, 0.0) / closing, np.inf).min(axis=-1)  # (C, A, K)
    term = np.clip(1.0 - ttc / params.ttc_ref_s, 0.0, 1.0)
    ttc_term = np.einsum("cak,ak->ca", term, prob).max(axis=1)
    min_ttc = np.where(prob[None] > 0.05, ttc, np.inf).min(axis=(1, 2))
    f = front.astype(float)
    return Scores(
        p_now=1.0 - np.prod(1.0 - f * viol0, axis=1),
        p_collision=1.0 - np.prod(1.0 - f * p_coll_a, axis=1),
        p_rear=1.0 - np.prod(1.0 - (1.0 - f) * p_coll_a, axis=1),
        p_margin=1.0 - np.prod(1.0 - f * p_viol_a, axis=1),
        margin_s=(f * margin_s).sum(axis=1),
        p_comfort=1.0 - np.prod(1.0 - f * p_comf_a, axis=1),
        comfort_s=(f * comfort_s).sum(axis=1),
        ttc_term=ttc_term, min_ttc_s=min_ttc,
        p_agent=f * np.maximum(np.maximum(p_coll_a, p_viol_a), viol0),
        p_agent_comfort=f * p_comf_a)


def _frenet_points(road: Road, lane: int, fc: Forecast, travelled: np.ndarray):
    """(s, d, lane heading), each (A, K, F), of the forecast's points on `lane`, searching
    from each agent's current arc length on it plus the distance it travels."""
    a_n = fc.n
    s_now = road.s_at_station(np.full(a_n, lane), fc.station_now)
    guess = s_now[:, None, None] + travelled
    lanes = np.full(guess.size, lane)
    s_, d_, _, h_, _ = road.project(lanes, guess.ravel(), fc.xy[..., 0].ravel(),
                                    fc.xy[..., 1].ravel())
    shape = guess.shape
    return s_.reshape(shape), d_.reshape(shape), h_.reshape(shape)


def _frenet_rows_xy(road: Road, lane: np.ndarray, station_m: np.ndarray, xy: np.ndarray):
    """(s, d, lane heading) of points (N, 2) on lanes (N,), searching near their stations."""
    s, d, _, h, _ = road.project(lane, road.s_at_station(lane, station_m), xy[:, 0], xy[:, 1])
    return s, d, h


def _interval_prob(mean: np.ndarray, half: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """P(|X| < half) for X ~ N(mean, sigma^2), elementwise. Large arrays evaluate the normal
    CDF only where the interval is not more than 6 sigma away."""
    if mean.size < 20_000:
        return ndtr((half - mean) / sigma) - ndtr((-half - mean) / sigma)
    out = np.zeros(np.broadcast_shapes(mean.shape, half.shape, sigma.shape))
    m, h, sg = np.broadcast_arrays(mean, half, sigma)
    near = np.abs(m) < h + 6.0 * sg
    if near.any():
        m, h, sg = m[near], h[near], sg[near]
        out[near] = ndtr((h - m) / sg) - ndtr((-h - m) / sg)
    return out


def plan_costs(cand: Candidates, sc: Scores, last_command_mps2: float, desired_speed_mps: float,
               params: AvoidanceParams, dt_s: float) -> np.ndarray:
    """(C,) cost: risk (collision, safe distance), time to collision, comfort (acceleration,
    change of command), progress (share of the desired-speed distance not driven over the
    horizon), lane change."""
    a = cand.accel_mps2
    ref = params.comfort_accel_mps2
    horizon_m = max(desired_speed_mps, 1.0) * cand.dist.shape[1] * dt_s
    shortfall = np.clip(1.0 - cand.dist[:, -1] / horizon_m, 0.0, 1.0)
    return (params.w_risk * (sc.p_collision + params.rear_weight * sc.p_rear)
            + params.w_margin * sc.margin_s
            + params.w_comfort * sc.comfort_s
            + params.w_ttc * sc.ttc_term
            + params.w_accel * (a / ref) ** 2
            + params.w_jerk * ((a - last_command_mps2) / ref) ** 2
            + params.w_progress * shortfall
            + params.w_lane_change * (cand.side != KEEP))


def limits(params: AvoidanceParams, releasing: bool) -> tuple[float, float, float]:
    """The limits the nominal plan must keep: (collision and safe distance now, safe distance
    along the forecast, comfortable distance) = p_accept, p_margin_accept, p_comfort_accept,
    scaled by p_release / p_accept while an intervention is to end (hysteresis)."""
    scale = params.p_release / params.p_accept if releasing else 1.0
    return (params.p_accept * scale, params.p_margin_accept * scale,
            params.p_comfort_accept * scale)


def choose(sc: Scores, cost: np.ndarray, cand: Candidates, releasing: bool,
           params: AvoidanceParams) -> tuple[int, str]:
    """The plan to follow and why. The nominal one (index 0) while its probabilities are
    within `limits` (collision and safe distance now: p_accept; safe distance along the
    forecast: p_margin_accept; comfortable distance: p_comfort_accept; tighter while
    `releasing` an intervention) and the plans do not ease the driver's hard braking; else
    the cheapest plan within them braking no harder than comfort_brake_mps2 or as the
    driver does unless hard ("comfortable"); else the cheapest within
    the first three braking no harder than that ("gentle"; comfort violations cost), or
    braking harder ("safe"; comfort no longer counts); else, of the plans without a likely
    collision, the one that best keeps the safe distance now (p_now), then over the plan
    (margin_s), then the cheapest ("restore"); else braking at the limit in the lane
    ("emergency"). Returns (index, kind)."""
    lim = np.full(cand.n, params.p_accept)
    lim_m = np.full(cand.n, params.p_margin_accept)
    lim_c = np.full(cand.n, params.p_comfort_accept)
    lim[0], lim_m[0], lim_c[0] = limits(params, releasing)
    no_crash = sc.p_collision <= lim
    safe = no_crash & (sc.p_now <= lim) & (sc.p_margin <= lim_m)
    gentle = cand.accel_mps2 >= -params.comfort_brake_mps2 - 1e-9
    gentle[0] = not cand.easing  # the driver's own, unless a hard brake the plans ease
    comfortable = safe & (sc.p_comfort <= lim_c) & gentle
    if comfortable[0]:
        return 0, "nominal"
    # (a driver braking hard is followed only when no gentler plan is safe: "safe" tier)
    # braking harder than gently is for safety only: comfort no longer counts there
    hard_cost = cost - params.w_comfort * sc.comfort_s
    for tier, ok, c in (("comfortable", comfortable, cost), ("gentle", safe & gentle, cost),
                        ("safe", safe, hard_cost)):
        if ok.any():
            return int(np.flatnonzero(ok)[np.argmin(c[ok])]), tier
    if no_crash.any():
        idx = np.flatnonzero(no_crash)
        idx = idx[sc.p_now[idx] <= sc.p_now[idx].min() + 0.02]
        idx = idx[sc.margin_s[idx] <= sc.margin_s[idx].min() + 0.05]
        return int(idx[np.argmin(cost[idx])]), "restore"
    keep = cand.side == KEEP
    return int(np.argmin(np.where(keep, cand.accel_mps2, np.inf))), "emergency"


# ---- the reactive AEB --------------------------------------------------------------------------


def in_path_target(st: TrafficState, road: Road, rows: np.ndarray, x: np.ndarray,
                   y: np.ndarray, vx: np.ndarray, vy: np.ndarray, lat_margin_m: float,
                   ego: int = EGO):
    """The nearest vehicle ahead whose footprint overlaps the ego's path laterally now: the
    ego's lane at its current offset (its target lane during a lane change). rows (A,) with
    their (perceived) positions and velocities. Returns (index into rows or -1, bumper gap m,
    speed along the lane m/s) and the (A,) gaps and in-path mask."""
    if len(rows) == 0 or st.lane[ego] < 0:
        return -1, math.inf, 0.0, np.empty(0), np.empty(0, bool)
    lane = np.full(len(rows), int(st.lane[ego]))
    s_a, d_a = _frenet_rows(road, lane, st, rows, x, y)
    _, _, h, _, _ = road.pose_at(lane, s_a)
    v_along = vx * np.cos(h) + vy * np.sin(h)
    gap = s_a - st.s[ego] - 0.5 * (st.length[rows] + st.length[ego])
    half = 0.5 * (st.width[rows] + st.width[ego]) + lat_margin_m
    path = (np.abs(d_a - st.d[ego]) < half) & (s_a > st.s[ego])
    if not path.any():
        return -1, math.inf, 0.0, gap, path
    i = int(np.flatnonzero(path)[np.argmin(gap[path])])
    return i, float(gap[i]), float(v_along[i]), gap, path


def _frenet_rows(road: Road, lane: np.ndarray, st: TrafficState, rows: np.ndarray,
                 x: np.ndarray, y: np.ndarray):
    s_guess = road.s_at_station(lane, st.station[rows])
    s, d, _, _, _ = road.project(lane, s_guess, x, y)
    return s, d


def required_decel(gap_m: float, v_ego_mps: float, v_lead_mps: float, a_lead_mps2: float,
                   delay_s: float, keep_m: float) -> float:
    """The constant deceleration (m/s^2, >= 0; inf if none can) the ego must start after
    delay_s (driving on at its speed until then) to stay keep_m behind a lead that holds its
    acceleration (a_lead < 0: until it stops; a_lead > 0 counts as 0). Exact kinematics:
    the larger of what stopping behind the lead's stopping point needs and, if the speeds
    match while the lead still moves, what matching its speed there needs."""
    d_l = max(-a_lead_mps2, 0.0)
    v_e = max(v_ego_mps, 0.0)
    v_l = max(v_lead_mps, 0.0)
    if d_l > 0 and v_l <= d_l * delay_s:  # the lead stops during the delay
        x_l, v_l1 = v_l * v_l / (2.0 * d_l), 0.0
    else:
        x_l, v_l1 = v_l * delay_s - 0.5 * d_l * delay_s ** 2, v_l - d_l * delay_s
    room = gap_m + x_l - v_e * delay_s - keep_m  # gap beyond keep_m when braking starts
    w = v_e - v_l1
    if v_e <= 0.0:
        return 0.0
    if d_l == 0.0 and v_l1 > 0.0:  # a lead holding its speed: match it
        if w <= 0.0:
            return 0.0
        return w * w / (2.0 * room) if room > 0 else math.inf
    lead_stop_m = v_l1 * v_l1 / (2.0 * d_l) if d_l > 0 else 0.0
    if room + lead_stop_m <= 0:
        return math.inf
    b = v_e * v_e / (2.0 * (room + lead_stop_m))  # stop behind where the lead stops
    if w > 0 and v_l1 > 0:
        if room <= 0:
            return math.inf
        b_match = d_l + w * w / (2.0 * room)
        if 2.0 * room / w <= v_l1 / d_l:  # with b_match the speeds meet before the lead stops
            b = max(b, b_match)
    return b


def reactive_command(gap_m: float, v_ego_mps: float, v_lead_mps: float, a_lead_mps2: float,
                     braking: bool, params: AvoidanceParams) -> tuple[float | None, bool, float]:
    """The AEB's decision: (deceleration command m/s^2 or None, braking now, TTC s).

    TTC = gap / closing speed at current speeds. The AEB brakes when avoiding the target
    needs at least aeb_trigger_mps2 (after the actuation delay and brake build-up, the
    target holding its current deceleration), at aeb_gain times that, no less than
    aeb_min_decel_mps2 and no more than the limit; it keeps braking at least that hard until
    the ego no longer closes in (closing speed <= aeb_release_closing_mps). Brought to a
    standstill behind a target within aeb_hold_m that does not move off, it holds the brake."""
    closing = v_ego_mps - v_lead_mps
    ttc = gap_m / closing if closing > 1e-9 and gap_m > 0 else (0.0 if gap_m <= 0 else math.inf)
    if not math.isfinite(gap_m):
        return None, False, math.inf
    if braking and v_ego_mps < 0.3 and gap_m < params.aeb_hold_m and v_lead_mps < 0.5:
        return params.comfort_brake_mps2, True, ttc  # brake hold at a standstill
    delay = params.actuation_delay_s + 0.5 * params.max_brake_mps2 / params.jerk_limit_mps3
    need = required_decel(gap_m, v_ego_mps, v_lead_mps, a_lead_mps2, delay, params.aeb_gap_m)
    if braking and closing <= params.aeb_release_closing_mps and need < params.aeb_trigger_mps2:
        braking = False
    if not braking and need >= params.aeb_trigger_mps2 and closing > 0:
        braking = True
    if not braking:
        return None, False, ttc
    decel = min(max(params.aeb_gain * need, params.aeb_min_decel_mps2), params.max_brake_mps2)
    if closing <= params.aeb_release_closing_mps:  # matched speed: hold it, no more
        decel = min(decel, max(-a_lead_mps2, 0.0) + 0.5)
    return decel, True, ttc


# ---- the layer (the step's hook) -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Plan:
    """What the layer decided at one step (for the viewer, the benchmark and tests).

    command_mps2: acceleration commanded to the actuator; applied_mps2: acting this step;
    nominal_mps2: the driver's own; lane_change: target lane of a commanded change (-1);
    intervening: the command differs from the nominal one; p_nominal, p_plan: collision
    probabilities of the nominal and the chosen plan (predictor modes); min_ttc_s: predicted
    (predictor modes) or current (reactive) time to collision; plan_xy: (F, 2) m, the ego's
    planned centre; reacts_to_id: the agent that makes the nominal plan unsafe (-1);
    threat_ids: agents with a collision probability above p_accept on the nominal plan."""

    t_s: float
    step: int
    mode: str
    action: str
    command_mps2: float
    applied_mps2: float
    nominal_mps2: float
    lane_change: int = -1
    intervening: bool = False
    p_nominal: float = 0.0
    p_plan: float = 0.0
    min_ttc_s: float = math.inf
    plan_xy: np.ndarray | None = None
    reacts_to_id: int = -1
    threat_ids: tuple[int, ...] = ()


def max_horizon_steps(predictor) -> int | None:
    """The longest horizon a forecaster predicts, in steps: its `max_horizon_steps`, or the
    horizon its config was trained for (`config.horizon_steps`, the RNN); None: any."""
    n = getattr(predictor, "max_horizon_steps", None)
    if n is None:
        n = getattr(getattr(predictor, "config", None), "horizon_steps", None)
    return int(n) if isinstance(n, (int, np.integer)) and n > 0 else None


class SafetyLayer:
    """The ego's safety layer as the step's hook: `step(st, world, rng, counters, layer)`.

    Holds what must persist between steps: the actuator, the agents' recent past (for the
    forecaster), the reactive AEB's braking state, and the plans decided (`last_plan`,
    `plan_for(state)` for the viewer). A state earlier than the last one seen (a restart)
    resets it. Deterministic: sensor noise comes from its own generator seeded by `seed`.
    """

    def __init__(self, mode: str, params: AvoidanceParams | None = None,
                 predictor: Predictor | None = None, dt_s: float = 0.1, seed: int = 0,
                 keep_plans: int = 4000, actuator: Actuator | None = None,
                 draw_plans: bool = True):
        self.mode = mode
        self.draw_plans = draw_plans  # keep each plan's world path (Plan.plan_xy) to draw
        self.params = params or AvoidanceParams()
        self.predictor = predictor
        self.dt_s = float(dt_s)
        self.seed = int(seed)
        self.keep_plans = keep_plans
        if mode not in BUILTIN_MODES and predictor is None:
            raise ValueError(f"avoidance mode {mode!r} needs a forecaster")
        if predictor is not None:
            p_dt = getattr(predictor, "dt_s", None)
            if p_dt is not None and abs(p_dt - self.dt_s) > 1e-9:
                raise ValueError(f"avoidance mode {mode!r}: the forecaster works at steps of "
                                 f"{p_dt:g} s, the scenario at {self.dt_s:g} s")
        p = self.params
        self.horizon_steps = p.steps(p.horizon_s, self.dt_s)
        self.latency_steps = p.steps(p.latency_s, self.dt_s)
        need = getattr(predictor, "history_steps", 0) or 0
        self.history_steps = max(p.steps(p.history_s, self.dt_s), int(need))
        self.forecast_steps = self.horizon_steps + self.latency_steps
        limit = max_horizon_steps(predictor) if predictor is not None else None
        self.predict_steps = min(self.forecast_steps, limit or self.forecast_steps)
        self._initial_actuator = actuator
        self.reset()

    def reset(self) -> None:
        self.actuator = self._initial_actuator
        self.actuator_before: Actuator | None = None
        self.buffer = HistoryBuffer(self.history_steps, self.dt_s)
        self._sensed: deque = deque(maxlen=self.latency_steps + 1)
        self._noise = np.random.default_rng([self.seed, 0x5AFE])
        self.intervening = False
        self.aeb_braking = False
        self.last_command = None
        self.last_step = -1
        self.last_plan: Plan | None = None
        self.plans: dict[int, Plan] = {}
        self.ego = EGO

    # the hook
    def __call__(self, st: TrafficState, world, index, accel: np.ndarray) -> Override | None:
        if st.step <= self.last_step:
            self.reset()
        self.last_step = st.step
        # the ego's row and id: row 0, id 0 in a simulated world; a log replay says which
        self.ego = int(getattr(world, "ego_row", EGO))
        if not (st.active[self.ego] and st.ids[self.ego] == getattr(world, "ego_id", 0)):
            return None
        p, dt = self.params, self.dt_s
        nominal = float(accel[self.ego])
        if self.actuator is None:
            self.actuator = Actuator.idle(p, dt, min(max(float(st.accel[self.ego]),
                                                         -p.max_brake_mps2), p.max_accel_mps2))
        if self.last_command is None:
            self.last_command = nominal
        self.actuator_before = self.actuator
        sensed = self._sense(st) if self.mode != "none" else None
        if self.mode == "none":
            plan = self._nominal_plan(st, nominal)
        elif self.mode == "reactive":
            plan = self._reactive(st, world.road, sensed, nominal)
        else:
            plan = self._predictive(st, world.road, sensed, nominal,
                                    ease_limit(st, world.road, index, nominal, p, self.ego,
                                               getattr(world, "junction", None)))
        self.actuator = actuator_step(self.actuator, plan.command_mps2, p, dt)
        plan = _with(plan, applied_mps2=self.actuator.applied_mps2)
        self.intervening = plan.intervening
        self.last_command = plan.command_mps2
        self.last_plan = plan
        self.plans[st.step] = plan
        if len(self.plans) > self.keep_plans:
            del self.plans[next(iter(self.plans))]
        if plan.lane_change >= 0:
            lc = plan.lane_change
        else:
            lc = NO_LANE_CHANGE if plan.intervening else KEEP_CHOICE
        return Override(rows=np.array([self.ego]),
                        accel_mps2=np.array([self.actuator.applied_mps2]),
                        lane_change=np.array([lc]),
                        lane_change_s=np.array([p.lane_change_s if lc >= 0 else np.nan]))

    def observe(self, st: TrafficState, world) -> None:
        """See the agents without commanding anything (a log replay shows the layer the
        recording before its ego takes over): their past fills the forecaster's history."""
        if st.step <= self.last_step:
            self.reset()
        self.last_step = st.step
        self.ego = int(getattr(world, "ego_row", EGO))
        if self.mode != "none":
            self._sense(st)

    def plan_for(self, state: TrafficState) -> Plan | None:
        """The plan decided at the state's step, or the latest one before it (the newest
        state's plan is decided when the next step runs)."""
        plan = self.plans.get(state.step)
        if plan is not None:
            return plan
        if self.last_plan is not None and self.last_plan.step <= state.step:
            return self.last_plan
        return None

    # perception
    def _sense(self, st: TrafficState):
        """What the layer sees of the agents: positions and velocities with sensor noise,
        `latency_s` old. Returns the perceived snapshot (an object with the state's arrays),
        pushed to the history buffer."""
        p = self.params
        snap = SimpleNamespace(t_s=st.t_s, step=st.step, ids=st.ids, active=st.active.copy(),
                               x=st.x, y=st.y, vx=st.vx, vy=st.vy, heading=st.heading,
                               length=st.length, width=st.width, kind=st.kind,
                               accel=st.accel, station=st.station)
        if self.latency_steps:  # kept for later: a caller may update its arrays in place
            for name in ("ids", "x", "y", "vx", "vy", "heading", "length", "width", "kind",
                         "accel", "station"):
                setattr(snap, name, np.array(getattr(snap, name)))
        if p.sensor_noise_pos_m > 0 or p.sensor_noise_vel_mps > 0:
            n = len(st.x)
            z = self._noise.standard_normal((4, n))
            z[:, self.ego] = 0.0  # the ego knows itself
            snap.x = st.x + p.sensor_noise_pos_m * z[0]
            snap.y = st.y + p.sensor_noise_pos_m * z[1]
            snap.vx = st.vx + p.sensor_noise_vel_mps * z[2]
            snap.vy = st.vy + p.sensor_noise_vel_mps * z[3]
        self._sensed.append(snap)
        seen = self._sensed[0]
        if self.mode != "reactive":
            self.buffer.push(seen)
        return seen

    def _agents(self, st: TrafficState, seen) -> np.ndarray:
        """Rows perceived now (as of the latency), present now, within sensing range."""
        same = seen.active & st.active[:len(seen.active)] & (st.ids[:len(seen.active)]
                                                              == seen.ids[:len(seen.active)])
        same[self.ego] = False
        rows = np.flatnonzero(same)
        near = np.hypot(seen.x[rows] - st.x[self.ego], seen.y[rows] - st.y[self.ego])
        return rows[near <= self.params.sensing_range_m]

    # modes
    def _nominal_plan(self, st: TrafficState, nominal: float) -> Plan:
        return Plan(st.t_s, st.step, self.mode, "nominal", nominal, nominal, nominal)

    def _reactive(self, st: TrafficState, road: Road, seen, nominal: float) -> Plan:
        p = self.params
        rows = self._agents(st, seen)
        i, gap, v_lead, _, _ = in_path_target(st, road, rows, seen.x[rows], seen.y[rows],
                                              seen.vx[rows], seen.vy[rows], p.aeb_lat_margin_m,
                                              ego=self.ego)
        a_lead = float(seen.accel[rows[i]]) if i >= 0 else 0.0
        decel, self.aeb_braking, ttc = reactive_command(gap, float(st.speed[self.ego]), v_lead,
                                                        a_lead, self.aeb_braking, p)
        target = int(st.ids[rows[i]]) if i >= 0 else -1
        if decel is None or -decel >= nominal:
            return Plan(st.t_s, st.step, self.mode, "nominal", nominal, nominal, nominal,
                        min_ttc_s=ttc, reacts_to_id=target if decel is not None else -1)
        return Plan(st.t_s, st.step, self.mode, f"AEB {decel:.1f} m/s2", -decel, -decel,
                    nominal, intervening=True, min_ttc_s=ttc, reacts_to_id=target,
                    threat_ids=(target,))

    def forecast(self, st: TrafficState, seen, rows: np.ndarray, road: Road) -> Forecast:
        """The agents' (rows) forecasts over the plan's F steps from now. Agents tracked for
        less than min_track_s (too short a past for the forecaster: at the start, or just
        appeared) follow their lane at their current speed instead."""
        p, dt = self.params, self.dt_s
        history = self.buffer.history(seen, rows, getattr(self.predictor, "n_neighbors", 0))
        pred = self.predictor.predict(history, self.predict_steps)
        xy = pred.xy
        tracked = _run_length(history.valid)
        young = tracked < p.steps(p.min_track_s, dt) + 1
        heading_now = np.asarray(seen.heading, float)[rows]
        t = dt * np.arange(1, xy.shape[2] + 1)
        noise = math.hypot(p.sensor_noise_pos_m, 0.0)
        if pred.sigma_m is None:
            sig = np.broadcast_to(default_sigma(t, heading_now, p, noise)[:, None],
                                  xy.shape).copy()
        else:
            sig = np.sqrt(pred.sigma_m ** 2 + noise ** 2 + p.sigma_floor_m ** 2)
        v_now = np.stack([np.asarray(seen.vx)[rows], np.asarray(seen.vy)[rows]], -1)
        xy, sig = extend(xy, sig, self.forecast_steps - xy.shape[2], v_now, dt,
                         p.sigma_long_growth_mps)
        xy_now = np.stack([np.asarray(seen.x)[rows], np.asarray(seen.y)[rows]], -1)
        if young.any():
            y = np.flatnonzero(young)
            t_all = dt * np.arange(1, xy.shape[2] + 1)
            xy = xy.copy()
            xy[y] = lane_following(road, st.lane[rows[y]],
                                   np.asarray(seen.station, float)[rows[y]], xy_now[y],
                                   v_now[y], t_all)[:, None]
            sig = sig.copy()
            sig[y] = default_sigma(t_all, heading_now[y], p, noise)[:, None]
        heading = footprint_heading(xy, heading_now, xy_now)
        lag = self.latency_steps
        xy, sig, heading = xy[:, :, lag:], sig[:, :, lag:], heading[:, :, lag:]
        # agents not entirely ahead of the ego now (along the road)
        ahead_m = np.asarray(seen.station, float)[rows] - st.station[self.ego]
        alongside = ahead_m < 0.5 * (st.length[rows] + st.length[self.ego])
        return Forecast(xy=xy, heading=heading, sigma=sig, prob=pred.prob,
                        length=np.asarray(st.length[rows], float),
                        width=np.asarray(st.width[rows], float),
                        ids=np.asarray(st.ids[rows], np.int64), alongside=alongside,
                        xy_now=xy_now, v_now=v_now, heading_now=heading_now,
                        station_now=np.asarray(seen.station, float)[rows])

    def _xy(self, cand: Candidates, road: Road, i: int) -> np.ndarray | None:
        return cand.world_xy(road, i) if self.draw_plans else None

    def _no_creeping(self, st: TrafficState, road: Road, seen, rows: np.ndarray,
                     threats: tuple[int, ...], a_mps2: float) -> tuple[float, str] | None:
        """Stop and hold, match (AvoidanceParams): the command and action that keep the ego,
        held back (keep lane, command a_mps2), from creeping up on the nearest vehicle in its
        path within aeb_hold_m when that vehicle is why (among the threats); None when
        neither applies or the plan already brakes harder."""
        p = self.params
        if a_mps2 <= -p.stop_decel_mps2:
            return None
        v_ego = float(st.speed[self.ego])
        stop = v_ego < p.stop_below_mps
        # a lead's speed along the lane is at most its speed: skip the path search when no
        # threat could be slow enough to stop behind or fast enough to match
        speed = np.hypot(seen.vx[rows], seen.vy[rows])
        could = np.isin(st.ids[rows], threats) & (stop | (speed > v_ego - p.match_below_mps))
        if not could.any():
            return None
        i, gap, v_lead, _, _ = in_path_target(st, road, rows, seen.x[rows], seen.y[rows],
                                              seen.vx[rows], seen.vy[rows], p.aeb_lat_margin_m,
                                              ego=self.ego)
        if i < 0 or gap >= p.aeb_hold_m or int(st.ids[rows[i]]) not in threats:
            return None
        if stop and v_lead < 0.5:
            return -p.stop_decel_mps2, f"stop and hold {-p.stop_decel_mps2:.1f} m/s2"
        closing = v_ego - v_lead
        if 0.0 < closing < p.match_below_mps:
            match = -min(closing / p.match_s, p.stop_decel_mps2)
            if a_mps2 > match:
                return match, f"match speed {match:.1f} m/s2"
        return None

    def _predictive(self, st: TrafficState, road: Road, seen, nominal: float,
                    ease_to: float | None = None) -> Plan:
        p, dt = self.params, self.dt_s
        rows = self._agents(st, seen)
        act = self.actuator
        length, width = float(st.length[self.ego]), float(st.width[self.ego])
        if len(rows) == 0:
            cand = plan_candidates(st, road, nominal, act, p, dt, full=False, ego=self.ego)
            return Plan(st.t_s, st.step, self.mode, "nominal", nominal, nominal, nominal,
                        plan_xy=self._xy(cand, road, 0))
        fc = self.forecast(st, seen, rows, road)
        nom = None
        if not (self.intervening or ease_to is not None):  # the nominal plan alone first
            cand = plan_candidates(st, road, nominal, act, p, dt, full=False, ego=self.ego)
            sc = score_plans(cand, fc, road, length, width, p, dt)
            nom = (_severity(sc, p), fc.ids)
            lim, lim_m, lim_c = limits(p, False)
            if (max(sc.p_collision[0], sc.p_now[0]) <= lim and sc.p_margin[0] <= lim_m
                    and sc.p_comfort[0] <= lim_c):
                return Plan(st.t_s, st.step, self.mode, "nominal", nominal, nominal, nominal,
                            p_nominal=float(max(sc.p_collision[0], sc.p_now[0],
                                                sc.p_margin[0])),
                            p_plan=float(sc.p_collision[0]), min_ttc_s=float(sc.min_ttc_s[0]),
                            plan_xy=self._xy(cand, road, 0),
                            threat_ids=_threats(*nom))
        cand = plan_candidates(st, road, nominal, act, p, dt, full=True, ego=self.ego,
                               ease_to_mps2=ease_to)
        sc = score_plans(cand, fc, road, length, width, p, dt)
        if nom is None:
            nom = (_severity(sc, p), fc.ids)
        cost = plan_costs(cand, sc, self.last_command, float(st.v0_mps[self.ego]), p, dt)
        best, kind = choose(sc, cost, cand, self.intervening, p)
        a = float(cand.accel_mps2[best])
        side = int(cand.side[best])
        p_agent, ids = nom
        threats = _threats(p_agent, ids)
        creep = (self._no_creeping(st, road, seen, rows, threats, a)
                 if best != 0 and side == KEEP else None)
        if creep is not None:
            a, action = creep
        elif best == 0:
            action = "nominal"
        elif kind == "emergency":
            action = f"emergency brake {a:.1f} m/s2"
        elif side != KEEP:
            action = f"lane change {_SIDE_NAMES[side]}" + (f", {a:+.1f} m/s2" if a else "")
        elif a > nominal:
            action = f"ease braking {a:.1f} m/s2 (driver {nominal:.1f})"
        else:
            action = f"brake {a:.1f} m/s2" if a < 0 else f"limit accel {a:+.1f} m/s2"
        worst = int(ids[np.argmax(p_agent)]) if best != 0 and len(ids) else -1
        return Plan(st.t_s, st.step, self.mode, action, a, a, nominal,
                    lane_change=int(cand.lane[best]) if side != KEEP else -1,
                    intervening=best != 0,
                    p_nominal=float(max(sc.p_collision[0], sc.p_now[0], sc.p_margin[0])),
                    p_plan=float(sc.p_collision[best]), min_ttc_s=float(sc.min_ttc_s[best]),
                    plan_xy=self._xy(cand, road, best), reacts_to_id=worst,
                    threat_ids=threats)


def _severity(sc: Scores, params: AvoidanceParams) -> np.ndarray:
    """(A,) how far each agent takes the nominal plan beyond its limits (> 1: it is why the
    layer intervenes): its collision / safe-distance probability over p_accept, or its
    comfortable-distance one over p_comfort_accept, whichever is larger."""
    return np.maximum(sc.p_agent[0] / params.p_accept,
                      sc.p_agent_comfort[0] / params.p_comfort_accept)


def _threats(severity: np.ndarray, ids: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in ids[severity > 1.0])


def _with(plan: Plan, **changes) -> Plan:
    values = {f.name: getattr(plan, f.name) for f in fields(Plan)}
    values.update(changes)
    return Plan(**values)
