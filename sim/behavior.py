"""Driver behaviour for all rows at once: IDM car following, MOBIL lane changes, lane keeping.

Behaviours only compute controls (longitudinal acceleration, front steering angle) and lane
change decisions; sim/dynamics.py moves the vehicles. Functions take a TrafficState `st`
with capacity C and return (C,) arrays (inactive rows hold harmless values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.dynamics import REAR_AXLE_SHARE
from sim.road import LANE_DEAD_END, Road
from sim.state import wheelbase_m

MAX_DECEL_MPS2 = 9.0  # physical braking limit
MIN_GAP_EPS_M = 0.1  # IDM gap floor, avoids division by zero on contact
FIRST_STATION_M = -1.0e6  # a station before any lane's start (LaneIndex.neighbours: first)
TIGHT_CURVATURE_1PM = 1.0 / 150.0  # curves tighter than this get slip-angle feed-forward
_KEY_M = 1.0e7


@dataclass(frozen=True)
class BehaviorParams:
    """Settings shared by all drivers (per-driver values live in TrafficState rows)."""

    lane_change_check_s: float = 1.0  # drivers weigh lane changes this often
    keep_right_bias_mps2: float = 0.3  # MOBIL bias towards the right lane (> thresholds)
    merge_bias_mps2: float = 2.0  # extra incentive to leave a lane that ends
    min_lane_change_speed_mps: float = 3.0  # except out of a lane that ends
    merge_safe_decel_mps2: float = 4.0  # b_safe for a merge out of a lane that ends
    courtesy_decel_mps2: float = 2.0  # main-lane drivers brake this much to let a merger in,
    # rising to merge_safe_decel_mps2 as the merger nears the end of its lane
    merge_lookahead_m: float = 60.0  # mergers start adapting this far before the merge zone
    yield_room_m: float = 3.0  # a yielding driver stops this much further back than usual
    forced_merge_gap_m: float = 1.0  # least bumper gap for a merge out of an ending lane
    lane_change_min_speed_mps: float = 6.0  # below this a lane change progresses slower
    lateral_gain_1ps: float = 1.5  # lateral offset -> lateral speed correction
    heading_gain_1ps: float = 6.0  # heading error -> yaw rate correction
    max_lateral_angle_rad: float = 0.35  # steepest approach to a lane centre

    def __post_init__(self) -> None:
        if self.lane_change_check_s <= 0 or self.lateral_gain_1ps <= 0:
            raise ValueError("lane_change_check_s and lateral_gain_1ps must be positive")
        if self.heading_gain_1ps < 4 * self.lateral_gain_1ps:
            raise ValueError("heading_gain_1ps must be >= 4 x lateral_gain_1ps (no overshoot)")


@dataclass(frozen=True)
class LaneIndex:
    """Vehicles sorted by (lane, station). A vehicle changing lanes is listed in both lanes.

    key, row, lane: (E,) sorted entries. leader / follower: (C,) row ahead / behind in the
    vehicle's own lane, -1 none; leader_from: the row ahead in the lane being left.
    """

    key: np.ndarray
    row: np.ndarray
    lane: np.ndarray
    leader: np.ndarray
    follower: np.ndarray
    leader_from: np.ndarray
    changing: np.ndarray  # (M,) rows changing lanes (listed twice)

    def neighbours(self, lane: np.ndarray, station_m: np.ndarray):
        """Rows ahead of and behind positions (lane, station) (N,), -1 where none."""
        n_entries = len(self.key)
        if n_entries == 0:
            none = np.full(np.shape(lane), -1, np.int64)
            return none, none.copy()
        p = np.searchsorted(self.key, lane * _KEY_M + station_m)
        ahead_p = np.minimum(p, n_entries - 1)
        behind_p = np.maximum(p - 1, 0)
        has_ahead = (p < n_entries) & (self.lane[ahead_p] == lane)
        has_behind = (p > 0) & (self.lane[behind_p] == lane)
        return (np.where(has_ahead, self.row[ahead_p], -1),
                np.where(has_behind, self.row[behind_p], -1))


def build_lane_index(lane, lane_from, station, active) -> LaneIndex:
    """Sort the active vehicles of (C,) arrays into a LaneIndex."""
    cap = len(lane)
    rows = np.flatnonzero(active)
    changing = rows[lane_from[rows] >= 0]
    n = len(rows)
    e_row = np.concatenate([rows, changing])
    e_lane = np.concatenate([lane[rows], lane_from[changing]])
    key = e_lane * _KEY_M + station[e_row]
    order = np.argsort(key)
    s_key, s_row, s_lane = key[order], e_row[order], e_lane[order]
    same = s_lane[1:] == s_lane[:-1]
    ahead = np.empty(len(order), np.int64)
    behind = np.empty(len(order), np.int64)
    ahead[:-1] = np.where(same, s_row[1:], -1)
    ahead[-1:] = -1
    behind[1:] = np.where(same, s_row[:-1], -1)
    behind[:1] = -1
    leader = np.full(cap, -1, np.int64)
    follower = leader.copy()
    leader_from = leader.copy()
    # sorted position p holds entry order[p]; entries below n are the vehicles' own lanes
    primary = order < n
    own = s_row[primary]
    leader[own] = ahead[primary]
    follower[own] = behind[primary]
    if len(changing):
        second = ~primary
        leader_from[s_row[second]] = ahead[second]
    return LaneIndex(s_key, s_row, s_lane, leader, follower, leader_from, changing)


def idm_accel(speed, lead_speed, gap_m, v0_mps, time_gap_s, min_gap_m, max_accel_mps2,
              comf_decel_mps2) -> np.ndarray:
    """Intelligent Driver Model acceleration, m/s^2 (N,). gap_m inf means a free road."""
    s_star = min_gap_m + np.maximum(
        0.0, speed * (time_gap_s + (speed - lead_speed) * 0.5 / np.sqrt(max_accel_mps2
                                                                           * comf_decel_mps2)))
    ratio = speed / v0_mps
    ratio *= ratio
    inter = s_star / np.maximum(gap_m, MIN_GAP_EPS_M)
    return max_accel_mps2 * (1.0 - ratio * ratio - inter * inter)


def follow_accel(st, rows, lead, extra_gap_m: float = 0.0) -> np.ndarray:
    """IDM acceleration of vehicles `rows` behind vehicles `lead` (-1: free road), (N,).

    extra_gap_m is room to keep beyond the driver's own jam distance."""
    has = lead >= 0
    gap = np.where(has, st.station[lead] - st.station[rows]
                   - 0.5 * (st.length[lead] + st.length[rows]) - extra_gap_m, np.inf)
    v_lead = st.speed[lead]  # any value where there is no leader: the gap is infinite
    return idm_accel(st.speed[rows], v_lead, gap, st.v0_mps[rows], st.time_gap_s[rows],
                     st.min_gap_m[rows], st.max_accel_mps2[rows], st.comf_decel_mps2[rows])


def successor_leaders(st, road: Road, index: LaneIndex, max_hops: int = 2):
    """Leaders on the lanes ahead of vehicles that have none in their own lane: the first
    vehicle on the successor each one will take (by its turn), up to max_hops lanes ahead.

    Returns rows, leader rows and bumper gaps along the lanes (arc length), each (M,)."""
    rows = np.flatnonzero(st.active & (index.leader < 0) & (st.lane >= 0))
    rows = rows[np.diff(road.succ_start)[st.lane[rows]] > 0]
    out_rows, out_lead, out_gap = [], [], []
    cur = st.lane[rows]
    dist = road.length_m[cur] - st.s[rows]  # to the end of the own lane
    for _ in range(max_hops):
        if len(rows) == 0:
            break
        nxt = road.next_lane(cur, st.turn[rows])
        ok = nxt >= 0
        rows, cur, dist, nxt = rows[ok], cur[ok], dist[ok], nxt[ok]
        first, _ = index.neighbours(nxt, np.full(len(nxt), FIRST_STATION_M))
        found = first >= 0
        f = first[found]
        out_rows.append(rows[found])
        out_lead.append(f)
        out_gap.append(dist[found] + st.s[f] - 0.5 * (st.length[f] + st.length[rows[found]]))
        rows, cur, dist = rows[~found], nxt[~found], dist[~found] + road.length_m[nxt[~found]]
    if not out_rows:
        e = np.empty(0, np.int64)
        return e, e, np.empty(0)
    return np.concatenate(out_rows), np.concatenate(out_lead), np.concatenate(out_gap)


def longitudinal_accel(st, road: Road, index: LaneIndex, extra=None) -> np.ndarray:
    """(C,) IDM acceleration for every row: the most restrictive of the own-lane leader, the
    leader in a lane being left, the end of a lane that ends, the leader on the next lanes
    (roads with successors) and `extra` constraints (rows, bumper gap m, leader speed m/s),
    e.g. a junction's virtual obstacles. Clipped to the braking limit.

    All cases go through one vectorised IDM call (rows listed once per constraint)."""
    cap = st.capacity
    changing = index.changing
    if road.has_successors and len(changing):
        # urban roads (queues at junctions): a lane changer stops following the leader in the
        # lane it leaves once its body is laterally clear of it, so a queue there cannot
        # freeze it halfway
        lf = index.leader_from[changing]
        lf_c = np.maximum(lf, 0)
        clear = (road.width_m[st.lane_from[changing]] - np.abs(st.d[changing])
                 > 0.5 * (st.width[changing] + st.width[lf_c]) + 0.2)
        changing = changing[(lf >= 0) & ~clear]
    dead = np.empty(0, np.int64)
    if road.has_dead_end:
        dead = np.flatnonzero((road.end_kind[st.lane] == LANE_DEAD_END) & st.active
                              & (st.lane >= 0))
    rows = np.concatenate([np.arange(cap), changing, dead])
    lead = np.concatenate([index.leader, index.leader_from[changing],
                           np.full(len(dead), -1, np.int64)])
    has = lead >= 0
    gap = np.where(has, st.station[lead] - st.station[rows]
                   - 0.5 * (st.length[lead] + st.length[rows]), np.inf)
    v_lead = np.where(has, st.speed[lead], 0.0)
    if len(dead):  # the lane's end: a stopped obstacle of zero length
        gap[cap + len(changing):] = (road.station_range_m[st.lane[dead], 1] - st.station[dead]
                                     - 0.5 * st.length[dead])
    if road.has_successors or extra is not None:
        x_rows, x_gap, x_lead = [rows], [gap], [v_lead]
        if road.has_successors:
            r, lead_r, g = successor_leaders(st, road, index)
            x_rows.append(r)
            x_gap.append(g)
            x_lead.append(st.speed[lead_r])
        if extra is not None:
            x_rows.append(extra[0])
            x_gap.append(extra[1])
            x_lead.append(extra[2])
        rows, gap, v_lead = (np.concatenate(x) for x in (x_rows, x_gap, x_lead))
    acc_all = idm_accel(st.speed[rows], v_lead, gap, st.v0_mps[rows], st.time_gap_s[rows],
                        st.min_gap_m[rows], st.max_accel_mps2[rows], st.comf_decel_mps2[rows])
    acc = acc_all[:cap]
    if len(rows) > cap:
        np.minimum.at(acc, rows[cap:], acc_all[cap:])
    return np.minimum(np.maximum(acc, -MAX_DECEL_MPS2), st.max_accel_mps2)


def merge_cooperation(st, road: Road, index: LaneIndex, accel: np.ndarray,
                      params: BehaviorParams) -> np.ndarray:
    """(C,) accelerations adjusted around merges out of lanes that end (on-ramps).

    A merger near its merge zone also follows the vehicle clearly ahead of it in the lane it
    will enter (bumper gap > 0), braking no harder than the courtesy deceleration, so it
    matches that lane's speed and slots in behind; the vehicle behind it in that lane yields
    (treats the merger as its leader) when that needs no more than the courtesy deceleration.
    """
    if not road.has_dead_end:
        return accel
    lane_c = np.maximum(st.lane, 0)
    zone = (st.station >= road.change_from_m[lane_c] - params.merge_lookahead_m) & (
        st.station <= road.change_to_m[lane_c])
    rows = np.flatnonzero(st.active & (st.lane_from < 0)
                          & (road.end_kind[lane_c] == LANE_DEAD_END) & zone)
    if len(rows) == 0:
        return accel
    tgt = road.left[st.lane[rows]]
    rows, tgt = rows[tgt >= 0], tgt[tgt >= 0]
    lead, foll = index.neighbours(tgt, st.station[rows])
    accel = accel.copy()
    ahead = (lead >= 0) & (st.station[lead] - st.station[rows]
                           > 0.5 * (st.length[lead] + st.length[rows]))
    a_match = follow_accel(st, rows, np.where(ahead, lead, -1))
    accel[rows] = np.minimum(accel[rows], np.maximum(a_match, -params.courtesy_decel_mps2))
    # the closer a merger is to the end of its lane, the harder the vehicle behind yields
    lane_m = st.lane[rows]
    span = np.maximum(road.change_to_m[lane_m] - road.change_from_m[lane_m], 1.0)
    urgency = np.minimum(np.maximum(
        (st.station[rows] - road.change_from_m[lane_m]) / span, 0.0), 1.0)
    limit = params.courtesy_decel_mps2 + urgency * (
        params.merge_safe_decel_mps2 - params.courtesy_decel_mps2)
    has_f = foll >= 0
    f, merger = foll[has_f], rows[has_f]
    a_yield = follow_accel(st, f, merger, extra_gap_m=params.yield_room_m)
    gentle = a_yield >= -limit[has_f]
    np.minimum.at(accel, f[gentle], a_yield[gentle])
    return accel


def mobil_decisions(st, road: Road, index: LaneIndex, accel: np.ndarray, params: BehaviorParams,
                    dt_s: float):
    """Lane changes to start now. Returns (rows, target lanes), both (M,) int64.

    Drivers weigh a change every params.lane_change_check_s. A change needs a target lane
    present at the vehicle's station and for long enough to finish it, bumper gaps of at
    least the jam distance, and a new follower braking no harder than b_safe; it is made when
    the MOBIL incentive beats the driver's threshold. Of two drivers heading for the same gap,
    only the one further ahead goes.
    """
    none = np.empty(0, np.int64)
    every = max(1, int(round(params.lane_change_check_s / dt_s)))
    if st.step % every:
        return none, none
    lane_all = np.maximum(st.lane, 0)
    in_dead_end = road.end_kind[lane_all] == LANE_DEAD_END
    cand = st.active & (st.lane_from < 0)
    cand &= (st.speed >= params.min_lane_change_speed_mps) | in_dead_end
    rows = np.flatnonzero(cand)
    if len(rows) == 0:
        return none, none
    lane = st.lane[rows]
    station = st.station[rows]
    allowed = (station >= road.change_from_m[lane]) & (station <= road.change_to_m[lane])
    dead_now = in_dead_end[rows]
    length = st.length[rows]
    a_self = accel[rows]
    old_lead, old_foll = index.leader[rows], index.follower[rows]
    has_of = old_foll >= 0
    # the old follower, once we leave, follows our current leader
    a_of_gain = np.where(has_of, follow_accel(st, old_foll, old_lead) - accel[old_foll], 0.0)
    polite = np.where(dead_now, 0.0, st.politeness[rows])
    b_safe = np.where(dead_now, np.maximum(st.safe_decel_mps2[rows],
                                           params.merge_safe_decel_mps2),
                      st.safe_decel_mps2[rows])
    base = -a_self + np.where(dead_now, params.merge_bias_mps2, 0.0)
    finish_m = st.speed[rows] * st.lane_change_s[rows]

    best_gain = np.full(len(rows), -np.inf)
    best_lane = np.full(len(rows), -1, np.int64)
    # keep right unless overtaking: nobody moves left only to make room for the follower
    for side, bias, of_weight in ((road.left, -params.keep_right_bias_mps2, 0.0),
                                  (road.right, params.keep_right_bias_mps2, 1.0)):
        tgt = side[lane]
        ok = allowed & (tgt >= 0)
        ok &= (station >= road.station_range_m[tgt, 0] + length)
        ok &= station + finish_m <= road.station_range_m[tgt, 1]
        ok &= road.end_kind[tgt] != LANE_DEAD_END
        if not ok.any():
            continue
        lead, foll = index.neighbours(tgt, station)
        has_l, has_f = lead >= 0, foll >= 0
        gap_front = np.where(has_l, st.station[lead] - station
                             - 0.5 * (st.length[lead] + length), np.inf)
        gap_back = np.where(has_f, station - st.station[foll]
                            - 0.5 * (st.length[foll] + length), np.inf)
        # a forced merge out of an ending lane accepts any gap the IDM checks allow
        ok &= (gap_front > np.where(dead_now, params.forced_merge_gap_m, st.min_gap_m[rows]))
        ok &= gap_back > np.where(dead_now, params.forced_merge_gap_m, st.min_gap_m[foll])
        a_new = follow_accel(st, rows, lead)
        a_fn_new = follow_accel(st, foll, rows)
        ok &= ~has_f | (a_fn_new >= -b_safe)
        a_fn_gain = np.where(has_f, a_fn_new - accel[foll], 0.0)
        gain = a_new + base + polite * (a_fn_gain + of_weight * a_of_gain) + bias
        gain = np.where(ok & (gain > st.accel_threshold_mps2[rows]), gain, -np.inf)
        better = gain > best_gain
        best_gain = np.where(better, gain, best_gain)
        best_lane = np.where(better, tgt, best_lane)
    go = best_lane >= 0
    rows, tgt = rows[go], best_lane[go]
    if len(rows) > 1:
        # one change per target gap: drop a driver whose target-lane neighbour ahead also goes
        order = np.lexsort((-st.station[rows], tgt))
        rows, tgt = rows[order], tgt[order]
        reach = 2.0 * (st.length[rows] + st.speed[rows] * st.time_gap_s[rows])
        clash = np.zeros(len(rows), bool)
        clash[1:] = (tgt[1:] == tgt[:-1]) & (st.station[rows[:-1]] - st.station[rows[1:]]
                                              < reach[1:])
        rows, tgt = rows[~clash], tgt[~clash]
    return rows, tgt


def minimum_jerk(tau: np.ndarray):
    """Minimum-jerk blend 0 -> 1 over tau in [0, 1] and its derivative d/dtau."""
    tau = np.minimum(np.maximum(tau, 0.0), 1.0)
    t2 = tau * tau
    return t2 * tau * (10.0 - 15.0 * tau + 6.0 * t2), 30.0 * t2 * (1.0 - 2.0 * tau + t2)


def lateral_steer(st, params: BehaviorParams) -> np.ndarray:
    """(C,) tangent of the front steering angle, holding the lane centre or following the lane
    change profile (a minimum-jerk lateral offset over the change's duration).

    The desired approach angle to the lane is the desired lateral speed over the speed
    (small-angle form); the yaw rate follows the lane's curvature plus a correction towards
    that angle; the kinematic bicycle turns yaw rate into a steering angle.
    """
    d_err = -st.d  # lane keeping: towards the centre, no feed-forward
    changing = np.flatnonzero(st.lane_from >= 0)
    if len(changing):
        duration = np.maximum(st.lc_duration_s[changing], 1e-6)
        blend, dblend = minimum_jerk(st.lc_elapsed_s[changing] / duration)
        d0 = st.lc_d0_m[changing]
        d_err = d_err.copy()
        d_err[changing] += d0 * (1.0 - blend)
    v = np.maximum(st.speed, 1.0)
    lat_speed = params.lateral_gain_1ps * d_err
    if len(changing):
        lat_speed[changing] -= d0 * dblend / duration
    lim = params.max_lateral_angle_rad
    rel_des = np.minimum(np.maximum(lat_speed / v, -lim), lim)
    rel = st.heading - st.lane_heading
    if np.abs(rel).max(initial=0.0) > np.pi:
        rel = wrap_angle(rel)
    curv = st.lane_curvature
    wheelbase = wheelbase_m(st.length)
    tight = np.abs(curv) > TIGHT_CURVATURE_1PM
    if tight.any():  # tight turns (junctions): the body points out of the curve by the slip
        # angle, sin(beta) = l_r * curvature (the rear axle tracks inside), so that the centre
        # of gravity tracks the lane
        beta = np.arcsin(np.clip(REAR_AXLE_SHARE * wheelbase * curv, -0.9, 0.9))
        rel_des = rel_des - np.where(tight, beta, 0.0)
    yaw_rate = curv * v / np.maximum(1.0 - curv * st.d, 0.2) + params.heading_gain_1ps * (
        rel_des - rel)
    return yaw_rate * wheelbase / v


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi), rad."""
    return (a + np.pi) % (2.0 * np.pi) - np.pi
